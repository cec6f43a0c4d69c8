"""Checks of a merged configuration and of the user's config files, run before any data is loaded or file is
written.

Each check raises ``ValueError`` naming the offending key, its value and what is allowed. The runner calls
:func:`check_config_file` on each of the user's YAML files before merging them and :func:`check_model_config` right
after, so a bad value never leaves a half-written log or checkpoint. The checks of this package's models' own keys
are :mod:`recbole_diffusion.model.checks` (the models run them again when they are built); the data files are
checked in :mod:`recbole_diffusion.data.checks`.
"""

import importlib.util
import math
import os

import yaml

from recbole_diffusion.data.checks import expected_splits
from recbole_diffusion.evaluation.history_mask import EVAL_HISTORY_MASKS
from recbole_diffusion.model.checks import MODEL_CHECKS
from recbole_diffusion.model.item_table import ITEM_TABLES, WHITENING_BASES
from recbole_diffusion.text.encoder import ENCODERS, encoder_folder
from recbole_diffusion.text.item_vectors import template_fields, vector_file_width
from recbole_diffusion.utils.checks import fail, require_bool, require_in, require_int, require_range
from recbole_diffusion.utils.files import atomic_header, read_file_bytes, saved_config

# The trainer layer's learning-rate schedules (recbole_diffusion.trainer.trainer.build_lr_scheduler).
LR_SCHEDULERS = ("none", "step")


def _numbers_in(key, value):
    """``(name, number)`` for every float in ``value``, descending into dicts and lists."""
    if isinstance(value, dict):
        for inner_key, inner in value.items():
            yield from _numbers_in(f"{key}[{inner_key!r}]", inner)
    elif isinstance(value, (list, tuple)):
        for index, inner in enumerate(value):
            yield from _numbers_in(f"{key}[{index}]", inner)
    elif isinstance(value, float):
        yield key, value


# Where infinity is a meaningful setting: torch's clip_grad_norm_ with norm_type inf clips the largest gradient.
INFINITY_ALLOWED = {"clip_grad_norm['norm_type']"}


def check_finite_numbers(config):
    """No NaN or infinity in any key (``guidance_weight: .inf`` gives NaN scores and plausible-looking metrics),
    but for the positive infinity of :data:`INFINITY_ALLOWED`."""
    for key, value in config.final_config_dict.items():
        for name, number in _numbers_in(key, value):
            if not math.isfinite(number) and not (name in INFINITY_ALLOWED and number == math.inf):
                fail(name, number, "must be a finite number")


# The kinds of value the type checks tell apart, and how a refusal names them.
KIND_NAMES = {"bool": "True or False", "int": "an integer", "float": "a number"}


def _kind_of_default(default):
    """The kind a default's value implies: a boolean, an integer, a number; ``None`` for anything else."""
    if isinstance(default, bool):
        return "bool"
    return "int" if isinstance(default, int) else "float" if isinstance(default, float) else None


def _admits(kind, value):
    if kind == "bool":
        return isinstance(value, bool)
    return not isinstance(value, bool) and isinstance(value, int if kind == "int" else (int, float))


def check_recbole_types(config, declared=None):
    """Every key of RecBole's defaults keeps the type RecBole documents for it: ``--epochs=abc`` arrives as the
    string 'abc', which RecBole would compare or multiply much later.

    ``declared``: ``{key: annotation}`` from the YAML files' ``# (int)`` / ``# (float)`` / ``# (bool)`` comments
    (:func:`recbole_diffusion.config.configurator.declared_types`). A key admits the kind its annotation names and
    the kind of its default's value, so a float key whose default is written as an integer (FEARec's
    ``global_ratio: 1  # (float)``) takes a float, and an annotation its own default contradicts (DiffRec's
    ``noise_scale: 0.001  # (int)``) refuses nothing RecBole runs. A key with neither annotation nor a typed
    default, or a default of None, is left to RecBole; without annotation a default's kind decides."""
    declared = declared or {}
    for key, default in config.internal_config_dict.items():
        annotated = declared.get(key, "").removesuffix(" or none")
        if annotated in KIND_NAMES and default is not None and not _admits(annotated, default) \
                and _kind_of_default(default) is None:
            continue  # annotated (float) with a default of 'cosine' (KGIN's ind): the annotation is wrong
        kinds = {kind for kind in (annotated if annotated in KIND_NAMES else None, _kind_of_default(default))
                 if kind is not None}
        if "float" in kinds:
            kinds = {"float"} | (kinds - {"int"})
        value = config[key]
        if default is None or not kinds or any(_admits(kind, value) for kind in kinds):
            continue
        if value is None and declared.get(key, "").endswith(" or none"):
            continue
        if kinds == {"bool"}:
            require_bool(config, key)
            continue
        fail(key, value, "must be " + " or ".join(KIND_NAMES[kind] for kind in sorted(kinds)))


# RecBole's metrics that report one value without a cut-off (the others report name@k for every k of topk).
METRICS_WITHOUT_CUTOFF = {"auc", "gauc", "logloss", "mae", "rmse"}


def check_metrics(config):
    """``topk`` a non-empty list of positive integers, and ``valid_metric`` one that the run computes (a name of
    ``metrics``, with a cut-off of ``topk`` for a metric reported per cut-off, without one otherwise): RecBole
    looks it up in the validation result and ends in a KeyError after the first epoch otherwise (``--topk=[5]``
    alone leaves NDCG@10 uncomputed). A run that never validates (``eval_step`` <= 0, or no validation split)
    never reads it."""
    topk = config["topk"]
    if isinstance(topk, int) and not isinstance(topk, bool):
        topk = [topk]  # RecBole reads a single cut-off as a list of one
    if not isinstance(topk, list) or not topk or any(isinstance(k, bool) or not isinstance(k, int) or k < 1
                                                   for k in topk):
        fail("topk", config["topk"], "must be a non-empty list of integers >= 1, e.g. [5, 10, 20]")
    eval_step = config["eval_step"]
    if (isinstance(eval_step, int) and eval_step <= 0) or not expected_splits(config)[0]:
        return
    metrics = [str(name).lower() for name in config["metrics"] or []]
    valid_metric = str(config["valid_metric"])
    name, at, cutoff = valid_metric.lower().partition("@")
    computed = ", ".join(metric if metric.lower() in METRICS_WITHOUT_CUTOFF else f"{metric}@{k}"
                         for metric in config["metrics"] for k in (topk if metric.lower() not in
                                                                    METRICS_WITHOUT_CUTOFF else [None]))
    if name not in metrics:
        fail("valid_metric", valid_metric, f"is not among metrics {config['metrics']}: early stopping reads it from "
             "every validation; add it to metrics or choose one of them")
    if name in METRICS_WITHOUT_CUTOFF and at:
        fail("valid_metric", valid_metric, f"{name} has no cut-off; write {name}. Computed: {computed}")
    if name not in METRICS_WITHOUT_CUTOFF and (not cutoff.isdigit() or int(cutoff) not in topk):
        fail("valid_metric", valid_metric, f"needs a cut-off of topk {topk}, e.g. {name}@{topk[0]}; computed: "
             f"{computed}")


def check_training_values(config, declared=None):
    """RecBole's training keys, for every model: values that would train nothing or never step."""
    check_finite_numbers(config)
    check_recbole_types(config, declared)
    check_metrics(config)
    require_int(config, "epochs", 1)
    require_int(config, "train_batch_size", 1)
    require_int(config, "eval_batch_size", 1)
    learning_rate = config["learning_rate"]
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or learning_rate <= 0:
        fail("learning_rate", learning_rate, "must be a number > 0 (e.g. 0.001)")
    require_range(config, "weight_decay", 0, float("inf"), high_open=True)
    if config["MODEL_TYPE"].name == "SEQUENTIAL":
        require_int(config, "MAX_ITEM_LIST_LENGTH", 1)
    if config["rm_dup_inter"] is not None:
        require_in(config, "rm_dup_inter", ("first", "last"))


def check_config_file(path):
    """A user's YAML file: readable, UTF-8, valid YAML, and a mapping of key: value lines with text keys.

    Raises ``FileNotFoundError`` (missing, directory, unreadable) or ``ValueError`` naming the line.
    """
    raw = read_file_bytes(path, "config file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        byte = raw[error.start:error.start + 1].hex()
        raise ValueError(f"config file {path}:{line}: byte 0x{byte} at byte offset {error.start} is not valid "
                         "UTF-8 (RecBole reads YAML as UTF-8); save it as UTF-8") from None
    try:
        settings = yaml.safe_load(text)  # what the runner's own reading of the keys uses
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(error, "problem", None) or str(error)
        raise ValueError(f"config file {where}: not valid YAML ({problem}); write one key: value per line, "
                         "e.g. epochs: 50") from None
    if settings is None:
        return  # empty or only comments (a template): no keys, as if the file were absent
    if not isinstance(settings, dict):
        raise ValueError(f"config file {path}: must be a mapping of key: value lines, but holds a "
                         f"{type(settings).__name__}; write one key: value per line, e.g. epochs: 50")
    for key in settings:
        if not isinstance(key, str):
            raise ValueError(f"config file {path}: key {key!r} is not a name; keys are configuration names such "
                             "as epochs or learning_rate")


def check_trainer(config):
    """Keys of the trainer layer, for every model: the learning-rate schedule, checkpoints and resume, the
    training batches, the evaluation seed."""
    require_in(config, "lr_scheduler", LR_SCHEDULERS)
    if config["lr_scheduler"] == "step":
        for key in ("lr_step_size", "lr_gamma"):
            if config[key] is None:
                fail(key, None, "must be set when lr_scheduler is step")
        require_int(config, "lr_step_size", 1)
        require_range(config, "lr_gamma", 0, 1, low_open=True)
    require_int(config, "lr_warmup_epochs", 0)
    require_int(config, "checkpoint_every", 0)
    for key in ("batch_by_length", "resume", "trust_pickled_checkpoint", "drop_exact_duplicates"):
        require_bool(config, key)
    if config["eval_seed"] is not None:
        require_int(config, "eval_seed", 0)
    if config["item_init_std"] is not None:
        fail("item_init_std", config["item_init_std"],
             "was renamed embedding_init_std (it now sets every embedding table: items and positions)")


def check_eval_history_mask(config):
    """``eval_history_mask`` (:mod:`recbole_diffusion.evaluation.history_mask`): a known policy; other than ``auto``
    only
    for a full ranking (a sampled ranking has no history to mask) and, for a sequential model masked with
    ``all``, on a split RecBole made itself (its prefix rows are where the earlier items are read from)."""
    policy = config["eval_history_mask"]
    if policy is None:
        return
    require_in(config, "eval_history_mask", EVAL_HISTORY_MASKS)
    if policy == "auto":
        return
    modes = config["eval_args"]["mode"]
    if any(mode != "full" for mode in modes.values()):
        fail("eval_history_mask", policy, f"needs a full ranking (eval_args mode full, not {modes}); use auto")
    if policy == "all" and config["MODEL_TYPE"].name == "SEQUENTIAL" and config["benchmark_filename"]:
        fail("eval_history_mask", policy, "cannot mask a sequential model's history on pre-split benchmark files "
             "(benchmark_filename); use auto or none")


def check_fearec(config):
    """RecBole 1.2.1's FEARec divides by ``n_layers - 1`` when it builds its filters (ZeroDivisionError)."""
    if isinstance(config["n_layers"], int) and config["n_layers"] < 2:
        fail("n_layers", config["n_layers"], "must be at least 2 for FEARec (RecBole's FEARec divides by n_layers - 1 "
             "when it builds its frequency filters)")


def check_item_table(config, model_name):
    """``item_table`` and the text keys (:mod:`recbole_diffusion.model.item_table`): a text table only for this
    package's models, from a vector file that exists, or from ``.item`` fields that exist (and a template naming
    only those) through an encoder that is installed."""
    require_in(config, "item_table", ITEM_TABLES)
    if config["item_table"] != "text":
        return
    if model_name not in MODEL_CHECKS:
        fail("item_table", "text", f"applies to this package's diffusion models ({', '.join(sorted(MODEL_CHECKS))}), "
             f"not to {model_name}")
    require_range(config, "text_whitening_floor", 0, 1, low_open=True, high_open=True)
    require_in(config, "text_whitening", WHITENING_BASES)
    require_bool(config, "item_text_adapter")
    if config["item_text_embeddings"]:
        path = str(config["item_text_embeddings"])
        if not os.path.isfile(path):
            fail("item_text_embeddings", path, "is not a file")
        _check_text_width(config, vector_file_width(path, config["field_separator"], config["seq_separator"]), path)
        return
    fields = config["item_text_fields"]
    if isinstance(fields, str):
        fail("item_text_fields", fields, "must be a list of the .item fields that make an item's text; on the "
             "command line quote the names: --item_text_fields=\"['movie_title','class']\"")
    if not fields or not all(isinstance(field, str) for field in fields):
        fail("item_text_fields", fields, "must list the .item fields that make an item's text (or give your own "
             "vectors with item_text_embeddings)")
    template = config["item_text_template"]
    if template is not None:
        try:
            names = template_fields(str(template))
        except ValueError as error:
            fail("item_text_template", template, f"is not a str.format template ({error})")
        unknown = [name for name in names if name not in fields]
        if unknown:
            fail("item_text_template", template, f"names {', '.join(unknown) or 'a positional field {}'}, not among "
                 f"item_text_fields {fields} (name each field: {{{fields[0]}}})")
    item_file = os.path.join(config["data_path"], f"{config['dataset']}.item")
    if not os.path.isfile(item_file):
        fail("item_table", "text", f"item text comes from the .item file's item_text_fields, and {item_file} does "
             "not exist (or give your own vectors with item_text_embeddings)")
    header = [name for name, _ in atomic_header(item_file, config["field_separator"], config["encoding"])]
    missing = [field for field in [config["ITEM_ID_FIELD"], *fields] if field not in header]
    if missing:
        fail("item_text_fields", fields, f"{item_file} has no field {', '.join(missing)}; its fields are "
             f"{', '.join(header)}")
    require_in(config, "item_text_encoder", sorted(ENCODERS))
    for library in ("tokenizers", "safetensors"):
        if importlib.util.find_spec(library) is None:
            fail("item_table", "text", f"the item-text encoder needs {library}: pip install -e \".[text]\"")
    encoder_folder(ENCODERS[config["item_text_encoder"]])
    _check_text_width(config, ENCODERS[config["item_text_encoder"]].width, config["item_text_encoder"])


def _check_text_width(config, width, source):
    """The text table's width is the model's: it must split into ``n_heads``."""
    heads = config["n_heads"]
    if width and isinstance(heads, int) and heads > 0 and width % heads:
        fail("n_heads", heads, f"must divide the text table's width {width} (the model's width with item_table "
             f"text; from {source})")


def check_holdout_items(config):
    """``holdout_items_ratio`` in [0, 1) and its seed (:mod:`recbole_diffusion.data.heldout_items`)."""
    require_range(config, "holdout_items_ratio", 0, 1, high_open=True)
    if config["holdout_items_seed"] is not None:
        require_int(config, "holdout_items_seed", 0)


def check_transfer(config, model_name):
    """``transfer_from`` (:func:`recbole_diffusion.quick_start.quick_start.transfer_and_test`): a checkpoint of
    the same model with a text table, evaluated in one process on a text table of this dataset from the same
    encoder. A model with an id table stays tied to its own items and is refused."""
    path = config["transfer_from"]
    if path is None:
        return
    if not os.path.isfile(str(path)):
        fail("transfer_from", path, "is not a file")
    if config["item_table"] != "text":
        fail("transfer_from", path, "evaluates a model on this dataset's items, which needs item_table text (the "
             "table is then built from this dataset's text; an id table belongs to the items it was trained on)")
    if (config["nproc"] or 1) > 1 or (config["world_size"] or 1) > 1:
        fail("transfer_from", path, "runs in one process (nproc 1)")
    try:
        saved = saved_config(path)
    except Exception as error:  # any unreadable file: the message says which and why
        fail("transfer_from", path, f"is not a recbole_diffusion checkpoint ({type(error).__name__}: {error})")
    if saved.get("model") != model_name:
        fail("transfer_from", path, f"holds a {saved.get('model')} model, not {model_name}")
    if saved.get("item_table") != "text":
        fail("transfer_from", path, f"holds a model with an id item table, trained on {saved.get('dataset')}'s "
             f"items: its scores are tied to those items, so it cannot rank {config['dataset']}'s; train with "
             "item_table text to transfer")
    if saved["text_whitening"] != config["text_whitening"]:
        fail("transfer_from", path, f"was trained on tables whitened with text_whitening {saved['text_whitening']!r}, "
             f"this run's is {config['text_whitening']!r}: give the training's")
    if not saved.get("item_text_embeddings") and not config["item_text_embeddings"] and \
            saved.get("item_text_encoder") != config["item_text_encoder"]:
        fail("transfer_from", path, f"was trained on vectors of {saved.get('item_text_encoder')}, not "
             f"{config['item_text_encoder']}: both tables must come from the same encoder")


# Limits of RecBole's own models that end in a traceback inside RecBole otherwise.
RECBOLE_MODEL_CHECKS = {"FEARec": check_fearec}


def check_data_keys(config, model_name):
    """The checks that read the data folder (run once ``data_path`` is resolved): the text table's ``.item``
    fields or vector file, and ``transfer_from``."""
    check_item_table(config, model_name)
    check_transfer(config, model_name)


def check_model_config(model_name, config, declared=None):
    """RecBole's training keys (typed by ``declared``, see :func:`check_recbole_types`) and the trainer keys for
    every model, then the checks registered for ``model_name``."""
    check_training_values(config, declared)
    check_trainer(config)
    check_eval_history_mask(config)
    check_holdout_items(config)
    check = MODEL_CHECKS.get(model_name) or RECBOLE_MODEL_CHECKS.get(model_name)
    if check is not None:
        check(config)
