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
    settings = {**settings, **_pretrained_stages(model, settings)}
    result = run(model, MODELS_DATASET, config_dict=settings)
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0
    resumed = run(model, MODELS_DATASET, config_dict={**settings, "resume": True})
    assert resumed["resumed_from"] == result["last_checkpoint_file"]
    config, _, dataset, *_ = load_data_and_model(result["saved_model_file"])
    if config["MODEL_TYPE"] in recommend.SUPPORTED_MODEL_TYPES:
        user = dataset.id2token(dataset.uid_field, 1)
        assert recommend.main([f"--model_file={result['saved_model_file']}", f"--users={user}", "--k=5"]) == 0


def _pretrained_stages(model, settings):
    """A staged model's (RaCT, S3Rec) pretraining stages, run one epoch each, each reading the file the one before
    saved: the settings of its finetune stage (``{}`` for other models). Each file reads under ``weights_only``."""
    from recbole_diffusion.utils.staged_models import NEXT_STAGE

    stage, finetune = {"RaCT": "actor_pretrain", "S3Rec": "pretrain"}.get(model), {}
    while stage and stage != "finetune":
        result = run(model, MODELS_DATASET, config_dict={**settings, **finetune, "train_stage": stage,
                                                          "pretrain_epochs": 1, "save_step": 1})
        assert "test_result" not in result and result["next_train_stage"] == NEXT_STAGE[model][stage]
        assert torch.load(result["pretrained_model_file"], weights_only=True)["state_dict"]  # tensors only
        moved = os.path.join(os.path.dirname(result["pretrained_model_file"]), f"{stage}.pth")
        os.replace(result["pretrained_model_file"], moved)  # the next stage would save over it
        stage, finetune = result["next_train_stage"], {"train_stage": result["next_train_stage"],
                                                       "pre_model_path": moved}
    return finetune


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


def test_a_pretraining_stage_resumes_and_its_refusals_come_before_anything_is_written(models_data, tmp_path,
                                                                                      monkeypatch, capsys):
    """S3Rec's pretraining continues from its last checkpoint when pretrain_epochs grows (as epochs may), and its
    weights are not taken for a tested run's checkpoint by ``recommend``; a stage
    that would save nothing, save over the file it loads, or run in several processes is refused first, and so
    are compare and tune, which need a tested model."""
    from recbole_diffusion.compare import prepare_comparison
    from recbole_diffusion.tune.search import prepare_search

    monkeypatch.chdir(tmp_path)
    settings = {**EVERY_MODEL_SETTINGS, "data_path": models_data, "save_step": 1}
    first = run("S3Rec", MODELS_DATASET, config_dict={**settings, "pretrain_epochs": 1})
    assert first["epochs_trained"] == 1 and first["pretrained_model_file"].endswith("S3Rec-ml-100k-models-1.pth")
    more = run("S3Rec", MODELS_DATASET, config_dict={**settings, "pretrain_epochs": 2, "resume": True})
    assert more["resumed_from"] == first["last_checkpoint_file"] and more["epochs_trained"] == 2
    assert more["pretrained_model_file"].endswith("S3Rec-ml-100k-models-2.pth")
    assert recommend.main([f"--model_file={more['pretrained_model_file']}", "--users=1"]) == 2
    assert "holds a pretraining stage's weights" in capsys.readouterr().err
    written = sorted(os.listdir(tmp_path / "saved"))

    refusals = {
        "save nothing": ({"pretrain_epochs": 2, "save_step": 5}, "would save nothing"),
        "save over its input": ({"train_stage": "critic_pretrain", "pretrain_epochs": 1,
                                 "pre_model_path": "saved/RaCT-ml-100k-models-1.pth"}, "save its own weights over"),
        "no input": ({"train_stage": "critic_pretrain"}, "pre_model_path, which is not set"),
        "two processes": ({"nproc": 2}, "runs in one process"),
    }
    for name, (extra, message) in refusals.items():
        with pytest.raises(ValueError, match=message):
            run("RaCT", MODELS_DATASET, config_dict={**settings, **extra})
    with pytest.raises(ValueError, match="compare has nothing to rank.*--train_stage=finetune"):
        prepare_comparison(["S3Rec"], MODELS_DATASET, [2020], str(tmp_path / "out"), overrides=settings)
    with pytest.raises(ValueError, match="tune has nothing to rank"):
        space = tmp_path / "S3Rec.hyper"
        space.write_text("learning_rate loguniform -9.21,-4.61\n", encoding="utf-8")
        prepare_search("S3Rec", MODELS_DATASET, [], settings, space_file=str(space), directory=str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path / "saved")) == written and not (tmp_path / "out").exists()
