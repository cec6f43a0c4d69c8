"""Running: the one pipeline every entry goes through (:mod:`.quick_start`), starting its processes
(:mod:`.launcher`, :mod:`.child_process`) and loading a trained model (:mod:`.inference`)."""

from recbole_diffusion.quick_start.inference import load_data_and_model
from recbole_diffusion.quick_start.quick_start import run

__all__ = ["load_data_and_model", "run"]
