"""The collectives of a distributed run, as seen from inside one process: its group, its rank, what it shares.

A leaf that anything above the models may import (the trainer, the pipeline, the entries): outside a process
group every function behaves as for a single process. The models and the diffusion core do not import it (a model
is importable without any of our training machinery); the one collective the core needs, the loss-aware step
sampler's gathering of losses, lives with that sampler. Starting the processes is the
launcher's job (:mod:`recbole_diffusion.quick_start.launcher`).

* :func:`join_group` (called where RecBole's ``Config`` would join with NCCL) sets the device and joins the
  process group: NCCL when the processes use CUDA devices, gloo on CPUs, ``ddp_backend`` overrides;
* :func:`wrap_model`, :func:`gather_unique_rows` and the small collectives serve the trainer layer.
"""

import logging
import os
import sys

import numpy as np
import torch
import torch.distributed as dist

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE")
# Set beside CUDA_VISIBLE_DEVICES when this package set the mask from gpu_id, so that the processes it starts do not
# take the mask for a scheduler's.
OWN_MASK_VARIABLE = "RECBOLE_DIFFUSION_MASK_FROM_GPU_ID"
# The GPUs a scheduler gave this job, as the environment had them before anything here ran (RecBole's Config
# would overwrite the variable with gpu_id); None when it set none.
SCHEDULER_MASK = None if os.environ.get(OWN_MASK_VARIABLE) else os.environ.get("CUDA_VISIBLE_DEVICES")


def listed_gpus(gpu_id):
    """RecBole's ``gpu_id`` (``"0,1"``, a tuple, an int or empty) as a list of ids."""
    if isinstance(gpu_id, (tuple, list)):
        gpu_id = ",".join(map(str, gpu_id))
    return [part.strip() for part in str(gpu_id if gpu_id is not None else "").split(",") if part.strip()]


def cuda_indices(gpu_id):
    """torch's CUDA device indices, in this process, of the GPUs ``gpu_id`` lists (``[]``: the CPU).

    Under a scheduler's ``CUDA_VISIBLE_DEVICES`` mask (set before this package was imported) the mask is kept and
    ``gpu_id`` indexes into it, as torch's device numbering does: with a mask of 2,3, ``gpu_id`` 0,1 are the
    physical GPUs 2 and 3; an index outside the mask is refused naming both (where torch sees a GPU at all). Without
    one, RecBole's behaviour: the mask becomes ``gpu_id`` and its GPUs are torch's devices 0, 1, ...
    """
    gpus = listed_gpus(gpu_id)
    if SCHEDULER_MASK is None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        os.environ[OWN_MASK_VARIABLE] = "1"
        return list(range(len(gpus)))
    if not torch.cuda.is_available():
        return []  # the CPU, as RecBole runs without a visible GPU
    visible = listed_gpus(SCHEDULER_MASK)
    outside = [gpu for gpu in gpus if not gpu.isdigit() or int(gpu) >= len(visible)]
    if outside:
        raise ValueError(f"gpu_id={','.join(gpus)!r} names GPU(s) {', '.join(outside)} outside this job's "
                         f"CUDA_VISIBLE_DEVICES={SCHEDULER_MASK!r} ({len(visible)} GPU(s)): gpu_id indexes into that "
                         f"mask, 0 to {len(visible) - 1}")
    return [int(gpu) for gpu in gpus]


def single_device(config_dict):
    """This process's device for a run of one process (RecBole's ``Config._init_device`` with the scheduler's
    mask respected, :func:`cuda_indices`): the first listed GPU, made the current one (so that what takes no
    device, such as ``torch.cuda.max_memory_allocated``, reads this GPU), or the CPU."""
    gpus = listed_gpus(config_dict["gpu_id"])
    config_dict["gpu_id"] = ",".join(gpus)
    indices = cuda_indices(gpus)
    on_cuda = bool(indices) and torch.cuda.is_available()
    device = torch.device("cuda", indices[0]) if on_cuda else torch.device("cpu")
    if on_cuda:
        torch.cuda.set_device(device)
    config_dict.update(single_spec=True, local_rank=0, device=device)


def launched_externally():
    """Whether torchrun or a scheduler started this process as one rank of several."""
    return all(name in os.environ for name in LAUNCHER_VARIABLES) and int(os.environ["WORLD_SIZE"]) > 1


def join_group(config_dict):
    """Set this process's device and join the process group, for RecBole's ``Config`` (its ``_init_device``).

    The ``local_rank``-th GPU that ``gpu_id`` lists (RecBole's semantics; under a scheduler's mask ``gpu_id``
    indexes into it, :func:`cuda_indices`), else the CPU. Ranks meet at ``tcp://ip:port``, or through the
    launcher's rendezvous (``env://``) when one started the process.
    """
    gpus = listed_gpus(config_dict["gpu_id"])
    config_dict["gpu_id"] = ",".join(gpus)
    indices = cuda_indices(gpus)
    local_rank, offset = int(config_dict["local_rank"]), int(config_dict.get("offset") or 0)
    on_cuda = bool(gpus) and torch.cuda.is_available()
    if on_cuda and local_rank >= len(gpus):
        raise ValueError(f"local_rank {local_rank} has no GPU: gpu_id={config_dict['gpu_id']!r} lists {len(gpus)}; "
                         "list one GPU per process of this machine, e.g. --gpu_id=0,1,2,3")
    device = torch.device("cuda", indices[local_rank]) if on_cuda else torch.device("cpu")
    if on_cuda:
        torch.cuda.set_device(device)
    backend = config_dict.get("ddp_backend") or ("nccl" if on_cuda else "gloo")
    if not dist.is_initialized():
        init_method = "env://" if launched_externally() else f"tcp://{config_dict['ip']}:{config_dict['port']}"
        dist.init_process_group(backend, init_method=init_method, rank=local_rank + offset,
                                world_size=int(config_dict["world_size"]))
    config_dict.update(device=device, single_spec=False, ddp_backend=backend)
    if rank() != 0:
        config_dict["show_progress"] = False  # one progress bar, rank 0's


def leave_group(finished=False):
    """Destroy this process's group. ``finished``: every rank got here normally, so they first wait for each other;
    a gloo rank that tears its group down while a peer is still in its last collective can abort at exit
    ("terminate called without an active exception"). After a failure no rank waits (its peers may be gone)."""
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def exit_finished_rank():
    """End this process now, exit status 0, its logs and console output flushed: for a rank whose work is done and
    whose group is left. It skips the interpreter's finalization, where gloo's C++ threads can still release
    tensors once Python is half torn down and abort the process ("terminate called without an active exception",
    SIGABRT; 2 of about 140 two-rank CPU runs here, see pytorch/pytorch PR 179291), which turned a finished
    run into a failed one."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def rank():
    """This process's global rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_rank_zero():
    return rank() == 0


def broadcast_object(value):
    """Rank 0's ``value`` in every process."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_gather_object(value):
    """Every rank's ``value``, in rank order."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def wrap_model(model, device):
    """``(model, DistributedDataParallel(model))``: ``device_ids`` for a CUDA module only (RecBole passes
    ``[local_rank]`` for a CPU module too, which DDP refuses), SyncBatchNorm only on CUDA (it has no CPU kernel)."""
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model, torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    return model, torch.nn.parallel.DistributedDataParallel(model)


def broadcast_module_state(module):
    """Rank 0's parameters and buffers in every process (in place)."""
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src=0)


def any_rank(flag, device):
    """Whether ``flag`` is true in some process (every process must call it at the same point)."""
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def mean_over_ranks(value, device):
    """A float or a tuple of floats averaged over the processes."""
    numbers = torch.tensor(value if isinstance(value, tuple) else [value], dtype=torch.float64, device=device)
    dist.all_reduce(numbers)
    numbers = (numbers / dist.get_world_size()).tolist()
    return tuple(numbers) if isinstance(value, tuple) else numbers[0]


def gather_unique_rows(rows, indices):
    """Every process's rows, each sample once, ordered by sample index.

    ``rows``: name -> tensor whose row ``j`` belongs to sample ``indices[j]`` of this process. RecBole's
    ``DistributedSampler`` pads the last ranks with samples of the first ones: a sample held by several
    processes is kept from the lowest rank. Returns name -> CPU tensor.
    """
    indices = np.asarray(indices, dtype=np.int64)
    for name, tensor in rows.items():
        if tensor.size(0) != indices.size:
            raise RuntimeError(f"evaluation: {name} has {tensor.size(0)} rows for {indices.size} samples of this "
                               "process; the rows cannot be matched to samples to count each one once")
    gathered = all_gather_object((indices, {name: tensor.cpu() for name, tensor in rows.items()}))
    every_index = np.concatenate([part[0] for part in gathered])
    _, first = np.unique(every_index, return_index=True)
    keep = torch.from_numpy(first)
    return {name: torch.cat([part[1][name] for part in gathered])[keep] for name in rows}


def owned_by_lowest_rank(indices_per_rank):
    """For each rank, a mask of its entries whose sample no lower rank holds (entries may repeat a sample)."""
    seen, masks = set(), []
    for indices in indices_per_rank:
        indices = np.asarray(indices, dtype=np.int64)
        masks.append(np.array([index not in seen for index in indices.tolist()], dtype=bool))
        seen.update(indices.tolist())
    return masks
