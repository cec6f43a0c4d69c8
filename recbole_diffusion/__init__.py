"""recbole-diffusion: diffusion sequential recommenders as a RecBole plugin.

Importing the package first applies :mod:`recbole_diffusion.compat`, which makes RecBole 1.2.1 work on numpy 2 and
PyTorch >= 2.6. The package's layout, bottom up: ``utils`` (leaves), ``diffusion`` (the core), ``text`` (item text as vectors), ``model``, then
``data``, ``evaluation``, ``trainer`` and ``config``, then ``quick_start`` (the pipeline) and the entries (``runner``,
``compare``, ``tune``, ``recommend``, ``selfcheck``); each imports only from below it.
"""

from recbole_diffusion import compat

compat.apply()

from recbole_diffusion.model import MODELS, DiffuRec, DiffuRecSys, DreamRec, PreferDiff, SeqDiffRec  # noqa: E402

__version__ = "0.1.0"
__all__ = ["MODELS", "DiffuRec", "DiffuRecSys", "DreamRec", "PreferDiff", "SeqDiffRec", "load_data_and_model", "run"]


def __getattr__(name):
    """``run`` and ``load_data_and_model`` (:mod:`recbole_diffusion.quick_start`), loaded on first use so that
    importing the package or a model does not load the training pipeline."""
    if name in ("run", "load_data_and_model"):
        import recbole_diffusion.quick_start as quick_start

        return getattr(quick_start, name)
    raise AttributeError(f"module 'recbole_diffusion' has no attribute {name!r}")
