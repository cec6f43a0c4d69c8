"""The diffusion core every model uses: the Gaussian diffusion and its samplers (:mod:`.gaussian_diffusion`), the
training-step samplers (:mod:`.resample`), keyed evaluation noise (:mod:`.keyed_noise`) and the step embedding
(:mod:`.timestep_embedding`)."""

from recbole_diffusion.diffusion.gaussian_diffusion import (
    BETA_SCHEDULES, DDPM_VARIANCES, SAMPLERS, GaussianDiffusion, denoiser_calls, guided_prediction, make_betas,
    reverse_timesteps, sampling_timesteps,
)
from recbole_diffusion.diffusion.keyed_noise import KeyedNoise, keyed_normal
from recbole_diffusion.diffusion.resample import (
    TIMESTEP_SAMPLERS, LossAwareTimestepSampler, UniformTimestepSampler, make_timestep_sampler,
)
from recbole_diffusion.diffusion.timestep_embedding import TimestepEmbedding

__all__ = ["BETA_SCHEDULES", "DDPM_VARIANCES", "SAMPLERS", "TIMESTEP_SAMPLERS", "GaussianDiffusion", "KeyedNoise",
           "LossAwareTimestepSampler", "TimestepEmbedding", "UniformTimestepSampler", "denoiser_calls",
           "guided_prediction", "keyed_normal", "make_betas", "make_timestep_sampler", "reverse_timesteps",
           "sampling_timesteps"]
