"""Make RecBole 1.2.1 work on today's numpy and PyTorch; imported by the package before RecBole is used.

Each fix is small, idempotent and covered by ``tests/test_compat.py``:

* numpy 2 removed ``np.float_``, ``np.complex_`` and ``np.unicode_``, which ``recbole.config.Config``
  reads in ``compatibility_settings``; they are restored as aliases of the types that replaced them.
* PyTorch >= 2.6 loads with ``weights_only=True`` by default, but RecBole's checkpoints pickle the whole
  ``Config``. RecBole's trainer module (``evaluate(load_best_model=True)``, ``resume_checkpoint``) gets a
  ``torch`` whose ``load`` defaults to ``weights_only=False``: those files are the ones this process's
  trainer wrote. Nothing else in the process is changed.
* ``recbole.quick_start`` imports ray at import time (ray needs ``pkg_resources`` and numpy < 2). This
  package never imports it: ``recbole_diffusion.quick_start`` builds the pipeline from RecBole's parts.
* RecBole's multi-process mode hard-codes the NCCL backend; :func:`check_single_process` refuses it with
  a clear message instead of a hang or a CUDA error on a machine without GPUs.
"""

import functools
import types

import numpy as np
import torch

NUMPY_REMOVED_ALIASES = {"float_": np.float64, "complex_": np.complex128, "unicode_": np.str_}


def restore_numpy_aliases():
    """Put back the numpy 1 aliases that RecBole's ``Config`` reads (no-op on numpy 1)."""
    for name, replacement in NUMPY_REMOVED_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, replacement)


class _TorchLoadingOwnCheckpoints(types.ModuleType):
    """``torch`` as seen by RecBole's trainer: everything forwards, ``load`` unpickles full checkpoints."""

    def __init__(self):
        super().__init__("torch")
        self.load = functools.partial(torch.load, weights_only=False)

    def __getattr__(self, name):
        return getattr(torch, name)


def allow_recbole_checkpoint_loading():
    """Let RecBole's Trainer reload the checkpoints it writes (they pickle a ``Config``)."""
    import recbole.trainer.trainer as trainer_module

    if not isinstance(trainer_module.torch, _TorchLoadingOwnCheckpoints):
        trainer_module.torch = _TorchLoadingOwnCheckpoints()


def check_single_process(config):
    """Refuse RecBole's distributed mode, which needs NCCL (CUDA GPUs) and a launcher this runner lacks."""
    nproc = config["nproc"] if "nproc" in config else 1
    if nproc is not None and int(nproc) > 1:
        raise ValueError(
            f"nproc={nproc}: recbole-diffusion runs one process. RecBole 1.2.1's multi-process mode "
            "hard-codes the NCCL backend (CUDA GPUs only); run with nproc=1."
        )


def apply():
    """Apply every fix; safe to call more than once."""
    restore_numpy_aliases()
    allow_recbole_checkpoint_loading()
