"""The shared diffusion core against closed forms computed here independently (numpy / math, float64)."""

import math

import numpy as np
import pytest
import torch

from recbole_diffusion.diffusion import (
    BETA_SCHEDULES, GaussianDiffusion, TimestepEmbedding, guided_prediction, make_betas, sampling_timesteps,
)


@pytest.mark.parametrize("schedule", BETA_SCHEDULES)
@pytest.mark.parametrize("steps", [1, 32, 2000])
def test_every_schedule_gives_betas_in_0_1_and_decreasing_abar(schedule, steps):
    betas = make_betas(schedule, steps).numpy()
    assert betas.shape == (steps,) and np.all(betas > 0) and np.all(betas < 1)
    abar = np.cumprod(1 - betas)
    assert np.all(abar > 0) and np.all(abar <= 1) and np.all(np.diff(abar) < 0)


def test_exact_constants_of_the_authors_schedules():
    np.testing.assert_allclose(make_betas("trunc_lin", 32).numpy(), np.linspace(0.013125, 0.635, 32), rtol=1e-12)
    np.testing.assert_allclose(make_betas("trunc_lin", 10).numpy(), np.linspace(0.02, 0.11, 10), rtol=1e-12)  # truncated
    np.testing.assert_allclose(make_betas("linear", 2000).numpy(), np.linspace(1e-4, 0.02, 2000), rtol=1e-12)
    np.testing.assert_allclose(make_betas("scaled_linear", 100).numpy(), np.linspace(1e-3, 0.2, 100), rtol=1e-12)

    def cosine(u):
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    expected = [min(1 - cosine((i + 1) / 50) / cosine(i / 50), 0.999) for i in range(50)]
    np.testing.assert_allclose(make_betas("cosine", 50).numpy(), expected, rtol=1e-10)
    expected = [min(1 - (1 - math.sqrt((i + 1) / 50 + 1e-4)) / (1 - math.sqrt(i / 50 + 1e-4)), 0.999) for i in range(50)]
    np.testing.assert_allclose(make_betas("sqrt", 50).numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("schedule,steps,key", [("quadratic", 10, "beta_schedule"), ("linear", 0, "diffusion_steps"),
                                                ("linear", 2.5, "diffusion_steps")])
def test_bad_schedule_arguments_name_the_key(schedule, steps, key):
    with pytest.raises(ValueError, match=key):
        make_betas(schedule, steps)


def test_q_sample_moments_over_many_draws():
    diffusion = GaussianDiffusion(32, "trunc_lin")
    abar = np.cumprod(1 - make_betas("trunc_lin", 32).numpy())
    torch.manual_seed(0)
    n, t_value = 200_000, 7
    x0 = torch.tensor([[1.5, -2.0, 0.5]]).expand(n, 3)
    x_t = diffusion.q_sample(x0, torch.full((n,), t_value)).double().numpy()
    se_mean = math.sqrt((1 - abar[t_value]) / n)
    np.testing.assert_allclose(x_t.mean(0), math.sqrt(abar[t_value]) * np.array([1.5, -2.0, 0.5]), atol=5 * se_mean)
    np.testing.assert_allclose(x_t.var(0), 1 - abar[t_value], rtol=0.02)
    noise = torch.randn(4, 3)
    t = torch.tensor([0, 5, 17, 31])
    expected = np.sqrt(abar[t.numpy()])[:, None] * 1.0 + np.sqrt(1 - abar[t.numpy()])[:, None] * noise.numpy()
    np.testing.assert_allclose(diffusion.q_sample(torch.ones(4, 3), t, noise=noise).numpy(), expected, rtol=1e-6)


def test_offset_noise_adds_a_shared_per_example_shift():
    diffusion = GaussianDiffusion(10, "linear")
    torch.manual_seed(1)
    n, scale = 200_000, 0.5
    x0, t = torch.zeros(n, 2), torch.full((n,), 9)
    eps = (diffusion.q_sample(x0, t, offset_noise_scale=scale) / diffusion.sqrt_one_minus_alphas_cumprod[9]).double()
    covariance = np.cov(eps.numpy().T)
    assert covariance[0, 1] == pytest.approx(scale ** 2, abs=0.02)
    assert covariance[0, 0] == pytest.approx(1 + scale ** 2, rel=0.02)
    plain = (diffusion.q_sample(x0, t) / diffusion.sqrt_one_minus_alphas_cumprod[9]).double().numpy()
    assert abs(np.cov(plain.T)[0, 1]) < 0.02


def test_ddpm_posterior_is_the_bayes_posterior():
    """q(x_{t-1} | x_t, x0) from q(x_t | x_{t-1}) q(x_{t-1} | x0), by precision weighting, equals the core's."""
    steps = 32
    betas = make_betas("trunc_lin", steps).numpy()
    abar = np.cumprod(1 - betas)
    diffusion = GaussianDiffusion(steps, "trunc_lin")
    torch.manual_seed(2)
    x0, x_t = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    for t in (1, 10, 31):
        prior_mean, prior_var = math.sqrt(abar[t - 1]) * x0.numpy(), 1 - abar[t - 1]  # x_{t-1} | x0
        alpha = 1 - betas[t]  # x_t | x_{t-1} ~ N(sqrt(alpha) x_{t-1}, beta_t)
        precision = 1 / prior_var + alpha / betas[t]
        bayes_mean = (prior_mean / prior_var + math.sqrt(alpha) * x_t.numpy() / betas[t]) / precision
        closed_mean = (math.sqrt(abar[t - 1]) * betas[t] * x0.numpy()
                       + math.sqrt(alpha) * (1 - abar[t - 1]) * x_t.numpy()) / (1 - abar[t])
        np.testing.assert_allclose(bayes_mean, closed_mean, rtol=1e-10)
        tt = torch.full((3,), t)
        for s in (None, tt - 1):
            mean, variance = diffusion.posterior(x0, x_t, tt, s)
            np.testing.assert_allclose(mean.numpy(), bayes_mean, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(variance.numpy().ravel(), 1 / precision, rtol=1e-9)
        c1 = betas[t] * math.sqrt(abar[t - 1]) / (1 - abar[t])
        c2 = (1 - abar[t - 1]) * math.sqrt(alpha) / (1 - abar[t])
        assert diffusion.posterior_mean_coef1[t].item() == pytest.approx(c1, rel=1e-12)
        assert diffusion.posterior_mean_coef2[t].item() == pytest.approx(c2, rel=1e-12)


def test_strided_posterior_is_a_ddpm_on_the_merged_step():
    betas = make_betas("linear", 100).numpy()
    abar = np.cumprod(1 - betas)
    diffusion = GaussianDiffusion(100, "linear")
    x0, x_t = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    t, s = 80, 60
    alpha = abar[t] / abar[s]
    mean, variance = diffusion.posterior(x0, x_t, torch.full((2,), t), torch.full((2,), s))
    expected = (math.sqrt(abar[s]) * (1 - alpha) * x0.numpy() + math.sqrt(alpha) * (1 - abar[s]) * x_t.numpy()) / (1 - abar[t])
    np.testing.assert_allclose(mean.numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(variance.numpy().ravel(), (1 - alpha) * (1 - abar[s]) / (1 - abar[t]), rtol=1e-10)


def test_ddpm_step_adds_the_chosen_variance_and_no_noise_at_the_end():
    betas = make_betas("linear", 50).numpy()
    diffusion = GaussianDiffusion(50, "linear")
    x0, x_t, noise = torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3)
    t = torch.tensor([20, 20])
    mean, posterior_variance = diffusion.posterior(x0, x_t, t)
    torch.testing.assert_close(diffusion.ddpm_step(x0, x_t, t, noise=noise, variance="posterior"),
                               mean + posterior_variance.sqrt() * noise)
    torch.testing.assert_close(diffusion.ddpm_step(x0, x_t, t, noise=noise, variance="fixed_large"),
                               mean + math.sqrt(betas[20]) * noise)
    last = torch.tensor([0, 0])
    for variance in ("posterior", "fixed_large"):
        torch.testing.assert_close(diffusion.ddpm_step(x0, x_t, last, noise=noise, variance=variance), x0)


def test_ddim_step_with_a_perfect_oracle_lands_on_the_forward_process():
    diffusion = GaussianDiffusion(100, "cosine")
    x0, noise = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    t, s = torch.full((4,), 90), torch.full((4,), 40)
    x_t = diffusion.q_sample(x0, t, noise=noise)
    torch.testing.assert_close(diffusion.ddim_step(x0, x_t, t, s), diffusion.q_sample(x0, s, noise=noise))


@pytest.mark.parametrize("sampler,steps", [("ddim", None), ("ddim", 7), ("ddpm", None), ("ddpm", 10)])
def test_sampling_with_an_oracle_returns_x0(sampler, steps):
    diffusion = GaussianDiffusion(32, "trunc_lin")
    torch.manual_seed(3)
    target = torch.randn(5, 8)
    x0 = diffusion.sample(lambda x_t, t: target, (5, 8), "cpu", sampler=sampler, sampler_steps=steps)
    torch.testing.assert_close(x0, target)


def test_sampling_timesteps_start_at_the_noisiest_step_and_end_at_zero():
    assert sampling_timesteps(5, None) == sampling_timesteps(5, 5) == [4, 3, 2, 1, 0]
    assert sampling_timesteps(2000, 20) == [1999 - 100 * i for i in range(20)] + [0]  # the authors' 21 calls
    assert sampling_timesteps(32, 7) == [31, 27, 23, 19, 15, 11, 7, 0]
    assert sampling_timesteps(32, 1) == [31, 0]
    with pytest.raises(ValueError, match="sampler='euler'"):
        GaussianDiffusion(5).sample(lambda x, t: x, (1, 2), "cpu", sampler="euler")


def test_guidance_combination():
    conditional, unconditional = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])
    torch.testing.assert_close(guided_prediction(conditional, unconditional, 0.0), conditional)
    torch.testing.assert_close(guided_prediction(conditional, unconditional, 2.0), torch.tensor([2.0, 8.0]))


@pytest.mark.parametrize("dim", [8, 9])
def test_timestep_embedding_shape_closed_form_and_gradient(dim):
    embedding = TimestepEmbedding(dim, t_scale=2.0)
    t = torch.tensor([0, 3, 7])
    assert embedding(t).shape == (3, dim)
    half = dim // 2
    zero = embedding.sinusoid(torch.tensor([0]))[0]
    torch.testing.assert_close(zero[:half], torch.ones(half))
    torch.testing.assert_close(zero[half:], torch.zeros(dim - half))
    torch.testing.assert_close(embedding.sinusoid(t), TimestepEmbedding(dim).sinusoid(2 * t))
    freqs = np.exp(-math.log(10000) * np.arange(half) / half)
    np.testing.assert_allclose(embedding.sinusoid(torch.tensor([3]))[0, :half].numpy(), np.cos(6 * freqs), rtol=1e-5)
    embedding(t).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in embedding.parameters())


def test_schedule_buffers_follow_the_module_but_stay_out_of_checkpoints():
    diffusion = GaussianDiffusion(10)
    assert diffusion.state_dict() == {}
    assert diffusion.alphas_cumprod.dtype == torch.float64
    x = torch.randn(2, 3)
    assert diffusion.q_sample(x, torch.tensor([1, 2])).dtype == torch.float32
