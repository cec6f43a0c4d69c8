"""recbole-diffusion: diffusion sequential recommenders as a RecBole plugin.

Importing the package first applies :mod:`recbole_diffusion.compat`, which makes RecBole 1.2.1 work on
numpy 2 and PyTorch >= 2.6.
"""

from recbole_diffusion import compat

compat.apply()

from recbole_diffusion.model import MODELS, DiffuRec, DiffuRecSys, DreamRec, PreferDiff  # noqa: E402

__version__ = "0.1.0"
__all__ = ["MODELS", "DiffuRec", "DiffuRecSys", "DreamRec", "PreferDiff", "load_data_and_model", "run"]


def run(*args, **kwargs):
    """Train and evaluate a model; see :func:`recbole_diffusion.quick_start.run`."""
    from recbole_diffusion.quick_start import run as run_model

    return run_model(*args, **kwargs)


def load_data_and_model(*args, **kwargs):
    """Load a trained model with its data as RecBole's 6-tuple; see
    :func:`recbole_diffusion.inference.load_data_and_model`."""
    from recbole_diffusion.inference import load_data_and_model as load

    return load(*args, **kwargs)
