"""Paying only for real tokens: evaluation over length-ordered, cut batches gives every user the scores of the
padded evaluation; ``batch_by_length`` batches cover every row once, by length, resumably; training without the key
is RecBole's; the state kept for a pre-emption lives in host memory only while it is needed."""

import numpy as np
import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.data.dataloader import FullSortEvalDataLoader, TrainDataLoader
from recbole.utils import init_seed

from recbole_diffusion.config.configurator import build_config
from recbole_diffusion.data.dataloader import FullSortEvalLoader, LengthBatchedTrainLoader
from recbole_diffusion.quick_start.quick_start import build_trainer, fit_and_test, prepare_data, run
from recbole_diffusion.trainer.trainer import PluginTrainerMixin
from conftest import TINY, write_inter

DATASET = "varied"
SETTINGS = {**TINY, "MAX_ITEM_LIST_LENGTH": 12, "epochs": 1, "eval_step": 1, "diffusion_steps": 8, "ddim_steps": 3}
SAMPLERS = {"default": {}, "ddpm strided": {"sampler": "ddpm", "ddpm_steps": 3}, "ddim": {"sampler": "ddim"},
            "one step": {"sampler": "one_step", "beta_schedule": "cosine"},
            "ensemble": {"sampler": "ddim", "n_ensemble": 2}}
MODELS = ["DiffuRec", "DiffuRecSys", "DreamRec", "PreferDiff", "SeqDiffRec"]


@pytest.fixture(scope="module")
def varied_root(tmp_path_factory):
    """120 users with 4 to 30 interactions over 50 items: histories of every length up to L = 12 and beyond."""
    rng = np.random.default_rng(7)
    rows = [(user, int(rng.integers(1, 51)), position) for user in range(1, 121)
            for position in range(1, int(rng.integers(4, 31)) + 1)]
    return write_inter(tmp_path_factory.mktemp("varied"), DATASET, rows)


def scores_by_user(model, loader, config):
    """``{user id: scores}`` of every evaluation row of ``loader``."""
    scores = {}
    with torch.no_grad():
        for interaction, *_ in loader:
            batch = model.full_sort_predict(interaction)
            for user, row in zip(interaction[config["USER_ID_FIELD"]].tolist(), batch):
                scores[user] = row
    return scores


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("model_name", MODELS)
def test_every_user_scores_the_same_over_real_tokens_in_any_batch_size(model_name, sampler, varied_root):
    settings = {**SETTINGS, "data_path": varied_root, **SAMPLERS[sampler]}
    if model_name == "SeqDiffRec" and sampler != "one step":
        settings["beta_schedule"] = "cosine"
    config, model_class = build_config(model_name, DATASET, config_dict={**settings, "eval_batch_size": 7})
    data = prepare_data(config)
    assert isinstance(data.test, FullSortEvalLoader) and data.test.real_tokens
    lengths = [int(interaction[config["ITEM_LIST_LENGTH_FIELD"]].max()) for interaction, *_ in data.test]
    assert lengths == sorted(lengths, reverse=True) and lengths[-1] < config["MAX_ITEM_LIST_LENGTH"]
    assert all(interaction["item_id_list"].size(1) == int(interaction["item_length"].max())
               for interaction, *_ in data.test)
    model = build_trainer(config, model_class, data.train).model.eval()
    cut = scores_by_user(model, data.test, config)
    config["eval_batch_size"] = 64
    padded = scores_by_user(model, FullSortEvalDataLoader(config, data.test._dataset, data.test._sampler), config)
    assert set(cut) == set(padded) and len(cut) == 120
    for user in padded:  # float round-off only: the same noise, the same network, fewer padded columns
        torch.testing.assert_close(cut[user], padded[user], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model_name", ["DiffuRec", "PreferDiff"])
def test_a_trained_checkpoint_gives_the_metrics_of_the_padded_evaluation(model_name, varied_root, tmp_path):
    settings = {**SETTINGS, "data_path": varied_root, "checkpoint_dir": str(tmp_path), "epochs": 2,
                "learning_rate": 0.01}
    config, model_class = build_config(model_name, DATASET, config_dict=settings)
    data = prepare_data(config)
    trainer = build_trainer(config, model_class, data.train)
    result = fit_and_test(trainer, data)
    padded = FullSortEvalDataLoader(config, data.test._dataset, data.test._sampler)
    assert dict(trainer.evaluate(padded, load_best_model=True)) == result["test_result"]


def test_training_without_the_key_is_recboles(varied_root, tmp_path):
    """``batch_by_length: False``: the training loader is RecBole's own, and an epoch through the pipeline leaves
    the very weights an epoch through the loader RecBole's ``data_preparation`` builds leaves."""
    settings = {**SETTINGS, "data_path": varied_root, "checkpoint_dir": str(tmp_path)}
    config, model_class = build_config("DiffuRec", DATASET, config_dict=settings)
    data = prepare_data(config)
    assert type(data.train) is TrainDataLoader
    weights = []
    for train_data in (data.train, None):
        if train_data is None:
            init_seed(config["seed"], config["reproducibility"])
            train_data = data_preparation(config, create_dataset(config))[0]
        trainer = build_trainer(config, model_class, train_data)
        trainer.fit(train_data, saved=False)
        weights.append(trainer.model.state_dict())
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def length_batched(varied_root, **extra):
    config, _ = build_config("DiffuRec", DATASET, config_dict={**SETTINGS, "data_path": varied_root,
                                                              "batch_by_length": True, "train_batch_size": 16,
                                                              **extra})
    loader = prepare_data(config).train
    assert isinstance(loader, LengthBatchedTrainLoader)
    return config, loader


def test_batches_by_length_cover_every_row_once_and_are_cut(varied_root):
    config, loader = length_batched(varied_root)
    rows, spreads = [], []
    for batch in loader:
        lengths = batch["item_length"]
        assert batch["item_id_list"].size(1) == int(lengths.max())
        rows += list(zip(batch["user_id"].tolist(), batch["item_id"].tolist(), lengths.tolist()))
        spreads.append(int(lengths.max() - lengths.min()))
    everything = loader._dataset.inter_feat
    assert sorted(rows) == sorted(zip(everything["user_id"].tolist(), everything["item_id"].tolist(),
                                      everything["item_length"].tolist()))
    assert len(rows) == loader.sample_size and len(spreads) == len(loader)
    recbole_batches = TrainDataLoader(config, loader._dataset, loader._sampler, shuffle=True)
    recbole_spreads = [int(b["item_length"].max() - b["item_length"].min()) for b in recbole_batches]
    assert np.mean(spreads) < np.mean(recbole_spreads) / 3


def test_batches_by_length_change_every_epoch_and_resume_from_the_generator(varied_root):
    _, loader = length_batched(varied_root)
    state = loader.generator.get_state()
    first = [batch["user_id"].tolist() for batch in loader]
    second = [batch["user_id"].tolist() for batch in loader]
    loader.generator.set_state(state)
    assert [batch["user_id"].tolist() for batch in loader] == first and second != first


def test_batches_by_length_split_across_processes(varied_root, monkeypatch):
    """Under DDP every process takes every world_size-th row of each global batch; a global batch smaller than
    the number of processes is padded with its own rows; every process has as many batches."""
    _, loader = length_batched(varied_root)
    state = loader.generator.get_state()
    global_batches = [batch.tolist() for batch in loader.epoch_batches()]
    loader.config = {**{key: loader.config[key] for key in ("seed",)}, "single_spec": False, "world_size": 3}
    parts = []
    for rank in range(3):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda rank=rank: rank)
        loader.generator.set_state(state)
        parts.append([batch.tolist() for batch in loader.epoch_batches()])
    assert all(len(part) == len(global_batches) for part in parts)
    for index, batch in enumerate(global_batches):
        shares = [part[index] for part in parts]
        assert all(shares), "every process gets rows of every batch"
        assert sorted(sum(shares, [])) == sorted(batch) or len(batch) < 3


def test_a_killed_length_batched_run_resumes_exactly(data_root, tmp_path, in_tmp_cwd):
    from test_resume import KILLED_RUN, comparable, run_with_trainer, settings_for
    import json
    import os
    import signal
    import subprocess
    import sys

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        settings = settings_for(data_root, tmp_path, batch_by_length=True)
        reference, reference_trainer = run_with_trainer("DiffuRec", settings)
        killed = settings_for(data_root, tmp_path / "killed", batch_by_length=True)
        process = subprocess.run([sys.executable, "-c", KILLED_RUN, "DiffuRec", json.dumps(killed), "2"],
                                 cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                                 text=True, timeout=600)
        assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
        resumed, resumed_trainer = run_with_trainer("DiffuRec", dict(killed, resume=True))
    finally:
        torch.set_num_threads(threads)
    assert resumed_trainer.validation_curve == reference_trainer.validation_curve
    assert comparable(resumed) == comparable(reference)


@pytest.mark.parametrize("every, kept", [(1, [False, False, False]), (2, [False, True, False]),
                                         (0, [False, True, True])])
def test_the_preemption_state_is_kept_in_host_memory_only_when_not_on_disk(every, kept, varied_root, tmp_path,
                                                                           monkeypatch):
    """Epoch 0 of a fresh run keeps nothing (stopped, it starts anew); an epoch whose start is written as the
    "last" checkpoint keeps nothing; any other epoch keeps a host copy; nothing is kept after training."""
    seen = []
    original = PluginTrainerMixin._stoppable

    def record(self, loss_func):
        state = self._epoch_start_state
        seen.append(state is not None)
        if state is not None:
            tensors = [state["state_dict"][key] for key in state["state_dict"]]
            assert all(tensor.device.type == "cpu" for tensor in tensors)
        return original(self, loss_func)

    monkeypatch.setattr(PluginTrainerMixin, "_stoppable", record)
    config, model_class = build_config("DiffuRec", DATASET, config_dict={
        **SETTINGS, "data_path": varied_root, "epochs": 3, "checkpoint_every": every,
        "checkpoint_dir": str(tmp_path)})
    data = prepare_data(config)
    trainer = build_trainer(config, model_class, data.train)
    fit_and_test(trainer, data)
    assert seen == kept and trainer._epoch_start_state is None


def test_the_runner_reports_its_peak_memory(varied_root, tmp_path):
    result = run("DiffuRec", DATASET, config_dict={**SETTINGS, "data_path": varied_root,
                                                   "checkpoint_dir": str(tmp_path)})
    assert result["peak_memory_mb"] > 50 and result["peak_memory_kind"] == "process peak RSS"
