"""RecBole's distributed mode through the runner: two CPU processes with gloo on a slice of ml-100k with an odd
number of users (41), so RecBole's sampler pads one process with a repeated user."""

import glob
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import recbole_diffusion
from recbole_diffusion.quick_start import launcher
from recbole_diffusion.utils import collectives
from recbole_diffusion.data.slices import ML100K_INTER, write_user_slice
from recbole_diffusion.config.configurator import build_config
from recbole_diffusion.quick_start.quick_start import build_trainer, prepare_data, run_rank
from recbole_diffusion.runner import main

DATASET = "ml41"
USERS = 41
TINY = {"hidden_size": 8, "inner_size": 16, "n_layers": 1, "n_heads": 1, "MAX_ITEM_LIST_LENGTH": 6, "epochs": 1,
        "train_batch_size": 64, "eval_batch_size": 16, "diffusion_steps": 8, "ddim_steps": 4,
        "show_progress": False, "state": "WARNING", "checkpoint_every": 0}
RUNNER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "run_recbole_diffusion.py")


@pytest.fixture(scope="module")
def slice_root(tmp_path_factory):
    return write_user_slice(ML100K_INTER, DATASET, USERS, str(tmp_path_factory.mktemp("distributed-data")))


def _launch_keys():
    return {"nproc": 2, "world_size": 2, "offset": 0, "ip": "localhost", "port": launcher.free_port()}


def _train_and_report(local_rank, models, settings):
    """One process: train each model through the runner's pipeline, then gather what the test compares."""
    reports = {}
    for model in models:
        trainer, result = run_rank(local_rank, model, DATASET, None, settings)
        parameters = torch.cat([p.detach().flatten() for p in trainer.model.parameters()]).numpy()
        every_rank = collectives.all_gather_object(parameters)
        ranks, _, users = trainer.collected_target_ranks()
        reports[model] = {
            "result": result, "parameters_equal": all(np.array_equal(every_rank[0], p) for p in every_rank),
            "users": users.tolist(), "ranks": ranks.tolist(), "train_loss": trainer.train_loss_dict[0],
            "local_samples": collectives.all_gather_object(len(trainer.eval_sample_indices))}
    return reports


def test_models_on_two_processes_count_every_user_once_and_match_one_process(slice_root, in_tmp_cwd):
    settings = {**TINY, "data_path": slice_root, **_launch_keys()}
    models = ("DiffuRec", "PreferDiff", "SASRec")
    reports = launcher.spawn(_train_and_report, 2, (models, settings))
    for model in models:
        report, result = reports[model], reports[model]["result"]
        assert report["parameters_equal"], model
        assert report["local_samples"] == [21, 21]  # RecBole's sampler padded the second process with a user
        assert len(report["users"]) == USERS and len(set(report["users"])) == USERS
        assert set(result["test_result"]) == {f"{name}@{k}" for name in ("hit", "ndcg") for k in (5, 10, 20)}
    assert len(glob.glob("saved/*.pth")) == len(models)
    assert not glob.glob("log_tensorboard/model-*")  # rank 1 (no log file to name it after) opened no folder

    for model in ("DiffuRec", "PreferDiff"):
        report = reports[model]
        config, model_class = build_config(model, DATASET, config_dict={**TINY, "data_path": slice_root})
        data = prepare_data(config)
        trainer = build_trainer(config, model_class, data.train)
        trainer.collect_target_ranks = True
        single = trainer.evaluate(data.test, load_best_model=True, model_file=report["result"]["saved_model_file"])
        assert {key: float(value) for key, value in single.items()} == report["result"]["test_result"]
        ranks, _, users = trainer.collected_target_ranks()
        assert dict(zip(users.tolist(), ranks.tolist())) == dict(zip(report["users"], report["ranks"]))
        if model == "DiffuRec":  # the same global batch in one process: a loss alike
            trainer.fit(data.train, data.valid, saved=False)
            assert 0.5 < trainer.train_loss_dict[0] / report["train_loss"] < 2


def test_the_command_line_returns_rank_0s_result_with_one_log_and_one_checkpoint(slice_root, in_tmp_cwd):
    done = subprocess.run([sys.executable, RUNNER, "--model=PreferDiff", f"--dataset={DATASET}",
                           f"--data_path={slice_root}", "--nproc=2",
                           *(f"--{key}={value}" for key, value in TINY.items())],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    checkpoints, logs = glob.glob("saved/*.pth"), glob.glob("log/PreferDiff/*.log")
    assert len(checkpoints) == 1 and len(logs) == 1
    assert "Test metrics" in done.stdout and os.path.basename(checkpoints[0]) in done.stdout
    curves = EventAccumulator(os.path.dirname(glob.glob("log_tensorboard/*/events.out.tfevents.*")[0])).Reload()
    assert {"Loss/Train", "Vaild_score"} <= set(curves.Tags()["scalars"])  # rank 0's curves reached the disk


def _worker_pids():
    with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children", encoding="utf-8") as handle:  # the main thread's
        children = [int(child) for child in handle.read().split()]
    workers = []
    for child in children:
        with open(f"/proc/{child}/cmdline", "rb") as handle:
            if b"spawn_main" in handle.read():
                workers.append(child)
    return sorted(workers)


def test_a_killed_worker_ends_the_run_with_a_message(slice_root, in_tmp_cwd, capsys):
    """SIGKILL to one process while both train: the runner stops the other and exits with status 1."""
    def kill_a_worker_once_training():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if glob.glob("saved/*-last.pth") and len(_worker_pids()) == 2:
                os.kill(_worker_pids()[1], signal.SIGKILL)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_a_worker_once_training)
    argv = ["--model=SASRec", f"--dataset={DATASET}", f"--data_path={slice_root}", "--nproc=2",
            *(f"--{key}={value}" for key, value in {**TINY, "epochs": 10000, "checkpoint_every": 1}.items())]
    start = time.monotonic()
    killer.start()
    status = main(argv)
    killer.join()
    assert status == 1 and time.monotonic() - start < 150
    message = capsys.readouterr().err
    assert "rank 1: killed by signal SIGKILL" in message and "every process was stopped" in message


@pytest.mark.parametrize("settings, message", [
    ({"nproc": 3, "world_size": 2}, "nproc=3 processes from rank offset=0 do not fit in world_size=2"),
    ({"nproc": 2, "world_size": 4}, "several machines; give every machine the same --ip"),
    ({"nproc": 2, "ddp_backend": "nccl"}, "ddp_backend='nccl' is not available in this torch build"),
    ({"nproc": 0}, "nproc=0"),
])
def test_impossible_launches_are_refused_before_any_process_starts(settings, message, slice_root, in_tmp_cwd):
    with pytest.raises(ValueError, match=message):
        recbole_diffusion.run("SASRec", DATASET, config_dict={**TINY, "data_path": slice_root, **settings})
    assert not os.path.exists("log") and not os.path.exists("saved")


def test_a_port_in_use_is_refused(slice_root, in_tmp_cwd):
    with socket.socket() as listener:
        listener.bind(("localhost", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(ValueError, match=f"port {port} on localhost is already in use"):
            recbole_diffusion.run("SASRec", DATASET, config_dict={**TINY, "data_path": slice_root, "nproc": 2,
                                                                  "port": port})


def test_more_processes_than_listed_gpus_are_refused(slice_root, monkeypatch):
    config, _ = build_config("SASRec", DATASET, config_dict={**TINY, "data_path": slice_root, "nproc": 2})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    config["gpu_id"] = "0"
    with pytest.raises(ValueError, match="nproc=2 processes but gpu_id='0' lists 1 GPU"):
        launcher.plan_launch(config)
    config["gpu_id"] = "0,1"
    monkeypatch.setattr(launcher, "check_backend", lambda backend, on_cuda: None)  # no NCCL in a CPU build
    assert launcher.plan_launch(config).backend == "nccl"


def test_an_external_launchers_environment_gives_recboles_keys(monkeypatch):
    for name, value in {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
                        "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    assert launcher.launcher_keys() == {"local_rank": 1, "world_size": 8, "offset": 4, "nproc": 4,
                                           "ip": "10.0.0.1", "port": 29500}
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert launcher.launcher_keys() == {}


def test_compare_trains_a_run_on_two_processes_and_records_it(slice_root, tmp_path):
    from recbole_diffusion.compare import parse_args, run_comparison

    overrides = parse_args(["--models", "SASRec", "--dataset", DATASET, "--nproc", "2"])[5]
    overrides.update({key: str(value) for key, value in TINY.items() if key not in ("diffusion_steps", "ddim_steps")})
    record, = run_comparison(["SASRec"], DATASET, [2020], str(tmp_path / "out"), isolate=False,
                             overrides={**overrides, "data_path": slice_root})
    assert record["status"] == "ok", record.get("traceback")
    assert record["nproc"] == 2 and record["test_users"] == USERS
    assert record["groups"]["all users"]["users"] == USERS
