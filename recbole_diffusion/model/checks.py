"""The configuration keys of this package's models, checked when a model is built and, earlier, by the runner
(:func:`recbole_diffusion.config.checks.check_config`, before any file is written).

Each check raises ``ValueError`` naming the offending key, its value and what is allowed.
"""

import torch

from recbole_diffusion.diffusion import BETA_SCHEDULES, DDPM_VARIANCES, SAMPLERS, TIMESTEP_SAMPLERS, make_betas
from recbole_diffusion.utils.checks import fail, require_bool, require_in, require_int, require_range


def _sampler_distribution(config):
    return (config["train_neg_sample_args"] or {}).get("distribution", "none")


def _refuse_sampled_negatives(config):
    """Pointwise models read ``item_id`` as the target: RecBole's sampler would overwrite it with negatives."""
    if _sampler_distribution(config) != "none":
        fail("train_neg_sample_args", config["train_neg_sample_args"],
             f"{config['model']} trains on the positive target only; set train_neg_sample_args: ~ "
             "(RecBole's sampler would replace the targets of the repeated rows with negatives)")


def check_transformer(config, hidden_key="hidden_size", heads_key="n_heads", layers_key="n_layers"):
    hidden = require_int(config, hidden_key, 1)
    heads = require_int(config, heads_key, 1)
    require_int(config, layers_key, 1)
    if hidden % heads and config["item_table"] != "text":  # a text table's width replaces hidden_size
        fail(hidden_key, hidden, f"must be divisible by {heads_key}={heads}")


def check_diffusion(config):
    """Keys every diffusion model shares: schedule, T, sampler and its steps, ensemble size."""
    require_in(config, "beta_schedule", BETA_SCHEDULES)
    steps = require_int(config, "diffusion_steps", 1)
    require_in(config, "sampler", SAMPLERS)
    require_in(config, "ddpm_variance", DDPM_VARIANCES)
    for key in ("ddpm_steps", "ddim_steps"):
        if config[key] is not None:
            sampler_steps = require_int(config, key, 1)
            if sampler_steps > steps:
                fail(key, sampler_steps, f"must be between 1 and diffusion_steps={steps}")
    require_int(config, "n_ensemble", 1)
    if config["sampler"] == "one_step":
        _check_noisiest_step_is_noise(config)


# The one-step sampler starts from N(0, I) at t = T-1: there abar must leave at most this much of the signal.
ONE_STEP_MAX_ALPHA_BAR = 0.01


def _check_noisiest_step_is_noise(config):
    betas = make_betas(config["beta_schedule"], config["diffusion_steps"])
    alpha_bar = float(torch.prod(1.0 - betas))
    if alpha_bar > ONE_STEP_MAX_ALPHA_BAR:
        fail("sampler", "one_step",
             f"predicts x0 from N(0, I) at t = T-1, but beta_schedule={config['beta_schedule']!r} with "
             f"diffusion_steps={config['diffusion_steps']} keeps abar = {alpha_bar:.3g} of the signal there (at "
             f"most {ONE_STEP_MAX_ALPHA_BAR}); use more diffusion_steps or beta_schedule: cosine")


def check_diffurec(config):
    """DiffuRec and DiffuRecSys."""
    check_transformer(config)
    check_diffusion(config)
    require_range(config, "lambda_uncertainty", 0, float("inf"))
    require_range(config, "offset_noise_scale", 0, float("inf"))
    require_range(config, "hidden_dropout_prob", 0, 1, high_open=True)
    require_range(config, "emb_dropout_prob", 0, 1, high_open=True)
    require_range(config, "embedding_init_std", 0, float("inf"), low_open=True)
    for key in ("position_embedding", "cross_attention"):
        require_bool(config, key)
    _refuse_sampled_negatives(config)


def check_guided(config):
    """DreamRec and PreferDiff."""
    check_transformer(config)
    check_diffusion(config)
    require_range(config, "hidden_dropout_prob", 0, 1, high_open=True)
    require_range(config, "guidance_weight", 0, float("inf"))
    require_range(config, "embedding_init_std", 0, float("inf"), low_open=True)
    require_range(config, "cfg_dropout_prob", 0, 1, high_open=True)
    if config["model"] != "PreferDiff":
        _refuse_sampled_negatives(config)
        return
    require_range(config, "preference_lambda", 0, 1)
    require_range(config, "preference_gamma", 0, float("inf"), low_open=True)
    require_bool(config, "preference_batch_mean")
    batch_negatives = _sampler_distribution(config) == "none"
    if (config["train_neg_sample_args"] or {}).get("dynamic"):
        fail("train_neg_sample_args", config["train_neg_sample_args"],
             "dynamic negative sampling would run the whole reverse process in every training batch; use "
             "dynamic: False")
    if batch_negatives and config["train_batch_size"] < 2:
        fail("train_batch_size", config["train_batch_size"],
             "must be at least 2 when the negatives are the other targets of the batch")
    if config["neg_samples"] is not None:
        neg_samples = require_int(config, "neg_samples", 1)
        if not batch_negatives:
            fail("neg_samples", neg_samples,
                 "only counts batch negatives; with train_neg_sample_args the number of negatives is its "
                 "sample_num (set neg_samples: ~)")
        if batch_negatives and neg_samples >= config["train_batch_size"]:
            fail("neg_samples", neg_samples,
                 f"must be smaller than train_batch_size={config['train_batch_size']} (negatives come from the batch)")


def check_timestep_sampler(config):
    """``timestep_sampler`` and, for ``loss_aware``, its history length and uniform share (any model that
    draws its training steps from :func:`recbole_diffusion.diffusion.make_timestep_sampler`)."""
    require_in(config, "timestep_sampler", TIMESTEP_SAMPLERS)
    if config["timestep_sampler"] == "loss_aware":
        require_int(config, "loss_aware_history", 1)
        require_range(config, "loss_aware_uniform_share", 0, 1, low_open=True)


def check_seqdiffrec(config):
    """SeqDiffRec."""
    check_transformer(config)
    check_diffusion(config)
    check_timestep_sampler(config)
    require_range(config, "mse_weight", 0, float("inf"))
    require_range(config, "hidden_dropout_prob", 0, 1, high_open=True)
    require_range(config, "embedding_init_std", 0, float("inf"), low_open=True)
    _refuse_sampled_negatives(config)


MODEL_CHECKS = {"DiffuRec": check_diffurec, "DiffuRecSys": check_diffurec, "DreamRec": check_guided,
                "PreferDiff": check_guided, "SeqDiffRec": check_seqdiffrec}
