"""The GPUs a scheduler gave a job: an existing CUDA_VISIBLE_DEVICES is kept and gpu_id indexes into it; random
states of more GPUs than are visible, or read onto a GPU, restore without a crash; every diffusion model trains and
ranks with its inputs on a device other than the CPU. (No GPU here: the logic is tested on the variables and device
lists, a tensor type that refuses numpy as a CUDA tensor does, and PyTorch's meta device.)"""

import os

import pytest
import torch

import recbole_diffusion.trainer.checkpoint as ckpt
from recbole_diffusion.config.configurator import build_config
from recbole_diffusion.quick_start import launcher
from recbole_diffusion.utils import collectives
from recbole_diffusion.model import MODELS
from conftest import TINY


@pytest.fixture
def scheduler_mask(monkeypatch):
    """A job to which a scheduler gave physical GPUs 2 and 3 (torch is told it sees two)."""
    monkeypatch.setattr(collectives, "SCHEDULER_MASK", "2,3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    current = []
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    return current


def test_without_a_mask_gpu_id_becomes_the_mask_and_processes_started_here_know_it(monkeypatch):
    monkeypatch.setattr(collectives, "SCHEDULER_MASK", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv(collectives.OWN_MASK_VARIABLE, raising=False)
    assert collectives.cuda_indices("0,1") == [0, 1] and os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert collectives.cuda_indices("") == [] and os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert os.environ[collectives.OWN_MASK_VARIABLE] == "1"  # a child process does not take it for a scheduler's


def test_a_mask_hiding_every_gpu_runs_on_the_cpu(monkeypatch):
    monkeypatch.setattr(collectives, "SCHEDULER_MASK", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert collectives.cuda_indices("0") == []


def test_a_schedulers_mask_is_kept_and_gpu_id_indexes_into_it(scheduler_mask):
    assert collectives.cuda_indices("0,1") == [0, 1]
    assert collectives.cuda_indices("1") == [1]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"
    with pytest.raises(ValueError, match=r"gpu_id='2,3'.*CUDA_VISIBLE_DEVICES='2,3' \(2 GPU\(s\)\).*0 to 1"):
        collectives.cuda_indices("2,3")


def test_a_run_keeps_the_mask_and_refuses_a_gpu_outside_it(scheduler_mask, data_root):
    settings = {**TINY, "data_path": data_root}
    config, _ = build_config("SASRec", "ml-100k-tiny", config_dict={**settings, "gpu_id": "1"})
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"  # RecBole's Config would have made it "1"
    assert config["device"] == torch.device("cuda", 1)
    assert scheduler_mask == [torch.device("cuda", 1)]  # the current GPU: what takes no device reads this one
    with pytest.raises(ValueError, match="outside this job's CUDA_VISIBLE_DEVICES"):
        build_config("SASRec", "ml-100k-tiny", config_dict={**settings, "gpu_id": "4"})


def test_a_distributed_launch_checks_gpu_id_against_the_mask(scheduler_mask, data_root, monkeypatch):
    config, _ = build_config("SASRec", "ml-100k-tiny", config_dict={**TINY, "data_path": data_root, "nproc": 2})
    monkeypatch.setattr(launcher, "check_backend", lambda backend, on_cuda: None)  # no NCCL in a CPU build
    config["gpu_id"] = "2,3"  # the physical ids: outside the mask's numbering
    with pytest.raises(ValueError, match="gpu_id indexes into that mask"):
        launcher.plan_launch(config)
    config["gpu_id"] = "0,1"
    assert launcher.plan_launch(config).nproc == 2 and os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"


def test_random_states_of_more_gpus_than_are_visible_restore(monkeypatch):
    states = ckpt.rng_states()
    states["cuda"] = [torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]  # written on 2 GPUs
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((device, state)))
    ckpt.set_rng_states(states)
    assert [device for device, _ in restored] == [0] and torch.equal(restored[0][1], states["cuda"][0])


class OnAccelerator(torch.Tensor):
    """A tensor as a trainer reads it onto a GPU (``map_location=self.device``): numpy refuses it until ``.cpu()``."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.numpy, torch.Tensor.__array__):
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() first.")
        if func is torch.Tensor.cpu:
            return args[0].as_subclass(torch.Tensor).clone()
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


def on_accelerator(value):
    if isinstance(value, torch.Tensor):
        return value.as_subclass(OnAccelerator)
    if isinstance(value, dict):
        return {key: on_accelerator(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_accelerator(item) for item in value)
    return value


def test_random_states_and_numpy_model_state_read_onto_a_gpu_restore(tmp_path):
    """A resume on a GPU crashed on numpy's random state, and reloading EASE's or ItemKNN's best checkpoint on its
    numpy / scipy state: the trainer reads checkpoints onto its device, and numpy takes host memory only."""
    import numpy as np
    import scipy.sparse as sp

    np.random.seed(7)
    path = str(tmp_path / "c.pth")
    ckpt.save_checkpoint({"rng": ckpt.rng_states(),
                          "extra": ckpt.encode_state({"dense": np.eye(2), "sparse": sp.eye(3, format="csr")})}, path)
    expected = np.random.rand(3)
    with pytest.raises(TypeError, match="cpu"):  # the stand-in does refuse numpy
        on_accelerator(torch.ones(2)).numpy()
    loaded = on_accelerator(ckpt.load_checkpoint(path))
    ckpt.set_rng_states(loaded["rng"])
    assert np.array_equal(np.random.rand(3), expected)
    extra = ckpt.decode_state(loaded["extra"], "cpu")
    assert np.array_equal(extra["dense"], np.eye(2)) and (extra["sparse"] != sp.eye(3, format="csr")).nnz == 0


@pytest.mark.parametrize("model_name", list(MODELS))
def test_every_diffusion_model_trains_and_ranks_on_another_device(model_name, data_root):
    """The model and its inputs on PyTorch's ``meta`` device (shapes without storage): a tensor that a line creates
    on the CPU instead of the inputs' device meets them in an elementwise op and fails, as it would on a GPU.
    (Meta misses a CPU tensor in a matmul or an index; the audit of every creation line covers those.)
    SeqDiffRec draws its steps uniformly here: ``torch.bincount`` of its loss-aware sampler has no meta kernel."""
    from recbole_diffusion.quick_start.quick_start import prepare_data

    config, model_class = build_config(model_name, "ml-100k-tiny", config_dict={
        **TINY, "data_path": data_root, "gpu_id": "", "diffusion_steps": 20, "beta_schedule": "cosine",
        **({"timestep_sampler": "uniform"} if model_name == "SeqDiffRec" else {})})
    data = prepare_data(config)
    meta = torch.device("meta")
    model = model_class(config, data.train._dataset).to(meta)
    loss = model.calculate_loss(next(iter(data.train)).to(meta))
    assert loss.device == meta and loss.dim() == 0
    model.eval()
    test_batch = next(iter(data.test))[0].to(meta)
    with torch.no_grad():
        scores = model.full_sort_predict(test_batch)
    assert scores.device == meta and scores.numel() == len(test_batch) * data.train._dataset.item_num


def test_a_port_without_permission_is_named_not_the_ip(monkeypatch):
    import errno
    import socket

    def denied(self, address):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(socket.socket, "bind", denied)
    with pytest.raises(ValueError, match="port 1 on localhost cannot be opened.*--port") as refused:
        launcher.check_port_free("localhost", 1)
    assert "ip must be" not in str(refused.value)
