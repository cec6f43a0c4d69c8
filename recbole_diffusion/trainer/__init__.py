"""Training: the trainer layer every run goes through (:mod:`.trainer`) and its checkpoints (:mod:`.checkpoint`)."""

from recbole_diffusion.trainer.trainer import PluginTrainerMixin, TrainingPreempted, get_trainer

__all__ = ["PluginTrainerMixin", "TrainingPreempted", "get_trainer"]
