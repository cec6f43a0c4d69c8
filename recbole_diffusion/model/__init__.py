"""The models of recbole_diffusion, by the name used in ``--model`` and ``properties/model/<name>.yaml``."""

from recbole_diffusion.model.diffurec import DiffuRec, DiffuRecSys
from recbole_diffusion.model.dreamrec import DreamRec, PreferDiff
from recbole_diffusion.model.seqdiffrec import SeqDiffRec

MODELS = {model.__name__: model for model in (DiffuRec, DiffuRecSys, DreamRec, PreferDiff, SeqDiffRec)}

__all__ = ["MODELS", "DiffuRec", "DiffuRecSys", "DreamRec", "PreferDiff", "SeqDiffRec"]
