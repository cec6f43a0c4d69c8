"""DDIM against DDPM on the shared core, with a denoiser that is not an oracle."""

import torch

from recbole_diffusion.diffusion import GaussianDiffusion, sampling_timesteps


def _run(diffusion, step, x_T, denoise, sampler_steps=None):
    x_t = x_T
    timesteps = sampling_timesteps(diffusion.num_steps, sampler_steps)
    for current, following in zip(timesteps, timesteps[1:] + [-1]):
        t = torch.full((x_T.size(0),), current)
        x_t = step(denoise(x_t, t), x_t, t, torch.full_like(t, following))
    return x_t


def _denoiser():
    weight = torch.randn(8, 8, dtype=torch.float64) / 8 ** 0.5
    return lambda x_t, t: torch.tanh(x_t @ weight) * (1 + t[:, None].double() / 1000)


def test_ddim_with_eta_one_and_no_noise_equals_ddpm_with_zero_variance_over_all_steps():
    """Every step of DDIM(eta = 1) has the DDPM posterior mean; with the noise switched off the runs match.
    (With eta = 0 they differ: the x_t coefficient of DDIM is sqrt((1 - abar_s) / (1 - abar_t)).)"""
    torch.manual_seed(0)
    diffusion, denoise = GaussianDiffusion(2000, "linear").double(), _denoiser()
    x_T = torch.randn(16, 8, dtype=torch.float64)
    zero = torch.zeros_like(x_T)
    for steps in (None, 20):
        ddpm = _run(diffusion, lambda x0, x, t, s: diffusion.ddpm_step(x0, x, t, s, noise=zero), x_T, denoise, steps)
        ddim = _run(diffusion, lambda x0, x, t, s: diffusion.ddim_step(x0, x, t, s, eta=1.0), x_T, denoise, steps)
        torch.testing.assert_close(ddim, ddpm, rtol=1e-9, atol=1e-9)
        deterministic = _run(diffusion, diffusion.ddim_step, x_T, denoise, steps)
        assert (deterministic - ddpm).abs().max() > 1e-3


def test_float32_steps_keep_float64_schedule_precision_near_t_zero():
    diffusion = GaussianDiffusion(2000, "linear")
    torch.manual_seed(1)
    x0, x_t = torch.randn(4, 8), torch.randn(4, 8)
    t = torch.tensor([1, 2, 3, 4])
    mean32, _ = diffusion.posterior(x0, x_t, t, t - 1)
    mean64, _ = diffusion.posterior(x0.double(), x_t.double(), t, t - 1)
    torch.testing.assert_close(mean32.double(), mean64, rtol=1e-6, atol=1e-6)
    assert mean32.dtype == torch.float32
