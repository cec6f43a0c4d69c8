"""Checkpoints hold tensors and plain data only: they load without unpickling code, and code is refused."""

import os
import pickle

import pytest
import torch

import recbole_diffusion.trainer.checkpoint as ckpt
from recbole_diffusion.config.configurator import build_config
from recbole_diffusion.quick_start.quick_start import build_trainer, prepare_data, run

SETTINGS = {"hidden_size": 8, "inner_size": 16, "n_layers": 1, "n_heads": 1, "MAX_ITEM_LIST_LENGTH": 8,
            "train_batch_size": 64, "eval_batch_size": 128, "show_progress": False, "state": "WARNING",
            "epochs": 1, "diffusion_steps": 8}


class RunsAShellCommand:
    """Unpickling this calls ``os.system``: what a malicious .pth file does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """One tiny DiffuRec run: its config, data, trainer and checkpoint files."""
    folder = tmp_path_factory.mktemp("checkpoint")
    settings = dict(SETTINGS, data_path=data_root, checkpoint_dir=str(folder / "saved"), log_root=str(folder / "log"))
    result = run("DiffuRec", "successor", config_dict=settings)
    config, model_class = build_config("DiffuRec", "successor", config_dict=settings)
    data = prepare_data(config)
    return {"result": result, "config": config, "model_class": model_class, "data": data, "folder": folder}


def fresh_trainer(trained, **overrides):
    config = trained["config"]
    for key, value in overrides.items():
        config[key] = value
    return build_trainer(config, trained["model_class"], trained["data"].train)


def test_checkpoints_load_weights_only_and_evaluate_identically(trained):
    for path in (trained["result"]["saved_model_file"], trained["result"]["last_checkpoint_file"]):
        content = torch.load(path, weights_only=True)  # no allow-listed globals needed
        assert content["format"] == ckpt.FORMAT and content["config"]["model"] == "DiffuRec"
    metrics = fresh_trainer(trained).evaluate(trained["data"].test, load_best_model=True,
                                               model_file=trained["result"]["saved_model_file"])
    assert dict(metrics) == pytest.approx(trained["result"]["test_result"], abs=0)


@pytest.mark.parametrize("how", ["torch.save", "raw pickle"])
def test_a_file_whose_pickle_runs_code_is_refused_before_it_runs(trained, tmp_path, how):
    marker = tmp_path / "payload-ran"
    crafted = tmp_path / "crafted.pth"
    payload = {"state_dict": RunsAShellCommand(marker), "format": ckpt.FORMAT}
    if how == "torch.save":
        torch.save(payload, crafted)
    else:
        crafted.write_bytes(pickle.dumps(payload, protocol=4))
    trainer = fresh_trainer(trained)
    with pytest.raises(ckpt.UnsafeCheckpointError, match="refused: it is not a recbole_diffusion checkpoint"):
        trainer.evaluate(trained["data"].test, load_best_model=True, model_file=str(crafted))
    with pytest.raises(ckpt.UnsafeCheckpointError):
        trainer.resume_checkpoint(str(crafted))
    with pytest.raises(ckpt.UnsafeCheckpointError):
        ckpt.load_checkpoint(str(crafted))
    assert not marker.exists()


def test_recbole_format_is_refused_with_the_reason_and_read_when_trusted(trained, tmp_path):
    trainer = fresh_trainer(trained)
    recbole_file = tmp_path / "recbole.pth"
    torch.save({"config": trained["config"], "epoch": 0, "cur_step": 0, "best_valid_score": 0.1,
                "state_dict": trainer.model.state_dict(), "other_parameter": {}, "optimizer": {}},
               recbole_file, pickle_protocol=4)  # what RecBole 1.2.1's trainer writes
    with pytest.raises(ckpt.UnsafeCheckpointError, match="RecBole's own .pth files pickle Python objects.*"
                                                         "trust_pickled_checkpoint"):
        trainer.evaluate(trained["data"].test, load_best_model=True, model_file=str(recbole_file))
    trusting = fresh_trainer(trained, trust_pickled_checkpoint=True)
    assert trusting.evaluate(trained["data"].test, load_best_model=True, model_file=str(recbole_file))
    trained["config"]["trust_pickled_checkpoint"] = False


def test_a_checkpoint_of_other_data_or_another_model_is_refused(trained, tmp_path):
    trainer = fresh_trainer(trained)
    saved = ckpt.load_checkpoint(trained["result"]["saved_model_file"])
    other_data = tmp_path / "other-data.pth"
    ckpt.save_checkpoint(dict(saved, dataset_fingerprint=dict(saved["dataset_fingerprint"], n_items=3)), other_data)
    with pytest.raises(ValueError, match="trained on other data.*n_items"):
        trainer.evaluate(trained["data"].test, load_best_model=True, model_file=str(other_data))
    other_model = tmp_path / "other-model.pth"
    ckpt.save_checkpoint(dict(saved, config=dict(saved["config"], model="SASRec")), other_model)
    with pytest.raises(ValueError, match="holds a SASRec model, not DiffuRec"):
        trainer.evaluate(trained["data"].test, load_best_model=True, model_file=str(other_model))
    with pytest.raises(ValueError, match="resume needs a -last.pth checkpoint"):
        trainer.resume_checkpoint(trained["result"]["saved_model_file"])


def test_plain_config_and_hash():
    assert ckpt.plain({"a": [1, (2.5, None)], "b": torch.device("cpu")}) == {"a": [1, [2.5, None]], "b": "cpu"}
    import numpy as np

    assert type(ckpt.plain(np.float64(0.5))) is float
    base = {"model": "DiffuRec", "dataset": "x", "learning_rate": 0.001, "epochs": 10}
    assert ckpt.config_hash(base) == ckpt.config_hash(dict(base, epochs=50, show_progress=True))
    assert ckpt.config_hash(base) != ckpt.config_hash(dict(base, learning_rate=0.002))
    assert ckpt.differing_keys(base, dict(base, learning_rate=0.002, epochs=3)) == ["learning_rate"]


def test_an_interrupted_write_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    ckpt.save_checkpoint({"value": torch.ones(2)}, str(path))

    def killed_mid_write(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint({"value": torch.zeros(2)}, str(path))
    monkeypatch.undo()
    assert torch.equal(ckpt.load_checkpoint(str(path))["value"], torch.ones(2))


def test_model_state_keeps_integer_keys_and_tuples_through_a_safe_checkpoint(tmp_path):
    """RecBole's RippleNet keeps ``{user id: [(heads, relations, tails), ...]}`` in other_parameter and looks it up
    with numpy integers: keys written as text failed every evaluation after a reload (KeyError)."""
    import numpy as np

    state = {1: [(torch.arange(3), torch.ones(2), torch.zeros(1))], np.int64(2): [], "name": (1, "a", None)}
    path = str(tmp_path / "extra.pth")
    ckpt.save_checkpoint({"extra": ckpt.encode_state(state)}, path)
    loaded = ckpt.decode_state(torch.load(path, weights_only=True)["extra"], "cpu")
    assert set(loaded) == {1, 2, "name"} and type(next(iter(loaded))) is int
    assert loaded[np.int64(1)][0][0].tolist() == [0, 1, 2] and isinstance(loaded[1][0], tuple)
    assert loaded["name"] == (1, "a", None)


def test_a_key_added_since_is_read_with_the_value_every_older_checkpoint_had():
    """``text_whitening`` came after text tables: an older checkpoint's table is pca-whitened, so resuming it with
    zca is refused (its frozen table would stay pca while later checkpoints said zca); with pca it resumes."""
    older = {"model": "PreferDiff", "dataset": "d", "item_table": "text", "learning_rate": 0.001}
    refused, moved, added = ckpt.resume_differences(older, {**older, "text_whitening": "zca"})
    assert refused == ["text_whitening"] and not moved and not added
    assert ckpt.resume_differences(older, {**older, "text_whitening": "pca"}) == ([], [], [])
    assert ckpt.resume_differences(older, {**older, "lr_warmup_epochs": 0})[2] == ["lr_warmup_epochs"]
