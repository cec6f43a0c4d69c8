"""``holdout_items_ratio``: held-out items appear in no training target, training history or validation target;
the test keeps every user and reports the held-out targets' users apart."""

import os
import shutil

import numpy as np
import pytest
import torch

from recbole_diffusion.config.configurator import build_config
from recbole_diffusion.data.heldout_items import heldout_items
from recbole_diffusion.data.slices import ML100K_INTER
from recbole_diffusion.evaluation.metrics import heldout_test_result, per_user_metrics
from recbole_diffusion.quick_start.quick_start import prepare_data, run
from conftest import FAST, TINY


def prepared(data_root, model="SASRec", ratio=0.3, **overrides):
    settings = {**FAST, "data_path": data_root, "holdout_items_ratio": ratio, **overrides}
    config, _ = build_config(model, "ml-100k-small", config_dict=settings)
    return config, prepare_data(config, log_file=False)


def rows_of(loader):
    return loader._dataset.inter_feat


def test_the_draw_is_seeded_and_sized(data_root):
    config, data = prepared(data_root)
    first = heldout_items(config, data.dataset)
    assert np.array_equal(first, heldout_items(config, data.dataset)) and np.array_equal(first, data.heldout_items)
    with_interactions = np.unique(data.dataset.inter_feat[data.dataset.iid_field].numpy())
    assert len(first) == round(0.3 * len(with_interactions)) and np.isin(first, with_interactions).all()
    config["holdout_items_seed"] = 7
    assert not np.array_equal(first, heldout_items(config, data.dataset))


@pytest.mark.parametrize("model", ["SASRec", "PreferDiff"])
def test_heldout_items_are_in_no_training_target_history_or_validation_target(data_root, model):
    config, data = prepared(data_root, model=model)
    held = torch.as_tensor(data.heldout_items)
    train = rows_of(data.train)
    sequences, lengths = train["item_id_list"], train["item_length"]
    real = torch.arange(sequences.size(1))[None, :] < lengths[:, None]
    assert not torch.isin(train["item_id"], held).any()
    assert not torch.isin(sequences[real], held).any()
    assert (sequences[~real] == 0).all() and (train["timestamp_list"][~real] == 0).all() and (lengths > 0).all()
    assert not torch.isin(rows_of(data.valid)["item_id"], held).any()
    test_targets = rows_of(data.test)["item_id"]
    assert torch.isin(test_targets, held).any()  # the test keeps the held-out targets' users
    assert len(test_targets) == data.dataset.user_num - 1


def test_histories_keep_their_order_and_times_without_the_heldout_items(data_root):
    """Each user's last training row: its history is the original one (same target) less the held-out items, in
    order, with their times; checked on the rows whose original history held a held-out item."""
    _, full = prepared(data_root, ratio=0.0)
    config, data = prepared(data_root)
    held = set(data.heldout_items.tolist())
    original, kept = rows_of(full.train), rows_of(data.train)
    checked = 0
    for user in np.unique(kept["user_id"].numpy())[:40]:
        before = original[original["user_id"] == user]
        after = kept[kept["user_id"] == user]
        row = len(after) - 1
        source = [i for i, target in enumerate(before["item_id"].tolist()) if target == int(after["item_id"][row])][-1]
        length = int(before["item_length"][source])
        history = before["item_id_list"][source][:length].tolist()
        if not held & set(history):
            continue
        times = before["timestamp_list"][source][:length].tolist()
        expected = [(item, time) for item, time in zip(history, times) if item not in held]
        new_length = int(after["item_length"][row])
        assert list(zip(after["item_id_list"][row][:new_length].tolist(),
                        after["timestamp_list"][row][:new_length].tolist())) == expected
        checked += 1
    assert checked >= 10


def test_heldout_test_result_is_the_mean_over_the_heldout_targets_users():
    ranks, targets = np.array([0, 3, 20, 1, 7]), np.array([5, 6, 5, 9, 6])
    result = heldout_test_result(ranks, targets, np.array([5, 9]), [5, 10, 20])
    expected = per_user_metrics(np.array([0, 20, 1]))
    assert result["users"] == 3
    assert all(result[metric] == pytest.approx(values.mean()) for metric, values in expected.items())
    assert heldout_test_result(ranks, targets, np.array([42]), [10]) == {"users": 0, "hit@10": None, "ndcg@10": None}


def test_the_runner_reports_the_heldout_targets_users_apart(data_root, in_tmp_cwd):
    settings = {**TINY, "data_path": data_root, "epochs": 1, "holdout_items_ratio": 0.5}
    result = run("SASRec", "ml-100k-tiny", config_dict=settings, saved=False)
    heldout = result["test_result_heldout_items"]
    config, _ = build_config("SASRec", "ml-100k-tiny", config_dict=settings)
    data = prepare_data(config, log_file=False)
    expected_users = int(np.isin(rows_of(data.test)["item_id"].numpy(), data.heldout_items).sum())
    assert heldout["users"] == expected_users > 0
    assert set(heldout) == {"users"} | set(result["test_result"])
    assert "test_result_heldout_items" not in run("SASRec", "ml-100k-tiny", config_dict={**settings,
                                                  "holdout_items_ratio": 0.0}, saved=False)


@pytest.mark.parametrize("value", [1.0, -0.1, "half"])
def test_a_bad_ratio_is_refused(data_root, value):
    with pytest.raises(ValueError, match="holdout_items_ratio"):
        build_config("SASRec", "ml-100k-tiny", config_dict={"data_path": data_root, "holdout_items_ratio": value})


def test_eval_history_mask_all_still_masks_heldout_items_the_user_had(data_root):
    _, full = prepared(data_root, model="PreferDiff", ratio=0.0, eval_history_mask="all")
    _, held = prepared(data_root, model="PreferDiff", ratio=0.3, eval_history_mask="all")
    assert np.array_equal(full.test.history.indptr, held.test.history.indptr)
    assert np.array_equal(full.test.history.items, held.test.history.items)


def test_items_without_interactions_are_never_drawn(data_root, tmp_path):
    """Items known only from the ``.item`` file (loaded with it) are no part of the share: only rankable items are."""
    folder = tmp_path / "ml-100k-small"
    shutil.copytree(os.path.join(data_root, "ml-100k-small"), folder)
    shutil.copy(ML100K_INTER[:-len(".inter")] + ".item", folder / "ml-100k-small.item")
    config, data = prepared(str(tmp_path), load_col={"inter": ["user_id", "item_id", "timestamp"],
                                                     "item": ["item_id", "movie_title"]})
    with_interactions = np.unique(data.dataset.inter_feat[data.dataset.iid_field].numpy())
    assert data.dataset.item_num - 1 > len(with_interactions)  # the .item file adds items the slice never saw
    assert len(data.heldout_items) == round(0.3 * len(with_interactions))
    assert np.isin(data.heldout_items, with_interactions).all()


def test_holding_out_nearly_every_item_is_refused_with_a_reason(data_root):
    with pytest.raises(ValueError, match="hold out a smaller share"):
        prepared(data_root, ratio=0.999)


def test_a_model_with_its_own_training_loader_is_refused_naming_it(data_root):
    with pytest.raises(ValueError, match="UserDataLoader"):
        prepared(data_root, model="MultiVAE")
