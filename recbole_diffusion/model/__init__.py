"""The models of recbole_diffusion, by the name used in ``--model`` and ``properties/model/<name>.yaml``."""

from recbole_diffusion.model.diffurec import DiffuRec, DiffuRecSys

MODELS = {model.__name__: model for model in (DiffuRec, DiffuRecSys)}

__all__ = ["MODELS", "DiffuRec", "DiffuRecSys"]
