"""The configuration of a run: RecBole's ``Config`` merged in this package's order, then checked.

Merged lowest first: RecBole's defaults, this package's ``properties/overall.yaml`` (the shared evaluation protocol),
``properties/model/<Model>.yaml`` (and a variant's YAML), ``properties/dataset/<dataset>.yaml``, the user's config
files, then ``config_dict`` / ``--key=value``. :func:`build_config` checks the merged keys
(:mod:`recbole_diffusion.config.checks`) and the interaction file line by line (:mod:`recbole_diffusion.data.checks`)
before a log file or checkpoint is written, and finds the data folder.
"""

import difflib
import importlib
import importlib.util
import inspect
import os
import re
import socket
import sys
from importlib import resources
from urllib.parse import urlparse

import recbole
import yaml
from recbole.config import Config
from recbole.utils import InputType, ModelType, argument_list, get_model

from recbole_diffusion.config.checks import check_config_file, check_data_keys, check_item_table, check_model_config
from recbole_diffusion.data import checks as data_checks
from recbole_diffusion.data.slices import write_merged_dataset
from recbole_diffusion.model import MODELS
from recbole_diffusion.text.item_vectors import default_cache_dir
from recbole_diffusion.utils.checks import fail, require_int
from recbole_diffusion.utils.collectives import join_group, single_device
from recbole_diffusion.utils.staged_models import next_stage, pretraining_stage, saved_weights

DEFAULT_MODEL = "DiffuRec"
DEFAULT_DATASET = "ml-100k"
DATA_ENV_VAR = "RECBOLE_DIFFUSION_DATA"
RECBOLE_DATA_FOLDER = "dataset"  # RecBole's default data_path (overall.yaml), which it replaces for ml-100k
# RecBole's own default train_neg_sample_args (recbole/properties/overall.yaml).
RECBOLE_NEGATIVE_SAMPLING = {"distribution": "uniform", "sample_num": 1, "alpha": 1.0, "dynamic": False,
                             "candidate_num": 0}
RECBOLE_SUBPACKAGES = ("general_recommender", "sequential_recommender", "context_aware_recommender",
                       "knowledge_aware_recommender")
# Keys RecBole reads without declaring them in a YAML file.
RECBOLE_RUNTIME_KEYS = {"model", "dataset", "config_files", "nproc", "world_size", "offset", "ip", "port",
                        "local_rank", "gpu_id", "use_gpu", "benchmark_filename", "wandb_project", "log_wandb",
                        "enable_amp", "enable_scaler", "transform", "numerical_features", "discretization",
                        "train_neg_sample_args", "valid_neg_sample_args", "test_neg_sample_args", "ddp_backend",
                        "encoding"}


def properties_file(*parts):
    """Path of a YAML file shipped in ``properties/`` (works for editable and regular installs)."""
    return str(resources.files("recbole_diffusion.properties").joinpath(*parts))


def _recbole_properties(*parts):
    return os.path.join(os.path.dirname(recbole.__file__), "properties", *parts)


def recbole_model_names():
    """Class names of RecBole's built-in models, read from its model subpackages."""
    names = []
    for subpackage in RECBOLE_SUBPACKAGES:
        module = importlib.import_module(f"recbole.model.{subpackage}")
        names += [name for name in dir(module) if isinstance(getattr(module, name), type)]
    return sorted(set(names))


def model_variants():
    """Variant names, from ``properties/model/variants/<Model>-<variant>.yaml`` (e.g. ``DiffuRecSys-V1``)."""
    folder = resources.files("recbole_diffusion.properties").joinpath("model", "variants")
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


# RecBole models that import a library RecBole does not require, only when they train: named before anything runs.
MODEL_LIBRARIES = {"NCL": ("faiss", "pip install faiss-cpu"), "KGAT": ("dgl", "see https://www.dgl.ai"),
                   "KGIN": ("torch_scatter", "pip install torch-scatter"),
                   "MCCLK": ("torch_scatter", "pip install torch-scatter")}


def get_model_class(name):
    """Look ``name`` up among this package's models first, then RecBole's; list both when it is unknown."""
    if name in MODELS:
        return MODELS[name]
    if name in MODEL_LIBRARIES and importlib.util.find_spec(MODEL_LIBRARIES[name][0]) is None:
        library, install = MODEL_LIBRARIES[name]
        raise ValueError(f"model={name!r} is RecBole's, but it imports {library} when it trains, and {library} is "
                         f"not installed ({install})")
    try:
        return get_model(name)
    except ImportError as missing:  # RecBole's exlib package imports xgboost and lightgbm (any name reaching it)
        exlib = os.path.join(os.path.dirname(recbole.__file__), "model", "exlib_recommender", f"{name.lower()}.py")
        if os.path.isfile(exlib):
            library = missing.name or str(missing)
            raise ValueError(f"model={name!r} is RecBole's, but RecBole's external-library models (XGBoost, LightGBM) "
                             f"import xgboost and lightgbm, and {library} is not installed (pip install xgboost "
                             "lightgbm)") from None
    except (ValueError, AttributeError):
        pass
    known = sorted(MODELS) + model_variants() + recbole_model_names()
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"Did you mean {' or '.join(close)}? " if close else ""
    raise ValueError(
        f"model={name!r} is not a model of recbole_diffusion nor of RecBole. {hint}This package's: "
        f"{', '.join(sorted(MODELS))} (variants: {', '.join(model_variants())}); RecBole's include SASRec, BERT4Rec, "
        f"GRU4Rec and {len(known) - len(MODELS) - len(model_variants()) - 3} more (recbole.model).")


def resolve_model(name):
    """``(model class, model name, variant YAML or None)`` for a model name or a variant name."""
    if name in model_variants():
        base = name.split("-")[0]
        return get_model_class(base), base, properties_file("model", "variants", f"{name}.yaml")
    return get_model_class(name), name, None


class PluginConfig(Config):
    """RecBole's ``Config`` without its own reading of ``sys.argv`` (overrides arrive as ``config_dict``), with
    this package's process-group set-up where RecBole's asserts a GPU per process and joins with NCCL, and a
    scheduler's ``CUDA_VISIBLE_DEVICES`` kept where RecBole overwrites it with ``gpu_id``."""

    def _load_cmd_line(self):
        return dict()

    def _init_device(self):
        if "local_rank" in self.final_config_dict:
            join_group(self.final_config_dict)
        else:
            single_device(self.final_config_dict)


def _read_yaml_keys(path):
    if not os.path.isfile(path):
        return set()
    with open(path, encoding="utf-8") as handle:
        return set((yaml.safe_load(handle) or {}).keys())


def config_file_keys(paths):
    """Every key the YAML files ``paths`` set."""
    return set().union(*(_read_yaml_keys(path) for path in paths or []))


def config_file_values(path):
    """A user's YAML file as RecBole's ``Config`` reads it (its loader makes ``1e-3`` a float, not a string).

    RecBole's loader builder and converter below use nothing of the instance they are methods of."""
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle.read(), Loader=Config._build_yaml_loader(None)) or {}


def override_values(config_dict):
    """``--key=value`` strings as RecBole's ``Config`` converts them (numbers, lists, dicts, booleans)."""
    return Config._convert_config_dict(None, dict(config_dict))


def _default_yaml_files(model_name, dataset):
    """RecBole's and this package's YAML files of defaults for ``model_name`` on ``dataset``, lowest first."""
    return [_recbole_properties("overall.yaml"), _recbole_properties("dataset", "sample.yaml"),
            _recbole_properties("dataset", f"{dataset}.yaml"), _recbole_properties("model", f"{model_name}.yaml"),
            properties_file("overall.yaml"), properties_file("model", f"{model_name}.yaml"),
            properties_file("dataset", f"{dataset}.yaml")]


def known_config_keys(model_name, dataset):
    """Every key that RecBole's defaults, RecBole's or this package's model and dataset YAMLs define."""
    keys = set(RECBOLE_RUNTIME_KEYS)
    for names in (argument_list.general_arguments, argument_list.training_arguments,
                  argument_list.evaluation_arguments, argument_list.dataset_arguments):
        keys |= set(names)
    for path in _default_yaml_files(model_name, dataset):
        keys |= _read_yaml_keys(path)
    return keys


# A top-level key whose line ends in a type annotation, as RecBole's YAML files write them: "epochs: 300  # (int) ..."
_ANNOTATED_LINE = re.compile(r"^([A-Za-z_]\w*)\s*:[^#]*#\s*\(([^)]+)\)")


def declared_types(model_name, dataset):
    """``{key: annotation}`` from the ``# (int)``, ``# (float)``, ``# (bool)`` ... comments of the YAML files of
    defaults (a later file's annotation wins): the types RecBole documents, which the checks follow rather than the
    type of a default's value (FEARec's ``global_ratio: 1`` is annotated ``(float)``)."""
    types = {}
    for path in _default_yaml_files(model_name, dataset):
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    match = _ANNOTATED_LINE.match(line)
                    if match:
                        types[match.group(1)] = match.group(2).strip().lower()
    return types


def warn_unknown_keys(user_keys, model_name, dataset):
    """Warn about keys no YAML or RecBole default defines: a typo would otherwise be ignored silently."""
    known = known_config_keys(model_name, dataset)
    messages = []
    for key in sorted(set(user_keys) - known):
        close = difflib.get_close_matches(key, known, n=2)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        messages.append(f"config key {key!r} is not used by {model_name} or RecBole{hint}")
    for message in messages:
        print(f"WARNING: {message}", file=sys.stderr)
    return messages


def _url_reachable(url, timeout=3.0):
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_data_path(config, data_path_given):
    """Point ``config['data_path']`` at the dataset's folder, or fail fast with where it was looked for.

    Without an explicit ``data_path`` the folders tried are RecBole's default (``dataset/<name>``),
    ``$RECBOLE_DIFFUSION_DATA/<name>``, ``../shared/data/<name>`` beside this checkout (the project's
    benchmark data), and last the copy inside the installed ``recbole`` package (ml-100k): the same order for every
    dataset, so a user's own ``dataset/ml-100k`` is read, where RecBole always reads its own copy. Pre-split files
    (``benchmark_filename``) are looked for by their first part, ``<name>.<part>.inter``; when none is found the data
    check names the file.
    """
    dataset = config["dataset"]
    parts = config["benchmark_filename"]
    file_name = f"{dataset}.{parts[0]}.inter" if parts else f"{dataset}.inter"
    bundled = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", dataset)
    if data_path_given:
        candidates = [config["data_path"]]
    else:
        checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        recbole_default = config["data_path"] if dataset != "ml-100k" else os.path.join(RECBOLE_DATA_FOLDER, dataset)
        candidates = [recbole_default]
        candidates += [os.path.join(os.environ[DATA_ENV_VAR], dataset)] if os.environ.get(DATA_ENV_VAR) else []
        candidates += [os.path.join(checkout, "..", "shared", "data", dataset), bundled]
    tried = []
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, file_name)):
            config["data_path"] = os.path.normpath(folder)
            return
        tried.append(os.path.normpath(folder))
    if parts:
        return  # RecBole downloads no pre-split files; the data check names the missing file
    with open(_recbole_properties("dataset", "url.yaml"), encoding="utf-8") as handle:
        url = (yaml.safe_load(handle) or {}).get(dataset)
    ours = os.path.isfile(properties_file("dataset", f"{dataset}.yaml"))
    if url and not ours and _url_reachable(url):
        return  # RecBole downloads it into data_path
    reason = ("with a data_path given, ml-100k is read from there (leave data_path out to use the copy inside the "
              "recbole package)" if dataset == "ml-100k" and data_path_given
              else "RecBole's copy under that name is a different preprocessing, so it is not downloaded" if ours
              else f"RecBole's download address {url} cannot be reached" if url
              else "RecBole knows no download for that name")
    raise FileNotFoundError(
        f"dataset {dataset!r} not found: looked for {dataset}.inter in {', '.join(tried)}; {reason}. "
        f"Pass --data_path=<folder that holds {dataset}/{dataset}.inter> (for this project's benchmark sets: "
        f"--data_path=../shared/data) or set {DATA_ENV_VAR}."
    )


def merge_config(model=None, dataset=None, config_file_list=None, config_dict=None):
    """The configuration merged in this package's order, unchecked: ``(config, model_class, model name, keys the
    user set)``. With ``local_rank`` in ``config_dict`` this process joins the distributed run's process group."""
    dataset = dataset or DEFAULT_DATASET
    model_class, model, variant = resolve_model(model or DEFAULT_MODEL)
    user_files = list(config_file_list or [])
    config_dict = dict(config_dict or {})
    for path in user_files:
        check_config_file(path)
    user_keys = set(config_dict) | config_file_keys(user_files)
    files = [properties_file("overall.yaml")]
    files += [path for path in (properties_file("model", f"{model}.yaml"), variant,
                                properties_file("dataset", f"{dataset}.yaml")) if path and os.path.isfile(path)]
    user_files = [path for path in user_files if _read_yaml_keys(path)]  # a file of only comments sets nothing
    try:
        config = PluginConfig(model=model_class, dataset=dataset, config_file_list=files + user_files,
                              config_dict=config_dict)
        if "train_neg_sample_args" not in user_keys and needs_sampled_negatives(config, model_class):
            config = PluginConfig(model=model_class, dataset=dataset, config_file_list=files + user_files,
                                  config_dict={**config_dict, "train_neg_sample_args": RECBOLE_NEGATIVE_SAMPLING})
            print(f"note: {model} trains on sampled negatives or labels: it gets RecBole's default "
                  f"train_neg_sample_args {RECBOLE_NEGATIVE_SAMPLING} (the protocol's CE without negatives does not "
                  "apply to it; set train_neg_sample_args to choose)", file=sys.stderr)
    except (TypeError, AttributeError) as error:  # RecBole's Config on a value of the wrong type, e.g. topk
        raise ValueError(f"the configuration has a value of the wrong type: {error}") from None
    except (NotImplementedError, RuntimeError, KeyError) as error:
        refusal = _recbole_metrics_refusal(error)
        if refusal is None:
            raise
        raise ValueError(refusal) from None
    if "load_col" not in user_keys:
        follow_renamed_fields(config, user_keys)
        load_what_the_model_reads(config)
    return config, model_class, model, user_keys


# What RecBole's Config raises for metrics it cannot evaluate (recbole/config/configurator.py).
RECBOLE_METRIC_REFUSALS = ("There is no metric named", "can not be used at the same time", "Full sort evaluation")


def _recbole_metrics_refusal(error):
    """The one-line message for RecBole's ``Config`` refusing ``metrics``; ``None`` for any other error."""
    if isinstance(error, KeyError) and "pop from an empty set" in str(error):
        return "metrics=[]: name at least one metric, e.g. --metrics=\"['Hit', 'NDCG']\""
    if any(text in str(error) for text in RECBOLE_METRIC_REFUSALS):
        return f"RecBole refuses the metrics: {error}"
    return None


# RecBole's default names of the columns a run needs (recbole/properties/overall.yaml).
RECBOLE_FIELD_NAMES = {"USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp"}


def follow_renamed_fields(config, user_keys):
    """The protocol's ``load_col`` names RecBole's default columns; when the user renames one
    (``--USER_ID_FIELD=uid``) without setting ``load_col``, it loads the renamed column instead."""
    load_col = config["load_col"]
    renamed = {RECBOLE_FIELD_NAMES[key]: config[key] for key in RECBOLE_FIELD_NAMES
               if key in user_keys and config[key] is not None}
    if not renamed or not isinstance(load_col, dict) or not isinstance(load_col.get("inter"), list):
        return
    columns = [renamed.get(name, name) for name in load_col["inter"]]
    columns += [name for name in renamed.values() if name not in columns]
    config["load_col"] = {**load_col, "inter": list(dict.fromkeys(columns))}


def check_optional_library(config, model_name):
    """LDiffRec clusters its items with ``kmeans_pytorch`` when ``n_cate`` > 1: named before anything runs."""
    if model_name == "LDiffRec" and isinstance(config["n_cate"], int) and config["n_cate"] > 1 \
            and importlib.util.find_spec("kmeans_pytorch") is None:
        raise ValueError(f"n_cate={config['n_cate']}: LDiffRec then clusters items with kmeans_pytorch, which is not "
                         "installed (pip install kmeans-pytorch); n_cate: 1 needs no library")


def refuse_pretraining(config, entry):
    """``entry`` (compare, tune) needs a tested model, which a pretraining stage does not make."""
    stage = pretraining_stage(config)
    if stage:
        raise ValueError(f"train_stage={stage!r}: {config['model']}'s pretraining saves weights and tests nothing, so "
                         f"{entry} has nothing to rank. Pretrain with run_recbole_diffusion.py, then {entry} its "
                         f"next stage: --train_stage={next_stage(config)} --pre_model_path=<the file it saved>.")


def check_training_stage(config, model_name):
    """RecBole's staged models (RaCT, S3Rec): a pretraining stage runs in RecBole's ``PretrainTrainer`` (one process,
    weights saved every ``save_step`` epochs as tensors, :meth:`PluginTrainerMixin.save_pretrained_model`), and the
    stage after it needs ``pre_model_path``. Refused before anything runs: a stage that would save nothing, or that
    would save over the file it loads."""
    stage = config["train_stage"]
    if not isinstance(stage, str) or model_name in MODELS:
        return
    if stage in ("finetune", "critic_pretrain") and not config["pre_model_path"]:
        raise ValueError(f"train_stage={stage!r}: {model_name} loads its pretrained weights from pre_model_path, "
                         "which is not set; name the file its previous stage saved.")
    if not pretraining_stage(config):
        return
    if int(config["nproc"] or 1) > 1 or int(config["world_size"] or 1) > 1:
        raise ValueError(f"train_stage={stage!r}: {model_name}'s pretraining runs in one process (RecBole's "
                         "PretrainTrainer); leave nproc / world_size at 1")
    epochs, step = require_int(config, "pretrain_epochs", 1), require_int(config, "save_step", 1)
    if epochs < step:
        raise ValueError(f"pretrain_epochs={epochs}, save_step={step}: RecBole saves the pretrained weights every "
                         f"save_step epochs, so this stage would save nothing; set save_step <= pretrain_epochs")
    if epochs % step:
        print(f"note: pretrain_epochs={epochs}, save_step={step}: RecBole saves the weights every save_step epochs, so "
              f"the last {epochs % step} epoch(s) train but are not saved; the last file is epoch "
              f"{epochs - epochs % step}'s", file=sys.stderr)
    written = {os.path.abspath(path) for path in saved_weights(config)}
    if config["pre_model_path"] and os.path.abspath(config["pre_model_path"]) in written:
        raise ValueError(f"pre_model_path={config['pre_model_path']!r}: train_stage {stage!r} would save its own "
                         "weights over this file (RecBole names them <model>-<dataset>-<epoch>.pth in checkpoint_dir); "
                         "rename or move it, or set another checkpoint_dir.")


def check_threshold(config, model_name):
    """RecBole's ``threshold`` turns one loaded column into 0/1 labels (and drops the column): one column and its
    value (the data check refuses a column that is not loaded), noted for a sequential model, which reads no labels,
    and for any ranking evaluation (``eval_args`` mode full, uniN, popN: only ``labeled`` reads them), where every
    interaction stays a possible target."""
    threshold = config["threshold"]
    if threshold is None:
        return
    if not isinstance(threshold, dict) or len(threshold) != 1:
        raise ValueError(f"threshold={threshold!r}: must name one column and its value, e.g. {{'rating': 4}}")
    (field, value), = threshold.items()
    modes = (config["eval_args"] or {}).get("mode") or {}
    ranked = all(str(mode) != "labeled" for mode in (modes.values() if isinstance(modes, dict) else [modes]))
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL or ranked:
        reader = (f"{model_name} (a sequential model) does not read: every interaction stays in the histories and "
                  "can be a target" if config["MODEL_TYPE"] == ModelType.SEQUENTIAL else
                  f"a ranking evaluation (eval_args mode {modes}) does not read: every interaction can be a target")
        print(f"note: threshold={threshold!r} gives each interaction a 0/1 label, which {reader}. To keep only the "
              f"interactions with {field} >= {value}, set val_interval: {{{field}: '[{value},inf)'}} instead.",
              file=sys.stderr)


def load_what_the_model_reads(config):
    """The protocol's ``load_col`` loads the interaction file alone (RecBole loads no other atomic file a
    ``load_col`` does not name). A knowledge-aware model also gets the knowledge graph and the item-entity links
    (``.kg``, ``.link``), and a model that reads item features (``selected_features`` of SASRecF, GRU4RecF, FDSA,
    ``item_attribute`` of S3Rec) the item file's id and those features. The interaction columns that ``threshold``,
    ``val_interval`` and ``unused_col`` name are loaded too (RecBole's own ml-100k defaults for its context-aware
    models label by ``rating``)."""
    load_col = config["load_col"]
    if not isinstance(load_col, dict):
        return
    inter = load_col.get("inter")
    named = [*(config["threshold"] or {}), *(config["val_interval"] or {}),
             *(config["unused_col"] or {}).get("inter", [])]
    if isinstance(inter, list) and any(field not in inter for field in named):
        load_col = {**load_col, "inter": inter + [field for field in dict.fromkeys(named) if field not in inter]}
        config["load_col"] = load_col
    added = {}
    if config["MODEL_TYPE"] == ModelType.KNOWLEDGE:
        added["kg"] = [config["HEAD_ENTITY_ID_FIELD"], config["RELATION_ID_FIELD"], config["TAIL_ENTITY_ID_FIELD"]]
        added["link"] = [config["ITEM_ID_FIELD"], config["ENTITY_ID_FIELD"]]
    features = [*(config["selected_features"] if isinstance(config["selected_features"], list) else []),
                *([config["item_attribute"]] if isinstance(config["item_attribute"], str) else [])]
    if features:
        added["item"] = [config["ITEM_ID_FIELD"], *dict.fromkeys(features)]
    if added:
        config["load_col"] = {**load_col, **{key: value for key, value in added.items() if key not in load_col}}


def needs_sampled_negatives(config, model_class):
    """Whether a RecBole model trains on what RecBole's negative sampler makes, which the protocol turns off
    (``properties/overall.yaml``: CE over all items): a sequential model with ``loss_type: BPR``, any model with a
    pairwise input (FPMC, TransRec, BPR, LightGCN, KGAT, ...), or a pointwise one that reads labels (NeuMF, DMF,
    the context-aware FM, DeepFM, ..., and DIN, DIEN), which the sampler makes. This package's models and every other
    RecBole model keep the protocol."""
    if model_class.__name__ in MODELS:
        return False
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL and config["loss_type"] == "BPR":
        return True
    input_type = getattr(model_class, "input_type", None)
    if input_type == InputType.PAIRWISE:
        return True
    if input_type != InputType.POINTWISE:
        return False
    try:  # the whole class: MKR reads its labels in a helper of calculate_loss
        return "self.LABEL" in inspect.getsource(model_class)
    except (OSError, TypeError):  # no source to read (a compiled or zipped install): keep the protocol
        return False


def model_config_keys(model_name):
    """The keys of a model class's own YAML (``properties/model/<Model>.yaml``), but the item-table keys."""
    return sorted(key for key in config_file_keys([properties_file("model", f"{model_name}.yaml")])
                  if not key.startswith(("item_table", "item_text", "text_")))


def merge_source_datasets(config, model):
    """``merge_datasets``: write the merge of the listed datasets (each ``<data_path>/<source>/``) to
    ``<text_cache_dir>/merged/<dataset>/`` and read the run's data from there (the data folder may be read-only).
    Each source passes the data checks (its text fields, its interaction file) before the merge is written, which
    itself checks the sources' headers before writing."""
    sources = config["merge_datasets"]
    if isinstance(sources, str) or not isinstance(sources, (list, tuple)) or len(sources) < 2 or \
            len(set(sources)) != len(sources) or not all(isinstance(source, str) for source in sources):
        fail("merge_datasets", sources, "must list two or more different dataset names (on the command line: "
             "--merge_datasets=\"['a','b']\")")
    if config["dataset"] in sources:
        fail("merge_datasets", sources, f"the merge needs a name of its own: --dataset={config['dataset']} is one "
             "of its sources")
    root = os.path.dirname(config["data_path"])
    folders = {source: os.path.join(root, source) for source in sources}
    missing = [folder for source, folder in folders.items()
               if not os.path.isfile(os.path.join(folder, f"{source}.inter"))]
    if missing and os.path.isfile(os.path.join(config["data_path"], f"{config['dataset']}.inter")):
        return  # data_path holds the merge itself (a checkpoint's configuration, reloaded): it is read as it is
    if missing:
        fail("merge_datasets", sources, f"no interaction file in {', '.join(missing)} (the sources are read from "
             "data_path)")
    _check_sources(config, model, folders)
    folder = os.path.join(config["text_cache_dir"] or default_cache_dir(), "merged")
    write_merged_dataset(folders, config["dataset"], folder, config["USER_ID_FIELD"], config["ITEM_ID_FIELD"])
    config["data_path"] = os.path.join(folder, config["dataset"])


def _check_sources(config, model, folders):
    """The item-text and interaction-file checks of every source of a merge, each read as its own dataset."""
    dataset, data_path = config["dataset"], config["data_path"]
    try:
        for source, folder in folders.items():
            config["dataset"], config["data_path"] = source, folder
            check_item_table(config, model)
            data_checks.check_interaction_files(config)
    finally:
        config["dataset"], config["data_path"] = dataset, data_path


def build_config(model=None, dataset=None, config_file_list=None, config_dict=None):
    """Merge the configuration, then check it and the interaction file before anything is written.

    ``model`` may name a variant (``DiffuRecSys-V1``): its YAML applies right after the model's. A refusal
    raises ``ValueError`` or ``FileNotFoundError`` naming the file and line or the key, and what to do.

    Returns ``(config, model_class)``.
    """
    config, model_class, model, user_keys = merge_config(model, dataset, config_file_list, config_dict)
    warn_unknown_keys(user_keys, model, config["dataset"])
    check_model_config(model, config, declared_types(model, config["dataset"]))
    check_threshold(config, model)
    check_training_stage(config, model)
    check_optional_library(config, model)
    data_checks.check_inter_path_is_file(config)
    if config["merge_datasets"]:
        merge_source_datasets(config, model)
    else:
        resolve_data_path(config, data_path_given="data_path" in user_keys)
    config["data_path"] = os.path.abspath(config["data_path"])  # stays valid if the caller changes directory
    check_data_keys(config, model)
    data_checks.check_interaction_files(config)
    return config, model_class
