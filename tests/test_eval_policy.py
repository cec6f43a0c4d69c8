"""eval_history_mask: one masking policy for sequential and general models (recbole_diffusion/eval_policy.py)."""

import numpy as np
import pytest
from recbole.data import create_dataset, data_preparation
from recbole.data.dataloader import FullSortEvalDataLoader

from conftest import TINY, write_inter
from recbole_diffusion.evaluation.history_mask import apply_eval_history_mask
from recbole_diffusion.config.configurator import build_config, resolve_model
from recbole_diffusion.quick_start.quick_start import build_trainer, fit_and_test, prepare_data, run

# RecBole's general diffusion models at tiny sizes; a large eval_batch_size puts every user in one batch (RecBole
# counts a general model's evaluation batch in users x items).
GENERAL = {"epochs": 1, "dims_dnn": [16], "embedding_size": 4, "in_dims": [16], "train_batch_size": 64,
           "eval_batch_size": 1 << 20, "show_progress": False, "state": "WARNING"}
REPEAT_USERS = 30


@pytest.fixture(autouse=True)
def _logs_in_tmp(in_tmp_cwd):
    """Every test writes RecBole's log (and any checkpoint) into its own temporary folder."""


@pytest.fixture(scope="module")
def repeats_root(tmp_path_factory):
    """``repeats``: 12 interactions per user; even users' test target and every third user's validation target
    are items they had before."""
    rows = []
    for user in range(1, REPEAT_USERS + 1):
        items = [(user * 7 + 3 * k) % 50 + 1 for k in range(12)]
        if user % 2 == 0:
            items[-1] = items[2]
        if user % 3 == 0:
            items[-2] = items[0]
        rows += [(user, item, stamp) for stamp, item in enumerate(items, 1)]
    return write_inter(tmp_path_factory.mktemp("repeats"), "repeats", rows)


def load(model, dataset, root, policy, settings=TINY):
    config, _ = build_config(model, dataset, config_dict={**settings, "data_path": root, "eval_history_mask": policy})
    return config, prepare_data(config)


def masked_and_targets(loader):
    """``(masked (user, item) pairs, target (user, item) pairs, whether any batch had a history_index)``."""
    masked, targets, any_history = set(), set(), False
    for interaction, history, positive_u, positive_i in loader:
        users = interaction["user_id"].numpy()
        targets |= set(zip(users[positive_u.numpy()].tolist(), positive_i.numpy().tolist()))
        if history is not None:
            any_history = True
            masked |= set(zip(users[history[0].numpy()].tolist(), history[1].numpy().tolist()))
    return masked, targets, any_history


@pytest.mark.parametrize("dataset", ["ml-100k-tiny", "repeats"])
def test_all_masks_a_sequential_model_as_recbole_masks_a_general_one(data_root, repeats_root, dataset):
    """Same users, same targets, the very same masked (user, item) pairs at validation and at test; a target the
    user had before stays unmasked in both (RecBole masks earlier items minus the phase's targets)."""
    root = data_root if dataset == "ml-100k-tiny" else repeats_root
    sequential_config, sequential = load("SASRec", dataset, root, "all")
    _, general = load("DiffRec", dataset, root, "auto", GENERAL)
    assert type(general.test) is FullSortEvalDataLoader  # RecBole's own mask for the general model
    for phase in ("valid", "test"):
        seq_masked, seq_targets, _ = masked_and_targets(getattr(sequential, phase))
        gen_masked, gen_targets, _ = masked_and_targets(getattr(general, phase))
        assert seq_targets == gen_targets and len(seq_targets) > 0
        assert seq_masked == gen_masked
        assert not seq_masked & seq_targets
        longest = max(np.bincount([user for user, _ in seq_masked]))
        if dataset == "ml-100k-tiny":  # the whole history, not the window the model reads
            assert longest > sequential_config["MAX_ITEM_LIST_LENGTH"]
    if dataset == "repeats":
        _, test_targets, _ = masked_and_targets(general.test)
        train_items = general.train._dataset.inter_feat
        earlier = set(zip(train_items["user_id"].numpy().tolist(), train_items["item_id"].numpy().tolist()))
        repeated = {pair for pair in test_targets if pair in earlier}
        assert len(repeated) >= REPEAT_USERS // 2  # the even users' test targets are earlier items, unmasked


def test_none_masks_no_model_and_auto_keeps_recbole_loaders(data_root):
    for model, settings in (("SASRec", TINY), ("DiffRec", GENERAL)):
        _, none = load(model, "ml-100k-tiny", data_root, "none", settings)
        assert not any(masked_and_targets(loader)[2] for loader in (none.valid, none.test))
        config, auto = load(model, "ml-100k-tiny", data_root, "auto", settings)
        assert type(auto.valid) is type(auto.test) is FullSortEvalDataLoader
        assert masked_and_targets(auto.test)[2] == (model == "DiffRec")
        same = apply_eval_history_mask(config, auto.train, auto.valid, auto.test)
        assert same[0] is auto.valid and same[1] is auto.test and same[2] is None


@pytest.mark.parametrize("model,settings", [("SASRec", TINY), ("DiffRec", GENERAL)])
def test_auto_evaluates_as_recbole_does(data_root, model, settings):
    """A fixed model scores the same on prepare_data's loaders (auto) as on RecBole's data_preparation's."""
    config, data = load(model, "ml-100k-tiny", data_root, "auto", settings)
    trainer = build_trainer(config, resolve_model(model)[0], data.train)
    ours = trainer.evaluate(data.test, load_best_model=False)
    _, _, recbole_test = data_preparation(config, create_dataset(config))
    assert trainer.evaluate(recbole_test, load_best_model=False) == ours


def test_all_only_raises_a_sequential_models_ranks_without_repeated_targets(data_root):
    """ml-100k has no repeated (user, item) pair, so masking other items can only move each target up."""
    ranks = {}
    for policy in ("auto", "all"):
        config, data = load("SASRec", "ml-100k-tiny", data_root, policy, {**TINY, "epochs": 1})
        trainer = build_trainer(config, resolve_model("SASRec")[0], data.train)
        result = fit_and_test(trainer, data, saved=False)
        position, _, users = trainer.collected_target_ranks()
        ranks[policy] = (dict(zip(users.tolist(), position.tolist())), result["test_result"])
    auto, masked = ranks["auto"][0], ranks["all"][0]
    assert set(auto) == set(masked)
    assert all(masked[user] <= auto[user] for user in auto)
    assert any(masked[user] < auto[user] for user in auto)
    assert all(ranks["all"][1][metric] >= ranks["auto"][1][metric] for metric in ranks["auto"][1])


@pytest.mark.parametrize("policy", ["auto", "all", "none"])
@pytest.mark.parametrize("model", ["DiffRec", "LDiffRec", "DiffRec-T"])
def test_general_diffusion_models_train_and_evaluate_with_each_policy(data_root, model, policy):
    result = run(model, "ml-100k-tiny", config_dict={**GENERAL, "data_path": data_root, "eval_history_mask": policy},
                 saved=False)
    assert all(0.0 <= value <= 1.0 for value in result["test_result"].values())
    assert result["epochs_trained"] == 1


@pytest.mark.parametrize("settings,message", [
    ({"eval_history_mask": "some"}, "must be one of"),
    ({"eval_history_mask": "all", "eval_args": {"mode": "uni100"}}, "needs a full ranking"),
])
def test_bad_policy_values_are_refused(data_root, settings, message):
    with pytest.raises(ValueError, match=f"eval_history_mask.*{message}"):
        build_config("SASRec", "ml-100k-tiny", config_dict={**TINY, "data_path": data_root, **settings})
