"""Configuration checks that run before any data is loaded or file is written.

Each check raises ``ValueError`` naming the offending key, its value and what is allowed. The models call
their checks when they are built; the runner calls :func:`check_model_config` earlier, right after the
configuration is merged (and :func:`check_config_file` on each of the user's YAML files before that), so a bad
value never leaves a half-written log or checkpoint. The data files are checked in
:mod:`recbole_diffusion.data_checks`.
"""

import math
import os

import torch
import yaml

from recbole_diffusion.diffusion import BETA_SCHEDULES, DDPM_VARIANCES, SAMPLERS, TIMESTEP_SAMPLERS, make_betas
from recbole_diffusion.eval_policy import EVAL_HISTORY_MASKS
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
    if config["sampler"] == "one_step":
        _check_noisiest_step_is_noise(config)


# The one-step sampler starts from N(0, I) at t = T-1: there abar must leave at most this much of the signal.
ONE_STEP_MAX_ALPHA_BAR = 0.01


def _check_noisiest_step_is_noise(config):
    betas = make_betas(config["beta_schedule"], config["diffusion_steps"])
    alpha_bar = float(torch.prod(1.0 - betas))
    if alpha_bar > ONE_STEP_MAX_ALPHA_BAR:
        _fail("sampler", "one_step",
              f"predicts x0 from N(0, I) at t = T-1, but beta_schedule={config['beta_schedule']!r} with "
              f"diffusion_steps={config['diffusion_steps']} keeps abar = {alpha_bar:.3g} of the signal there (at "
              f"most {ONE_STEP_MAX_ALPHA_BAR}); use more diffusion_steps or beta_schedule: cosine")


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


def check_timestep_sampler(config):
    """``timestep_sampler`` and, for ``loss_aware``, its history length and uniform share (any model that
    draws its training steps from :func:`recbole_diffusion.diffusion.make_timestep_sampler`)."""
    _require_in(config, "timestep_sampler", TIMESTEP_SAMPLERS)
    if config["timestep_sampler"] == "loss_aware":
        _require_int(config, "loss_aware_history", 1)
        _require_range(config, "loss_aware_uniform_share", 0, 1, low_open=True)


def check_seqdiffrec(config):
    """SeqDiffRec."""
    check_transformer(config)
    check_diffusion(config)
    check_timestep_sampler(config)
    _require_range(config, "mse_weight", 0, float("inf"))
    _require_range(config, "hidden_dropout_prob", 0, 1, high_open=True)
    _require_range(config, "embedding_init_std", 0, float("inf"), low_open=True)
    _refuse_sampled_negatives(config)


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


def check_finite_numbers(config):
    """No NaN or infinity in any key (``guidance_weight: .inf`` gives NaN scores and plausible-looking metrics)."""
    for key, value in config.final_config_dict.items():
        for name, number in _numbers_in(key, value):
            if not math.isfinite(number):
                _fail(name, number, "must be a finite number")


def check_recbole_types(config):
    """Every key that RecBole's defaults (and its model's YAML) give a number or a boolean keeps that type:
    ``--epochs=abc`` arrives as the string 'abc', which RecBole would compare or multiply much later."""
    for key, default in config.internal_config_dict.items():
        value = config[key]
        if isinstance(default, bool):
            _require_bool(config, key)
        elif isinstance(default, int) and (isinstance(value, bool) or not isinstance(value, int)):
            _fail(key, value, "must be an integer")
        elif isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            _fail(key, value, "must be a number")


def check_training_values(config):
    """RecBole's training keys, for every model: values that would train nothing or never step."""
    check_finite_numbers(config)
    check_recbole_types(config)
    _require_int(config, "epochs", 1)
    _require_int(config, "train_batch_size", 1)
    _require_int(config, "eval_batch_size", 1)
    learning_rate = config["learning_rate"]
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or learning_rate <= 0:
        _fail("learning_rate", learning_rate, "must be a number > 0 (e.g. 0.001)")
    _require_range(config, "weight_decay", 0, float("inf"), high_open=True)
    if config["MODEL_TYPE"].name == "SEQUENTIAL":
        _require_int(config, "MAX_ITEM_LIST_LENGTH", 1)
    if config["rm_dup_inter"] is not None:
        _require_in(config, "rm_dup_inter", ("first", "last"))


def check_config_file(path):
    """A user's YAML file: readable, UTF-8, valid YAML, and a mapping of key: value lines with text keys.

    Raises ``FileNotFoundError`` (missing, directory, unreadable) or ``ValueError`` naming the line.
    """
    if os.path.isdir(path):
        raise FileNotFoundError(f"config file {path!r} is a directory, not a YAML file")
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path!r} does not exist") from None
    except PermissionError:
        raise FileNotFoundError(f"config file {path!r} cannot be read (permission denied); make it readable "
                                f"(chmod u+r {path})") from None
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
        raise ValueError(f"config file {path}: has no settings (empty or only comments); write one key: value "
                         "per line, e.g. epochs: 50, or leave the file out")
    if not isinstance(settings, dict):
        raise ValueError(f"config file {path}: must be a mapping of key: value lines, but holds a "
                         f"{type(settings).__name__}; write one key: value per line, e.g. epochs: 50")
    for key in settings:
        if not isinstance(key, str):
            raise ValueError(f"config file {path}: key {key!r} is not a name; keys are configuration names such "
                             "as epochs or learning_rate")


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


def check_eval_history_mask(config):
    """``eval_history_mask`` (:mod:`recbole_diffusion.eval_policy`): a known policy; other than ``auto`` only
    for a full ranking (a sampled ranking has no history to mask) and, for a sequential model masked with
    ``all``, on a split RecBole made itself (its prefix rows are where the earlier items are read from)."""
    policy = config["eval_history_mask"]
    if policy is None:
        return
    _require_in(config, "eval_history_mask", EVAL_HISTORY_MASKS)
    if policy == "auto":
        return
    modes = config["eval_args"]["mode"]
    if any(mode != "full" for mode in modes.values()):
        _fail("eval_history_mask", policy, f"needs a full ranking (eval_args mode full, not {modes}); use auto")
    if policy == "all" and config["MODEL_TYPE"].name == "SEQUENTIAL" and config["benchmark_filename"]:
        _fail("eval_history_mask", policy, "cannot mask a sequential model's history on pre-split benchmark files "
              "(benchmark_filename); use auto or none")


MODEL_CHECKS = {"DiffuRec": check_diffurec, "DiffuRecSys": check_diffurec, "DreamRec": check_guided,
                "PreferDiff": check_guided, "SeqDiffRec": check_seqdiffrec}


def check_model_config(model_name, config):
    """RecBole's training keys and the trainer keys for every model, then the checks registered for
    ``model_name``."""
    check_training_values(config)
    check_trainer(config)
    check_eval_history_mask(config)
    check = MODEL_CHECKS.get(model_name)
    if check is not None:
        check(config)


def inter_file_path(config):
    """The ``.inter`` file RecBole will read for this configuration (``data_path`` is already joined)."""
    return os.path.join(config["data_path"], f"{config['dataset']}.inter")
