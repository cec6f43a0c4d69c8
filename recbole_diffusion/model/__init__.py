"""The models of recbole_diffusion, by the name used in ``--model`` and ``properties/model/<name>.yaml``.

Each model is one module (``diffurec``, ``dreamrec``, ``seqdiffrec``) on the shared base ``base.DiffusionRecommender``,
with the sequence layers of ``layers``, the guided models' losses in ``loss`` and every model's key checks in
``checks``; the diffusion arithmetic is :mod:`recbole_diffusion.diffusion`. Importing a model loads RecBole's model
code and the diffusion core only: no trainer, checkpoint or process code of this package.
"""

from recbole_diffusion.model.diffurec import DiffuRec, DiffuRecSys
from recbole_diffusion.model.dreamrec import DreamRec, PreferDiff
from recbole_diffusion.model.seqdiffrec import SeqDiffRec

MODELS = {model.__name__: model for model in (DiffuRec, DiffuRecSys, DreamRec, PreferDiff, SeqDiffRec)}

__all__ = ["MODELS", "DiffuRec", "DiffuRecSys", "DreamRec", "PreferDiff", "SeqDiffRec"]
