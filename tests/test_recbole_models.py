"""RecBole's models through the runner: the ones that train on sampled negatives or labels get RecBole's default
negative sampling (and say so), the protocol's models keep theirs, feature-aware models checkpoint, and the
external-library models name what they miss."""

import importlib.util
import os

import pytest
import torch
from torch import nn

import recbole_diffusion.trainer.checkpoint as ckpt
from recbole_diffusion import recommend
from recbole_diffusion.quick_start.inference import load_data_and_model
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


@pytest.mark.parametrize("model", ["NCL", "KGAT", "KGIN", "MCCLK"])
def test_a_model_that_imports_a_library_when_it_trains_names_it_first(model):
    """NCL imports faiss in its first epoch, KGAT dgl when built, KGIN and MCCLK torch_scatter in forward: without
    them a run ended in a traceback after its log was written."""
    from recbole_diffusion.config.configurator import MODEL_LIBRARIES

    library = MODEL_LIBRARIES[model][0]
    if importlib.util.find_spec(library) is not None:
        pytest.skip(f"{library} is installed")
    with pytest.raises(ValueError, match=f"{model}.*imports {library}.*not installed"):
        get_model_class(model)


# --- every RecBole model class through the runner ------------------------------------------------------------------

MODELS_DATASET = "ml-100k-models"
# Small sizes for every model (a key a model does not read is ignored); the slice's users have few items each.
EVERY_MODEL_SETTINGS = {"epochs": 1, "train_batch_size": 512, "eval_batch_size": 512, "show_progress": False,
                        "state": "ERROR", "embedding_size": 8, "hidden_size": 8, "inner_size": 16,
                        "MAX_ITEM_LIST_LENGTH": 10}
# What some models need at this size: DGCF samples more users and items for its correlation loss than the slice
# has; FEARec divides by n_layers - 1; ConvNCF's convolutions need its default embedding of 64.
EVERY_MODEL_OVERRIDES = {"DGCF": {"cor_weight": 0}, "FEARec": {"n_layers": 2}, "ConvNCF": {"embedding_size": 64}}
# Models this package cannot run, with the one message that says why (before anything is written).
REFUSED = {
    "RaCT": "pretraining stage", "S3Rec": "pretraining stage",  # RecBole's PretrainTrainer pickles its files
    "GRU4RecKG": "ml-100k-models.ent] not found", "KSR": "ml-100k-models.ent] not found",  # pretrained entities
}


@pytest.fixture(scope="module")
def models_data(tmp_path_factory):
    """The first 60 users of RecBole's ml-100k copy with every atomic file: .inter (all columns), .item, .user,
    .link and the .kg triples whose head is a linked item's entity."""
    import shutil

    from recbole_diffusion.data.slices import ML100K_INTER, write_user_slice

    root = str(tmp_path_factory.mktemp("every-model"))
    write_user_slice(ML100K_INTER, MODELS_DATASET, 60, root)
    source, target = os.path.dirname(ML100K_INTER), os.path.join(root, MODELS_DATASET)
    for kind in ("item", "user", "link"):
        shutil.copy(os.path.join(source, f"ml-100k.{kind}"), os.path.join(target, f"{MODELS_DATASET}.{kind}"))
    with open(os.path.join(source, "ml-100k.link"), encoding="utf-8") as handle:
        entities = {line.rstrip("\n").split("\t")[1] for line in list(handle)[1:]}
    with open(os.path.join(source, "ml-100k.kg"), encoding="utf-8") as handle, \
            open(os.path.join(target, f"{MODELS_DATASET}.kg"), "w", encoding="utf-8") as kept:
        kept.write(handle.readline())
        kept.writelines(line for line in handle if line.split("\t", 1)[0] in entities)
    return root


def _recbole_models():
    from recbole_diffusion.config.configurator import recbole_model_names

    return recbole_model_names()


@pytest.mark.parametrize("model", _recbole_models())
def test_every_recbole_model_runs_through_the_runner_or_is_refused_saying_why(model, models_data, tmp_path,
                                                                              monkeypatch):
    """RecBole's promise through this runner: each model class trains one epoch and is tested under the protocol
    (its own defaults where the protocol does not apply), or is refused with one message naming why before
    anything is written. A model whose external library is absent is skipped, naming it. Then the package's own
    promises on that model: ``resume: True`` finds and loads its last checkpoint (optimizers included), its best
    checkpoint loads safely with its data, and ``recommend`` ranks for a user (every model type but RecBole's
    decision trees, XGBoost and LightGBM)."""
    import importlib.util

    from recbole_diffusion.config.configurator import MODEL_LIBRARIES

    library = MODEL_LIBRARIES.get(model, (None,))[0] or {"XGBoost": "xgboost", "LightGBM": "lightgbm"}.get(model)
    if library and importlib.util.find_spec(library) is None:
        pytest.skip(f"{model} needs {library}, which is not installed (the runner names it: see "
                    "test_an_external_library_model_names_the_missing_library)")
    monkeypatch.chdir(tmp_path)
    settings = {**EVERY_MODEL_SETTINGS, **EVERY_MODEL_OVERRIDES.get(model, {}), "data_path": models_data}
    if model in REFUSED:
        with pytest.raises(ValueError, match=REFUSED[model]):
            run(model, MODELS_DATASET, config_dict=settings)
        assert not any(os.path.exists(tmp_path / name) for name in ("log", "saved", "log_tensorboard"))
        return
    result = run(model, MODELS_DATASET, config_dict=settings)
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0
    resumed = run(model, MODELS_DATASET, config_dict={**settings, "resume": True})
    assert resumed["resumed_from"] == result["last_checkpoint_file"]
    config, _, dataset, *_ = load_data_and_model(result["saved_model_file"])
    if config["MODEL_TYPE"] in recommend.SUPPORTED_MODEL_TYPES:
        user = dataset.id2token(dataset.uid_field, 1)
        assert recommend.main([f"--model_file={result['saved_model_file']}", f"--users={user}", "--k=5"]) == 0


def test_a_context_aware_model_on_ml100k_loads_the_column_its_recbole_defaults_label_by():
    """RecBole's own defaults for its context-aware models on ml-100k label interactions by rating >= 4
    (``threshold``): the protocol's load_col, which loads user, item and time only, takes that column too, so the
    data check passes instead of refusing a run that RecBole makes."""
    from recbole_diffusion.data import checks

    config, _ = build_config("FM", "ml-100k")
    assert config["threshold"] == {"rating": 4}
    assert config["load_col"]["inter"] == ["user_id", "item_id", "timestamp", "rating"]
    checks.check_interaction_files(config)
    config, _ = build_config("SASRec", "ml-100k", config_dict={"val_interval": {"rating": "[3,inf)"}})
    assert "rating" in config["load_col"]["inter"]  # RecBole would stop at "Field [rating] not defined" otherwise
