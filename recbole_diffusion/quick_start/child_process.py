"""One job in a process of its own, its outcome a JSON record: what a comparison's runs and a search's trials share.

A run in its own process has its own peak memory, cannot leak state into the next run, and can be killed alone.
:func:`run_in_child` starts the process, which writes the job's record atomically; a job whose process died
without writing one (killed, out of memory) is reported as ``None`` with the exit code, and the caller records the
failure in its own terms. Every such process (and every rank of a distributed run) ends with the process that
started it (:func:`end_with_parent`).
"""

import multiprocessing
import os
import sys
import threading
import time

import torch

from recbole_diffusion.utils.files import read_json, write_json


def end_with_parent(parent_pid):
    """End this process (exit status 1) once ``parent_pid``, the process that started it, is gone, e.g. killed
    with SIGKILL: a spawned worker (a rank, a comparison's run, a search's trial) would otherwise train on as an
    orphan. The parent passes its pid: one that died before this call leaves this process already re-parented."""

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def _redirect_output(path):
    """The process's console output (RecBole's log lines, warnings) goes to ``path``."""
    handle = open(path, "a", encoding="utf-8")
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(handle.fileno(), 1)
    os.dup2(handle.fileno(), 2)


def _run_job(target, args, record_path, work_dir, threads, parent_pid=None, log=None):
    """Run ``target(*args)`` in ``work_dir`` (RecBole writes ``./log`` there) and write its record."""
    if log:
        _redirect_output(log)
    if parent_pid is not None:
        end_with_parent(parent_pid)
    if threads:
        torch.set_num_threads(threads)
    os.chdir(work_dir)
    write_json(record_path, target(*args))


def run_in_child(target, args, record_path, work_dir, threads=None, log=None, isolate=True):
    """``(record, exit code)`` of ``target(*args)``, run in a fresh process (``spawn``) in ``work_dir``.

    ``target`` is a module-level function returning a JSON-plain record; it records its own failures (a
    comparison and a search describe them differently). ``threads``: torch's CPU threads in the job (on a shared
    machine fewer threads than cores avoids OpenMP oversubscription). ``log``: a file for the job's console
    output. ``isolate=False`` runs the job in this process instead (the working directory is restored; exit code
    ``None``). The record is ``None`` when the process ended without writing one.
    """
    os.makedirs(work_dir, exist_ok=True)
    if os.path.isfile(record_path):
        os.remove(record_path)  # an earlier attempt's record must not stand in for this one
    exit_code = None
    if isolate:
        process = multiprocessing.get_context("spawn").Process(
            target=_run_job, args=(target, args, record_path, work_dir, threads, os.getpid(), log))
        process.start()
        process.join()
        exit_code = process.exitcode
    else:
        cwd = os.getcwd()
        try:
            _run_job(target, args, record_path, work_dir, threads)
        finally:
            os.chdir(cwd)
    return read_json(record_path), exit_code
