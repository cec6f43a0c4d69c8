"""Several processes, one model: RecBole's distributed keys carried out with PyTorch's process groups and DDP.

RecBole 1.2.1 has the keys (``nproc``, ``world_size``, ``offset``, ``ip``, ``port``; each process gets a
``local_rank``) but hard-codes NCCL, asserts a GPU per process, and launches from ``recbole.quick_start``, which
imports ray. This module is what the runner uses instead; the engine stays PyTorch's:

* :func:`plan_launch` reads the keys of a merged configuration and refuses, before any process starts, what
  cannot work: more processes than listed GPUs, a ``world_size`` inconsistent with ``nproc`` and ``offset``, a
  port already in use, a backend this torch build lacks;
* :func:`spawn` starts ``nproc`` processes (ranks ``offset`` ... ``offset + nproc - 1`` of ``world_size``) and
  returns rank 0's value; a failed or killed process ends every other one and raises :class:`WorkerFailed`;
* :func:`launcher_keys` reads an external launcher's environment (torchrun or a scheduler setting ``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): then this process is one rank, nothing
  is spawned;
* :func:`join_group` (called by ``quick_start.PluginConfig`` where RecBole's ``Config`` would call NCCL) sets the
  device and joins the process group: NCCL when the processes use CUDA devices, gloo on CPUs, ``ddp_backend``
  overrides;
* :func:`wrap_model`, :func:`gather_unique_rows` and the small collectives serve the trainer layer;
  :func:`all_gather_rows` serves the loss-aware timestep sampler.
"""

import errno
import json
import os
import signal
import socket
import tempfile
import threading
import time
import traceback
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE")
# How long the other processes get to end by themselves after one failed, before SIGTERM (and as long again
# before SIGKILL).
GRACE_SECONDS = 20
# Exceptions a process raises about the user's input: the launching process raises the same type and message.
USER_ERRORS = (ValueError, FileNotFoundError)


class WorkerFailed(RuntimeError):
    """A process of a distributed run failed or was killed; the others were stopped."""


class Launch(NamedTuple):
    """RecBole's distributed keys of one machine's processes, as :func:`plan_launch` settled them."""

    nproc: int
    world_size: int
    offset: int
    ip: str
    port: int
    backend: str

    def config_keys(self):
        return {"nproc": self.nproc, "world_size": self.world_size, "offset": self.offset, "ip": self.ip,
                "port": self.port, "ddp_backend": self.backend}


# ----- before any process starts ------------------------------------------------------------------------------

def listed_gpus(gpu_id):
    """RecBole's ``gpu_id`` (``"0,1"``, a tuple, an int or empty) as a list of ids."""
    if isinstance(gpu_id, (tuple, list)):
        gpu_id = ",".join(map(str, gpu_id))
    return [part.strip() for part in str(gpu_id if gpu_id is not None else "").split(",") if part.strip()]


def uses_cuda(config):
    """RecBole's rule: CUDA when ``gpu_id`` lists a GPU and torch sees one."""
    return bool(listed_gpus(config["gpu_id"])) and torch.cuda.is_available()


def default_backend(config):
    return config["ddp_backend"] or ("nccl" if uses_cuda(config) else "gloo")


def check_backend(backend, on_cuda):
    """Refuse a backend this torch build lacks, and NCCL for processes on CPUs."""
    if not dist.is_available():
        raise ValueError("this torch build has no torch.distributed: distributed training (nproc > 1) needs one")
    available = dist.is_backend_available(backend) if hasattr(dist, "is_backend_available") \
        else getattr(dist, f"is_{backend}_available", lambda: False)()
    if not available:
        have = [name for name in ("gloo", "nccl", "mpi", "ucc") if dist.is_backend_available(name)] \
            if hasattr(dist, "is_backend_available") else []
        raise ValueError(f"ddp_backend={backend!r} is not available in this torch build ({torch.__version__}); "
                         f"available: {', '.join(have) or 'none'}")
    if backend == "nccl" and not on_cuda:
        raise ValueError("ddp_backend='nccl' needs CUDA devices, but the processes run on CPUs (no GPU listed in "
                         "gpu_id or none visible to torch): use ddp_backend=gloo")


def free_port(ip="localhost"):
    """A TCP port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((ip, 0))
        return probe.getsockname()[1]


def check_port_free(ip, port):
    """Refuse a port something already listens on (rank 0 will listen there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ValueError(f"port {port} on {ip} is already in use: rank 0 listens there for the other "
                                 f"processes; pick a free one with --port=<port>") from None
            raise ValueError(f"cannot listen on {ip}:{port} ({error.strerror}): ip must be an address of the "
                             "machine that runs rank 0 (offset 0)") from None


def _int_key(config, key, default):
    value = config[key]
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) and not str(value).lstrip("-").isdigit():
        raise ValueError(f"{key}={value!r} must be an integer")
    return int(value)


def plan_launch(config, given_keys=()):
    """The :class:`Launch` of this machine's processes, or ``None`` for one process; refuses what cannot work.

    ``config``: the merged configuration (RecBole's keys ``nproc`` 1, ``world_size`` -1 meaning ``nproc``,
    ``offset`` 0, ``ip`` localhost, ``port`` a free one when one machine runs every process).
    ``given_keys``: the keys the user set (several machines need ``ip`` and ``port`` given on each).
    """
    nproc = _int_key(config, "nproc", 1)
    world_size = _int_key(config, "world_size", -1)
    offset = _int_key(config, "offset", 0)
    if nproc < 1:
        raise ValueError(f"nproc={nproc}: the number of processes on this machine must be at least 1")
    if world_size in (-1, 0):
        world_size = nproc
    if world_size == 1 and nproc == 1:
        return None
    if offset < 0 or offset + nproc > world_size:
        raise ValueError(f"nproc={nproc} processes from rank offset={offset} do not fit in world_size={world_size} "
                         "(world_size counts the processes of every machine, offset is this machine's first rank; "
                         "on one machine leave world_size and offset out)")
    several_machines = world_size > nproc
    if several_machines and not {"ip", "port"} <= set(given_keys):
        raise ValueError(f"world_size={world_size} > nproc={nproc}: several machines; give every machine the same "
                         "--ip=<address of the machine with offset 0> and --port=<a free port there>")
    on_cuda = uses_cuda(config)
    if on_cuda:
        gpus = listed_gpus(config["gpu_id"])
        if len(gpus) < nproc:
            raise ValueError(f"nproc={nproc} processes but gpu_id={config['gpu_id']!r} lists {len(gpus)} GPU(s): "
                             f"list one GPU per process, e.g. --gpu_id={','.join(map(str, range(nproc)))}")
        if torch.cuda.device_count() < nproc:
            raise ValueError(f"nproc={nproc} processes but torch sees {torch.cuda.device_count()} GPU(s)")
    backend = default_backend(config)
    check_backend(backend, on_cuda)
    ip = str(config["ip"] or "localhost")
    port = _int_key(config, "port", 0) or free_port(ip)
    if offset == 0:
        check_port_free(ip, port)
    return Launch(nproc, world_size, offset, ip, port, backend)


# ----- external launchers ---------------------------------------------------------------------------------------

def launched_externally():
    """Whether torchrun or a scheduler started this process as one rank of several."""
    return all(name in os.environ for name in LAUNCHER_VARIABLES) and int(os.environ["WORLD_SIZE"]) > 1


def launcher_keys():
    """RecBole's keys from an external launcher's environment (``{}`` when there is none)."""
    if not launched_externally():
        return {}
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    return {"local_rank": local_rank, "world_size": world_size, "offset": rank - local_rank,
            "nproc": int(os.environ.get("LOCAL_WORLD_SIZE", 1)), "ip": os.environ.get("MASTER_ADDR", "localhost"),
            "port": int(os.environ.get("MASTER_PORT", 0))}


# ----- in each process ------------------------------------------------------------------------------------------

def join_group(config_dict):
    """Set this process's device and join the process group, for RecBole's ``Config`` (its ``_init_device``).

    CUDA device ``local_rank`` of the GPUs ``gpu_id`` lists (RecBole's semantics), else the CPU. Ranks meet at
    ``tcp://ip:port``, or through the launcher's rendezvous (``env://``) when one started the process.
    """
    gpus = listed_gpus(config_dict["gpu_id"])
    config_dict["gpu_id"] = ",".join(gpus)
    os.environ["CUDA_VISIBLE_DEVICES"] = config_dict["gpu_id"]
    local_rank, offset = int(config_dict["local_rank"]), int(config_dict.get("offset") or 0)
    on_cuda = bool(gpus) and torch.cuda.is_available()
    if on_cuda and local_rank >= len(gpus):
        raise ValueError(f"local_rank {local_rank} has no GPU: gpu_id={config_dict['gpu_id']!r} lists {len(gpus)}; "
                         "list one GPU per process of this machine, e.g. --gpu_id=0,1,2,3")
    device = torch.device("cuda", local_rank) if on_cuda else torch.device("cpu")
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


def leave_group():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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


def all_gather_rows(*tensors):
    """Every process's rows of ``tensors`` (one first dimension within a process, any size across them),
    concatenated in rank order; the tensors themselves outside a process group.

    Tensor collectives on the tensors' device (padded to the longest process's rows), no pickling: the
    loss-aware timestep sampler calls this at every training step.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return tensors
    world_size = dist.get_world_size()
    size = torch.tensor([tensors[0].size(0)], device=tensors[0].device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    sizes = [int(value) for value in sizes]
    gathered = []
    for tensor in tensors:
        padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
        padded[: tensor.size(0)] = tensor
        parts = [torch.empty_like(padded) for _ in range(world_size)]
        dist.all_gather(parts, padded)
        gathered.append(torch.cat([part[:rows] for part, rows in zip(parts, sizes)]))
    return tuple(gathered)


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


# ----- spawning -------------------------------------------------------------------------------------------------

def end_with_parent(parent_pid):
    """End this process (exit status 1) once ``parent_pid``, the process that started it, is gone, e.g. killed
    with SIGKILL: a spawned worker (a rank, a comparison's run, a search's trial) would otherwise train on as an
    orphan. The parent passes its pid: one that died before this call leaves this process already re-parented."""

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def _run_rank(local_rank, fn, args, folder, parent_pid):
    """A spawned process: run ``fn``; rank 0 writes its value, a failing rank its error, as JSON in ``folder``."""
    end_with_parent(parent_pid)
    try:
        value = fn(local_rank, *args)
    except Exception as error:
        with open(os.path.join(folder, f"error-{local_rank}.json"), "w", encoding="utf-8") as handle:
            json.dump({"type": type(error).__name__, "message": str(error),
                       "attributes": {name: value for name, value in vars(error).items()
                                      if isinstance(value, (int, float, str, type(None)))},
                       "traceback": traceback.format_exc()}, handle)
        raise
    finally:
        leave_group()
    if local_rank == 0:
        with open(os.path.join(folder, "result.json"), "w", encoding="utf-8") as handle:
            json.dump(value, handle, default=str)


def _read_json(path):
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _failure(context, folder, offset):
    """The exception that reports a failed run: the user's error when every failing process raised the same
    kind of input error, :class:`TrainingPreempted` when SIGTERM stopped training, else :class:`WorkerFailed`."""
    lines, errors = [], {}
    for local_rank, process in enumerate(context.processes):
        error = _read_json(os.path.join(folder, f"error-{local_rank}.json"))
        code = process.exitcode
        if error:
            errors[local_rank] = error
            what = f"{error['type']}: {error['message']}"
        elif code is not None and code < 0:
            what = f"killed by signal {signal.Signals(-code).name}"
        else:
            what = f"exit status {code}" if code else "ended normally"
        lines.append(f"rank {local_rank + offset}: {what}")
    first = errors.get(0) or next(iter(errors.values()), None)
    if first and first["type"] == "TrainingPreempted" and 0 in errors:
        from recbole_diffusion.trainer import TrainingPreempted

        attributes = errors[0]["attributes"]
        return TrainingPreempted(attributes["checkpoint_file"], attributes["epoch"])
    killed = any(process.exitcode is not None and process.exitcode < 0 and local_rank not in errors
                 for local_rank, process in enumerate(context.processes))
    for error_type in USER_ERRORS:
        if first and not killed and first["type"] == error_type.__name__:
            return error_type(first["message"])
    detail = f"\n{first['traceback']}" if first else ""
    return WorkerFailed("a process of the distributed run failed; every process was stopped ("
                        + "; ".join(lines) + ")" + detail)


def spawn(fn, nproc, args=(), offset=0):
    """Run ``fn(local_rank, *args)`` in ``nproc`` new processes; return rank 0's value (made JSON-plain).

    When one process fails or is killed, the others get :data:`GRACE_SECONDS` to end, then SIGTERM, then
    SIGKILL, and the failure is raised here (see :func:`_failure`). SIGTERM sent to this process is passed on
    to the workers (which write their last checkpoint and stop); any other way out of here stops them too.
    """
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="recbole-diffusion-run-") as folder:
        context = mp.start_processes(_run_rank, args=(fn, args, folder, os.getpid()), nprocs=nproc, join=False,
                                     start_method="spawn")
        restore = _pass_sigterm_on(context.processes)
        try:
            while not context.join(grace_period=GRACE_SECONDS):
                pass
        except (mp.ProcessRaisedException, mp.ProcessExitedException):
            raise _failure(context, folder, offset) from None
        finally:
            restore()
            _stop(context.processes)
        return _read_json(os.path.join(folder, "result.json"))


def _pass_sigterm_on(processes):
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)

    def terminate_workers(signum, frame):
        for process in processes:
            if process.is_alive():
                process.terminate()

    signal.signal(signal.SIGTERM, terminate_workers)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _stop(processes):
    """Leave no worker behind (after an interrupt of the launching process, for one)."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(GRACE_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()
