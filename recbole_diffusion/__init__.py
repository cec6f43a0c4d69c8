"""recbole-diffusion: diffusion sequential recommenders as a RecBole plugin.

Importing the package first applies :mod:`recbole_diffusion.compat`, which makes RecBole 1.2.1 work on
numpy 2 and PyTorch >= 2.6.
"""

from recbole_diffusion import compat

compat.apply()

from recbole_diffusion.model import MODELS, DiffuRec, DiffuRecSys, DreamRec, PreferDiff  # noqa: E402

__version__ = "0.1.0"
__all__ = ["MODELS", "DiffuRec", "DiffuRecSys", "DreamRec", "PreferDiff", "run"]


def run(*args, **kwargs):
    """Train and evaluate a model; see :func:`recbole_diffusion.quick_start.run`."""
    from recbole_diffusion.quick_start import run as run_model

    return run_model(*args, **kwargs)
