"""RecBole's models through the runner: the ones that train on sampled negatives or labels get RecBole's default
negative sampling (and say so), the protocol's models keep theirs, feature-aware models checkpoint, and the
external-library models name what they miss."""

import importlib.util

import pytest
import torch
from torch import nn

import recbole_diffusion.trainer.checkpoint as ckpt
from recbole_diffusion.config.configurator import build_config, get_model_class
from recbole_diffusion.quick_start.quick_start import run
from conftest import TINY


@pytest.mark.parametrize("model, extra", [("BPR", {}), ("NeuMF", {}), ("SASRec", {"loss_type": "BPR"}),
                                          ("FPMC", {}), ("LightGCN", {})])
def test_models_that_need_negatives_get_recboles_sampling_and_say_so(model, extra, data_root, tmp_path, capsys):
    settings = {**TINY, "data_path": data_root, "epochs": 1, "checkpoint_dir": str(tmp_path), **extra}
    config, _ = build_config(model, "ml-100k-tiny", config_dict=settings)
    assert config["train_neg_sample_args"]["distribution"] == "uniform"
    assert "gets RecBole's default train_neg_sample_args" in capsys.readouterr().err
    result = run(model, "ml-100k-tiny", config_dict=settings)
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0


@pytest.mark.parametrize("model, extra", [("SASRec", {}), ("GRU4Rec", {}), ("Pop", {}), ("DiffuRec", {}),
                                          ("PreferDiff", {}),
                                          ("BPR", {"train_neg_sample_args": {"distribution": "popularity",
                                                                             "sample_num": 2}})])
def test_the_protocol_and_a_users_choice_are_kept(model, extra, data_root, capsys):
    config, _ = build_config(model, "ml-100k-tiny", config_dict={**TINY, "data_path": data_root, **extra})
    expected = extra["train_neg_sample_args"]["distribution"] if extra else "none"
    assert config["train_neg_sample_args"]["distribution"] == expected
    assert "gets RecBole's default" not in capsys.readouterr().err


def test_a_module_that_other_parameter_names_is_left_to_the_state_dict():
    """RecBole's feature-aware models (SASRecF, FDSA, DIN, ...) name their FeatureSeqEmbLayer in other_parameter()."""
    class FeatureAware(nn.Module):
        other_parameter_name = ["feature_embed_layer", "counts"]

        def __init__(self):
            super().__init__()
            self.feature_embed_layer = nn.Linear(2, 2)
            self.counts = torch.arange(3)

        def other_parameter(self):
            return {key: getattr(self, key) for key in self.other_parameter_name}

    extra = ckpt.model_extra_state(FeatureAware())
    assert set(extra["other_parameter"]) == {"counts"}


@pytest.mark.skipif(importlib.util.find_spec("xgboost") and importlib.util.find_spec("lightgbm"),
                    reason="xgboost and lightgbm are installed")
@pytest.mark.parametrize("model", ["XGBoost", "LightGBM"])
def test_an_external_library_model_names_the_missing_library(model):
    with pytest.raises(ValueError, match=r"import xgboost and lightgbm.*pip install xgboost lightgbm"):
        get_model_class(model)
