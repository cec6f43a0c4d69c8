"""Configuration checks that run before any data is loaded or file is written.

Each check raises ``ValueError`` naming the offending key, its value and what is allowed. The models call
:func:`check_model_config` when they are built; the runner calls it (and :func:`check_dataset`) earlier,
right after the configuration is merged, so a bad value never leaves a half-written log or checkpoint.
"""

import os

from recbole_diffusion.diffusion import BETA_SCHEDULES, DDPM_VARIANCES, SAMPLERS
from recbole_diffusion.trainer import LR_SCHEDULERS


def _fail(key, value, requirement):
    raise ValueError(f"{key}={value!r}: {requirement}")


def _require_int(config, key, minimum):
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(key, value, f"must be an integer >= {minimum}")
    return value


def _require_in(config, key, allowed):
    value = config[key]
    if value not in allowed:
        _fail(key, value, f"must be one of {list(allowed)}")


def _require_range(config, key, low, high, low_open=False, high_open=False):
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(key, value, "must be a number")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        _fail(key, value, f"must lie in {interval}")


def _require_bool(config, key):
    if not isinstance(config[key], bool):
        _fail(key, config[key], "must be True or False")


def _sampler_distribution(config):
    return (config["train_neg_sample_args"] or {}).get("distribution", "none")


def _refuse_sampled_negatives(config):
    """Pointwise models read ``item_id`` as the target: RecBole's sampler would overwrite it with negatives."""
    if _sampler_distribution(config) != "none":
        _fail("train_neg_sample_args", config["train_neg_sample_args"],
              f"{config['model']} trains on the positive target only; set train_neg_sample_args: ~ "
              "(RecBole's sampler would replace the targets of the repeated rows with negatives)")


def check_transformer(config, hidden_key="hidden_size", heads_key="n_heads", layers_key="n_layers"):
    hidden = _require_int(config, hidden_key, 1)
    heads = _require_int(config, heads_key, 1)
    _require_int(config, layers_key, 1)
    if hidden % heads:
        _fail(hidden_key, hidden, f"must be divisible by {heads_key}={heads}")


def check_diffusion(config):
    """Keys every diffusion model shares: schedule, T, sampler and its steps, ensemble size."""
    _require_in(config, "beta_schedule", BETA_SCHEDULES)
    steps = _require_int(config, "diffusion_steps", 1)
    _require_in(config, "sampler", SAMPLERS)
    _require_in(config, "ddpm_variance", DDPM_VARIANCES)
    for key in ("ddpm_steps", "ddim_steps"):
        if config[key] is not None:
            sampler_steps = _require_int(config, key, 1)
            if sampler_steps > steps:
                _fail(key, sampler_steps, f"must be between 1 and diffusion_steps={steps}")
    _require_int(config, "n_ensemble", 1)


def check_diffurec(config):
    """DiffuRec and DiffuRecSys."""
    check_transformer(config)
    check_diffusion(config)
    _require_range(config, "lambda_uncertainty", 0, float("inf"))
    _require_range(config, "offset_noise_scale", 0, float("inf"))
    _require_range(config, "hidden_dropout_prob", 0, 1, high_open=True)
    _require_range(config, "emb_dropout_prob", 0, 1, high_open=True)
    _require_range(config, "embedding_init_std", 0, float("inf"), low_open=True)
    for key in ("position_embedding", "cross_attention"):
        _require_bool(config, key)
    _refuse_sampled_negatives(config)


def check_guided(config):
    """DreamRec and PreferDiff."""
    check_transformer(config)
    check_diffusion(config)
    _require_range(config, "hidden_dropout_prob", 0, 1, high_open=True)
    _require_range(config, "guidance_weight", 0, float("inf"))
    _require_range(config, "embedding_init_std", 0, float("inf"), low_open=True)
    _require_range(config, "cfg_dropout_prob", 0, 1, high_open=True)
    if config["model"] != "PreferDiff":
        _refuse_sampled_negatives(config)
        return
    _require_range(config, "preference_lambda", 0, 1)
    _require_range(config, "preference_gamma", 0, float("inf"), low_open=True)
    _require_bool(config, "preference_batch_mean")
    batch_negatives = _sampler_distribution(config) == "none"
    if (config["train_neg_sample_args"] or {}).get("dynamic"):
        _fail("train_neg_sample_args", config["train_neg_sample_args"],
              "dynamic negative sampling would run the whole reverse process in every training batch; use "
              "dynamic: False")
    if batch_negatives and config["train_batch_size"] < 2:
        _fail("train_batch_size", config["train_batch_size"],
              "must be at least 2 when the negatives are the other targets of the batch")
    if config["neg_samples"] is not None:
        neg_samples = _require_int(config, "neg_samples", 1)
        if not batch_negatives:
            _fail("neg_samples", neg_samples,
                  "only counts batch negatives; with train_neg_sample_args the number of negatives is its "
                  "sample_num (set neg_samples: ~)")
        if batch_negatives and neg_samples >= config["train_batch_size"]:
            _fail("neg_samples", neg_samples,
                  f"must be smaller than train_batch_size={config['train_batch_size']} (negatives come from the batch)")


def check_trainer(config):
    """Keys of the trainer layer, for every model: the learning-rate schedule and the evaluation seed."""
    _require_in(config, "lr_scheduler", LR_SCHEDULERS)
    if config["lr_scheduler"] == "step":
        for key in ("lr_step_size", "lr_gamma"):
            if config[key] is None:
                _fail(key, None, "must be set when lr_scheduler is step")
        _require_int(config, "lr_step_size", 1)
        _require_range(config, "lr_gamma", 0, 1, low_open=True)
    _require_int(config, "lr_warmup_epochs", 0)
    if config["eval_seed"] is not None:
        _require_int(config, "eval_seed", 0)
    if config["item_init_std"] is not None:
        _fail("item_init_std", config["item_init_std"],
              "was renamed embedding_init_std (it now sets every embedding table: items and positions)")


MODEL_CHECKS = {"DiffuRec": check_diffurec, "DiffuRecSys": check_diffurec, "DreamRec": check_guided,
                "PreferDiff": check_guided}


def check_model_config(model_name, config):
    """The trainer keys for every model, then the checks registered for ``model_name``."""
    check_trainer(config)
    check = MODEL_CHECKS.get(model_name)
    if check is not None:
        check(config)


def inter_file_path(config):
    """The ``.inter`` file RecBole will read for this configuration (``data_path`` is already joined)."""
    return os.path.join(config["data_path"], f"{config['dataset']}.inter")


def check_dataset(config):
    """Fail early when the interaction file is missing or lacks the time column that ordering needs."""
    path = inter_file_path(config)
    if config["benchmark_filename"]:
        path = os.path.join(config["data_path"], f"{config['dataset']}.{config['benchmark_filename'][0]}.inter")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"dataset {config['dataset']!r}: no interaction file at {path}. Put <name>/<name>.inter under a "
            f"folder and pass --data_path=<that folder> (for the benchmark sets of this project, "
            f"--data_path=../shared/data), or set RECBOLE_DIFFUSION_DATA to it."
        )
    eval_args = config["eval_args"] or {}
    if eval_args.get("order") == "TO" or config["MODEL_TYPE"].name == "SEQUENTIAL":
        time_field = config["TIME_FIELD"]
        with open(path, encoding="utf-8") as handle:
            header = handle.readline().rstrip("\n").split(config["field_separator"] or "\t")
        columns = [column.split(":")[0] for column in header]
        if time_field not in columns:
            raise ValueError(
                f"TIME_FIELD={time_field!r}: {path} has no such column (columns: {columns}); sequential models "
                "and order TO sort each user's interactions by it. Add a timestamp column or set TIME_FIELD."
            )
        load_col = config["load_col"]
        if load_col and "inter" in load_col and time_field not in load_col["inter"]:
            _fail("load_col", load_col, f"must load {time_field!r} in 'inter' (TIME_FIELD) to order sequences")
