"""Exact resume from the "last" checkpoint: a killed or pre-empted run ends like an uninterrupted one."""

import json
import logging
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

import recbole_diffusion.trainer.checkpoint as ckpt
from recbole_diffusion.config.configurator import build_config
from recbole_diffusion.quick_start.quick_start import build_trainer, fit_and_test, prepare_data, resume_file, run
from recbole_diffusion.trainer import PluginTrainerMixin, TrainingPreempted

# Tiny sizes; the learning rate is high enough that the validation curve moves from epoch to epoch.
SETTINGS = {"hidden_size": 8, "inner_size": 16, "n_layers": 1, "n_heads": 1, "MAX_ITEM_LIST_LENGTH": 8,
            "train_batch_size": 64, "eval_batch_size": 128, "show_progress": False, "state": "WARNING",
            "epochs": 4, "eval_step": 1, "stopping_step": 10, "learning_rate": 0.01, "diffusion_steps": 8, "ddim_steps": 4,
            "reproducibility": True}

KILLED_RUN = """
import json, os, signal, sys, torch
torch.set_num_threads(1)
from recbole_diffusion.quick_start.quick_start import run
from recbole_diffusion.trainer import PluginTrainerMixin
kill_before = int(sys.argv[3])
write_last = PluginTrainerMixin._write_last
def write_then_die(self, state):
    write_last(self, state)
    if state is not None and state["next_epoch"] == kill_before:
        os.kill(os.getpid(), signal.SIGKILL)
PluginTrainerMixin._write_last = write_then_die
run(sys.argv[1], "successor", config_dict=json.loads(sys.argv[2]))
"""


@pytest.fixture
def one_thread():
    """One thread, as in the killed subprocess: float sums then add up in the same order everywhere."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def settings_for(data_root, tmp_path, **extra):
    return {**SETTINGS, "data_path": data_root, "checkpoint_dir": str(tmp_path / "saved"), **extra}


def comparable(result):
    keys = ("best_valid_score", "best_valid_result", "test_result", "best_epoch")
    return {key: result[key] for key in keys}


def run_with_trainer(model, settings):
    """``run`` (the runner's pipeline, which decides what to resume) that also hands back the trainer (for its
    validation curve)."""
    trainers = []

    def keep_trainer(config, trainer, data, result):
        trainers.append(trainer)
        return result

    return run(model, "successor", config_dict=settings, report=keep_trainer), trainers[0]


# BERT4Rec's data transform adds configuration keys; RecBole's RecVAE trainer holds two optimizers.
@pytest.mark.parametrize("model", ["DiffuRec", "BERT4Rec", "RecVAE"])
def test_run_killed_with_sigkill_resumes_to_the_same_curve_and_metrics(model, data_root, tmp_path, in_tmp_cwd,
                                                                       one_thread):
    settings = settings_for(data_root, tmp_path)
    reference, reference_trainer = run_with_trainer(model, settings)
    assert len({score for _, score in reference_trainer.validation_curve}) > 1  # the curve moves

    killed_dir = tmp_path / "killed"
    killed = settings_for(data_root, killed_dir)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.run([sys.executable, "-c", KILLED_RUN, model, json.dumps(killed), "2"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
    last_files = ckpt.find_last_checkpoints(killed["checkpoint_dir"], model, "successor")
    assert len(last_files) == 1 and ckpt.load_checkpoint(last_files[0])["next_epoch"] == 2

    resumed, resumed_trainer = run_with_trainer(model, dict(killed, resume=True))
    assert resumed["resumed_from"] == last_files[0]
    assert resumed_trainer.validation_curve == reference_trainer.validation_curve
    assert comparable(resumed) == comparable(reference)
    assert len(resumed_trainer.epoch_seconds) == SETTINGS["epochs"]  # records of epochs 0-1 came from the file


def test_sigterm_finishes_the_step_writes_the_epoch_and_resumes_exactly(data_root, tmp_path, in_tmp_cwd, one_thread,
                                                                         monkeypatch):
    settings = settings_for(data_root, tmp_path, epochs=3)
    reference, reference_trainer = run_with_trainer("SASRec", settings)

    interrupted = settings_for(data_root, tmp_path / "interrupted", epochs=3, checkpoint_every=2)
    original_stoppable = PluginTrainerMixin._stoppable
    steps = []

    def terminate_in_epoch_one(self, loss_func):
        step = original_stoppable(self, loss_func)

        def counted(interaction):
            steps.append(self._epoch)
            loss = step(interaction)
            if self._epoch == 1 and steps.count(1) == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # arrives during the second step of epoch 1
            return loss

        return counted

    monkeypatch.setattr(PluginTrainerMixin, "_stoppable", terminate_in_epoch_one)
    with pytest.raises(TrainingPreempted, match="--resume"):
        run("SASRec", "successor", config_dict=interrupted)
    assert steps.count(1) == 3  # the step in progress finished; the next one stopped before computing a loss
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    monkeypatch.setattr(PluginTrainerMixin, "_stoppable", original_stoppable)
    saved = ckpt.load_checkpoint(ckpt.find_last_checkpoints(interrupted["checkpoint_dir"], "SASRec",
                                                            "successor")[0])
    assert saved["next_epoch"] == 1 and not saved["finished"]  # epoch 1's start, though checkpoint_every is 2

    resumed, resumed_trainer = run_with_trainer("SASRec", dict(interrupted, resume=True))
    assert resumed_trainer.validation_curve == reference_trainer.validation_curve
    assert comparable(resumed) == comparable(reference)


def test_resuming_a_finished_run_only_evaluates(data_root, tmp_path, in_tmp_cwd):
    settings = settings_for(data_root, tmp_path, epochs=2)
    first = run("SASRec", "successor", config_dict=settings)
    saved = ckpt.load_checkpoint(first["last_checkpoint_file"])
    assert saved["finished"] and saved["next_epoch"] == 2
    again, trainer = run_with_trainer("SASRec", dict(settings, resume=True))
    assert trainer.epoch_seconds == saved["records"]["epoch_seconds"]  # no epoch was trained again
    assert comparable(again) == comparable(first)


# Per model: RecBole's DiffRec keeps 2 losses per step; SeqDiffRec's one-step sampler needs x_{T-1} to be noise at
# T = 8 (cosine), and its loss-aware sampler leaves the uniform warm-up within the first epoch.
EXTEND_SETTINGS = {"DiffRec": {"history_num_per_term": 2}, "SeqDiffRec": {"beta_schedule": "cosine"}}


@pytest.mark.parametrize("model", ["DiffuRec", "DiffuRecSys", "DreamRec", "PreferDiff", "SeqDiffRec", "DiffRec"])
def test_every_model_extends_a_finished_run_exactly(model, data_root, tmp_path, in_tmp_cwd, one_thread):
    """Raising ``epochs`` and resuming continues a finished run as if it had been asked for more epochs.

    RecBole's DiffRec keeps its loss history per step outside its ``state_dict``: it is carried over too.
    SeqDiffRec keeps its loss-aware sampler's history in buffers of its ``state_dict``.
    """
    def settings(folder, **extra):
        return {**SETTINGS, "data_path": data_root, "checkpoint_dir": str(tmp_path / folder), "epochs": 3,
                "train_batch_size": 256, **EXTEND_SETTINGS.get(model, {}), **extra}

    def trainer_and_data(**extra):  # fresh data each time: the training loader's shuffle generator is state too
        config, model_class = build_config(model, "successor", config_dict=settings(**extra))
        data = prepare_data(config)
        return build_trainer(config, model_class, data.train), data, resume_file(config)

    reference, data, _ = trainer_and_data(folder="reference")
    reference_result = fit_and_test(reference, data)
    short, data, _ = trainer_and_data(folder="extended", epochs=1)
    fit_and_test(short, data)
    extended, data, resume_from = trainer_and_data(folder="extended", resume=True)
    assert resume_from is not None
    extended_result = fit_and_test(extended, data, resume_from=resume_from)
    assert extended.validation_curve == reference.validation_curve
    assert comparable(extended_result) == comparable(reference_result)
    if model == "DiffRec":
        assert int(extended.model.Lt_count.sum()) > 0 and torch.equal(extended.model.Lt_history,
                                                                       reference.model.Lt_history)
    if model == "SeqDiffRec":
        sampler = extended.model.timestep_sampler
        assert int(short.model.timestep_sampler.loss_counts.min()) >= sampler.history  # warm when it was saved
        assert torch.equal(sampler.loss_history, reference.model.timestep_sampler.loss_history)


def test_resume_for_another_configuration_starts_anew_naming_the_keys(data_root, tmp_path, in_tmp_cwd, caplog):
    """A job script can always pass --resume: with only another configuration's checkpoint in saved/ the run starts
    at epoch 0 (never continuing the other experiment), says which keys differ, and leaves that checkpoint alone."""
    settings = settings_for(data_root, tmp_path, epochs=1)
    first = run("SASRec", "successor", config_dict=settings)["last_checkpoint_file"]
    written = os.stat(first).st_mtime_ns
    changed = build_config("SASRec", "successor", config_dict=dict(settings, resume=True, learning_rate=0.002))[0]
    assert resume_file(changed) is None
    with caplog.at_level(logging.INFO):
        result = run("SASRec", "successor", config_dict=dict(settings, resume=True, learning_rate=0.002))
    assert result["resumed_from"] is None and result["last_checkpoint_file"] != first
    records = [record for record in caplog.records if "another configuration" in record.getMessage()]
    assert [record.levelno for record in records] == [logging.WARNING]
    notes = [record.getMessage() for record in records]
    assert re.search(r"training starts at epoch 0.*learning_rate \(0.01 -> 0.002\)", notes[0]), notes
    assert first in notes[0] and os.stat(first).st_mtime_ns == written
    allowed = build_config("SASRec", "successor",
                           config_dict=dict(settings, resume=True, epochs=3, stopping_step=2, eval_batch_size=64))[0]
    assert resume_file(allowed) == first


def test_resume_without_a_checkpoint_starts_anew_and_the_hash_is_stable(data_root, tmp_path, in_tmp_cwd):
    settings = settings_for(data_root, tmp_path, epochs=1, resume=True)
    config, _ = build_config("SASRec", "successor", config_dict=settings)
    assert resume_file(config) is None
    result, trainer = run_with_trainer("SASRec", settings)
    # The hash of the configuration as the user gave it names the file the trainer wrote (SASRec's data and model
    # add no keys).
    assert os.path.basename(result["last_checkpoint_file"]) == \
        f"SASRec-successor-{ckpt.config_hash(ckpt.plain_config(config))}-last.pth"
    assert trainer.config_hash == ckpt.config_hash(ckpt.plain_config(config))


def test_checkpoint_every_and_atomic_write(data_root, tmp_path, in_tmp_cwd, monkeypatch):
    written = []
    original = ckpt.save_checkpoint

    def record(payload, path):
        written.append((payload.get("kind"), payload.get("next_epoch"), payload.get("finished")))
        original(payload, path)
        assert not [name for name in os.listdir(os.path.dirname(path)) if ".tmp-" in name]

    monkeypatch.setattr(ckpt, "save_checkpoint", record)
    run("SASRec", "successor", config_dict=settings_for(data_root, tmp_path, epochs=5, checkpoint_every=2,
                                                            eval_step=5))
    assert [entry for entry in written if entry[0] == "last"] == [("last", 2, False), ("last", 4, False),
                                                                   ("last", 5, True)]


def test_model_state_outside_the_state_dict_is_restored():
    class WithHistory(torch.nn.Module):
        other_parameter_name = ["cache"]

        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)
            self.loss_history = torch.zeros(3)
            self.cache = {"matrix": __import__("numpy").arange(4.0)}

        def other_parameter(self):
            return {name: getattr(self, name) for name in self.other_parameter_name}

        def load_other_parameter(self, values):
            for name, value in (values or {}).items():
                setattr(self, name, value)

    source, target = WithHistory(), WithHistory()
    source.loss_history += 5
    source.cache["matrix"][0] = 9
    extra = ckpt.model_extra_state(source)
    ckpt.load_model_extra_state(target, extra, "cpu")
    assert torch.equal(target.loss_history, torch.full((3,), 5.0))
    assert target.cache["matrix"].tolist() == [9.0, 1.0, 2.0, 3.0]


def test_compare_continues_a_run_killed_mid_training(data_root, tmp_path, in_tmp_cwd, one_thread, monkeypatch):
    """A comparison rerun after its run died at epoch 2 trains epochs 2-3 only, to the uninterrupted result."""
    from recbole_diffusion.compare import run_comparison

    overrides = {key: str(value) for key, value in {**SETTINGS, "data_path": data_root}.items()}
    reference = run_comparison(["SASRec"], "successor", [7], str(tmp_path / "reference"), overrides=overrides,
                               isolate=False)[0]
    write_last = PluginTrainerMixin._write_last

    def write_then_die(self, state):
        write_last(self, state)
        if state is not None and state["next_epoch"] == 2:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(PluginTrainerMixin, "_write_last", write_then_die)
    output = str(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        run_comparison(["SASRec"], "successor", [7], output, overrides=overrides, isolate=False)
    monkeypatch.setattr(PluginTrainerMixin, "_write_last", write_last)
    resumed = run_comparison(["SASRec"], "successor", [7], output, overrides=overrides, isolate=False)[0]
    assert resumed["resumed_from"] and resumed["resumed_from"].endswith("-last.pth")
    assert resumed["validation_curve"] == reference["validation_curve"]
    assert resumed["test"] == reference["test"] and resumed["epochs"] == SETTINGS["epochs"]
    assert not os.listdir(os.path.join(output, "work", "SASRec-seed7", "checkpoints"))  # both files removed


def test_a_resume_on_appended_interactions_is_refused_naming_the_file(tmp_path, in_tmp_cwd):
    """Rows appended for known users and items move their targets: the run must not continue on them."""
    from conftest import successor_rows, write_inter

    rows = successor_rows()
    root = write_inter(tmp_path / "data", "successor", rows)
    settings = settings_for(root, tmp_path, epochs=2)
    run("SASRec", "successor", config_dict=settings)
    write_inter(tmp_path / "data", "successor", rows + [(rows[0][0], rows[1][1], 99)])
    with pytest.raises(ValueError, match="interactions were added") as refused:
        run("SASRec", "successor", config_dict=dict(settings, resume=True, epochs=3))
    assert os.path.join(root, "successor", "successor.inter") in str(refused.value)


FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "before_issue_21")
# The settings tests/fixtures/before_issue_21 was trained with (commit a2a800e, killed after epoch 1 of 4).
FIXTURE_SETTINGS = {"hidden_size": 8, "inner_size": 16, "n_layers": 1, "n_heads": 1, "MAX_ITEM_LIST_LENGTH": 6,
                    "train_batch_size": 32, "eval_batch_size": 64, "show_progress": False, "state": "WARNING",
                    "epochs": 4, "eval_step": 1, "stopping_step": 10, "learning_rate": 0.01, "diffusion_steps": 4,
                    "reproducibility": True}


def test_a_checkpoint_written_before_issue_21_resumes_on_another_path_and_loads(tmp_path, in_tmp_cwd, caplog):
    """Another data folder and another checkpoint folder (a job re-queued elsewhere), and a key the package gained
    since it was written (here batch_by_length, taken out of the copy as if it were older still): the run
    continues from its epoch, says why, and its best checkpoint still loads."""
    import shutil

    import recbole_diffusion

    checkpoints = tmp_path / "elsewhere"
    shutil.copytree(os.path.join(FIXTURE, "checkpoints"), checkpoints)
    last = str(checkpoints / "DiffuRec-successor-14fa391ffc4d-last.pth")
    older = ckpt.load_checkpoint(last)
    del older["config"]["batch_by_length"]
    ckpt.save_checkpoint(older, last)  # its file name keeps the hash it was written with
    settings = {**FIXTURE_SETTINGS, "data_path": os.path.join(FIXTURE, "data"), "checkpoint_dir": str(checkpoints),
                "resume": True}
    config, _ = build_config("DiffuRec", "successor", config_dict=settings)
    assert resume_file(config) == last
    result, trainer = run_with_trainer("DiffuRec", settings)
    assert trainer.start_epoch == 2 and len(trainer.epoch_seconds) == 4 and trainer.finished
    assert result["last_checkpoint_file"] == last and os.path.dirname(result["saved_model_file"]) == str(checkpoints)
    note = " ".join(record.getMessage() for record in caplog.records if record.getMessage().startswith("resume:"))
    assert "continues elsewhere" in note and "checkpoint_dir" in note and "data_path" in note
    assert "written before recbole_diffusion had batch_by_length" in note
    best = os.path.join(FIXTURE, "checkpoints", "DiffuRec-Dec-06-2026_10-30-23.pth")  # as written
    loaded, model, *_ = recbole_diffusion.load_data_and_model(best, data_path=os.path.join(FIXTURE, "data"))
    assert loaded["model"] == "DiffuRec"
