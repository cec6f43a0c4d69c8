"""Several processes, one model: starting the processes of RecBole's distributed mode (PyTorch's DDP underneath).

RecBole 1.2.1 has the keys (``nproc``, ``world_size``, ``offset``, ``ip``, ``port``; each process gets a
``local_rank``) but hard-codes NCCL, asserts a GPU per process, and launches from ``recbole.quick_start``, which
imports ray. This module is what the runner, ``compare`` and the benchmarks use instead to start processes; what
happens inside each process (joining the group, the collectives) is :mod:`recbole_diffusion.utils.collectives`.

* :func:`plan_launch` reads the keys of a merged configuration and refuses, before any process starts, what
  cannot work: more processes than listed GPUs, a ``world_size`` inconsistent with ``nproc`` and ``offset``, a
  port already in use, a backend this torch build lacks;
* :func:`spawn` starts ``nproc`` processes (ranks ``offset`` ... ``offset + nproc - 1`` of ``world_size``) and
  returns rank 0's value; a failed or killed process ends every other one and raises :class:`WorkerFailed`;
* :func:`launcher_keys` reads an external launcher's environment (torchrun or a scheduler setting ``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): then this process is one rank, nothing
  is spawned.
"""

import errno
import os
import signal
import socket
import tempfile
import threading
import traceback
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recbole_diffusion.quick_start.child_process import end_with_parent
from recbole_diffusion.trainer import TrainingPreempted
from recbole_diffusion.utils.collectives import (cuda_indices, exit_finished_rank, launched_externally, leave_group,
                                                 listed_gpus)
from recbole_diffusion.utils.files import read_json, write_json

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
            if error.errno == errno.EACCES:
                raise ValueError(f"port {port} on {ip} cannot be opened (permission denied: ports below 1024 need "
                                 "administrator rights); pick another with --port=<port>") from None
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
        cuda_indices(config["gpu_id"])  # under a scheduler's mask, gpu_id must index into it
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

def launcher_keys():
    """RecBole's keys from an external launcher's environment (``{}`` when there is none)."""
    if not launched_externally():
        return {}
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    return {"local_rank": local_rank, "world_size": world_size, "offset": rank - local_rank,
            "nproc": int(os.environ.get("LOCAL_WORLD_SIZE", 1)), "ip": os.environ.get("MASTER_ADDR", "localhost"),
            "port": int(os.environ.get("MASTER_PORT", 0))}


# ----- spawning -------------------------------------------------------------------------------------------------

def _run_rank(local_rank, fn, args, folder, parent_pid):
    """A spawned process: run ``fn``; rank 0 writes its value, a failing rank its error, as JSON in ``folder``."""
    end_with_parent(parent_pid)
    finished = False
    try:
        value = fn(local_rank, *args)
        finished = True
    except Exception as error:
        write_json(os.path.join(folder, f"error-{local_rank}.json"),
                   {"type": type(error).__name__, "message": str(error),
                    "attributes": {name: value for name, value in vars(error).items()
                                   if isinstance(value, (int, float, str, type(None)))},
                    "traceback": traceback.format_exc()})
        raise
    finally:
        leave_group(finished)
    if local_rank == 0:
        write_json(os.path.join(folder, "result.json"), value)
    exit_finished_rank()


def _failure(context, folder, offset):
    """The exception that reports a failed run: the user's error when every failing process raised the same
    kind of input error, :class:`TrainingPreempted` when SIGTERM stopped training, else :class:`WorkerFailed`."""
    lines, errors = [], {}
    for local_rank, process in enumerate(context.processes):
        error = read_json(os.path.join(folder, f"error-{local_rank}.json"))
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
        return read_json(os.path.join(folder, "result.json"))


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
