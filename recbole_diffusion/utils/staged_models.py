"""RecBole's staged models (S3Rec, RaCT): which ``train_stage`` pretrains, and which stage reads what it saved.

A leaf, read by the configuration's checks (what a stage needs), the trainer (how many epochs a stage has) and the
pipeline (what a pretraining run returns).
"""

import os

# Each model's pretraining stages -> the stage that loads their weights through ``pre_model_path``.
NEXT_STAGE = {"S3Rec": {"pretrain": "finetune"},
              "RaCT": {"actor_pretrain": "critic_pretrain", "critic_pretrain": "finetune"}}


def pretraining_stage(config):
    """The ``train_stage`` of a staged model's pretraining, which saves weights and tests nothing; ``None`` for
    every other run."""
    stage = config["train_stage"]
    return stage if isinstance(stage, str) and stage in NEXT_STAGE.get(config["model"], {}) else None


def next_stage(config):
    """The stage that reads what this pretraining stage saves."""
    return NEXT_STAGE[config["model"]][pretraining_stage(config)]


def saved_weights(config):
    """The files a pretraining stage writes, oldest first: RecBole's ``<model>-<dataset>-<epoch>.pth`` in
    ``checkpoint_dir`` every ``save_step`` epochs up to ``pretrain_epochs``."""
    step = config["save_step"]
    return [os.path.join(config["checkpoint_dir"], f"{config['model']}-{config['dataset']}-{epoch}.pth")
            for epoch in range(step, config["pretrain_epochs"] + 1, step)]
