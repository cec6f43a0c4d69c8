"""The shared diffusion core against closed forms computed here independently (numpy / math, float64)."""

import math

import numpy as np
import pytest
import torch

from recbole_diffusion.diffusion import (
    BETA_SCHEDULES, GaussianDiffusion, KeyedNoise, TimestepEmbedding, denoiser_calls, guided_prediction, keyed_normal,
    make_betas, reverse_timesteps, sampling_timesteps,
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


@pytest.mark.parametrize("steps, k", [(32, 5), (100, 30), (1000, 7), (2000, 20), (10, 9), (7, 2)])
def test_strided_jumps_differ_by_at_most_one_step(steps, k):
    """ddim_steps / ddpm_steps that do not divide T spread the remainder instead of one long jump at the end."""
    visited = sampling_timesteps(steps, k)
    jumps = [a - b for a, b in zip(visited, visited[1:])]
    assert visited[0] == steps - 1 and visited[-1] == 0 and len(jumps) == k
    assert max(jumps) - min(jumps) <= 1


def test_sampling_timesteps_start_at_the_noisiest_step_and_end_at_zero():
    assert sampling_timesteps(5, None) == sampling_timesteps(5, 5) == [4, 3, 2, 1, 0]
    assert sampling_timesteps(2000, 20) == [1999 - 100 * i for i in range(20)] + [0]  # the authors' 21 calls
    assert sampling_timesteps(32, 7) == [31, 26, 21, 16, 12, 8, 4, 0]  # 31 = 3 x 5 + 4 x 4: no long last jump
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


@pytest.mark.parametrize("steps", [1, 2, 5, 32, 100, 2000])
def test_denoiser_calls_count_the_timesteps_of_every_setting(steps):
    for sampler in ("ddpm", "ddim"):
        for sampler_steps in [None, *range(1, min(steps, 60) + 1), steps + 1]:
            assert denoiser_calls(sampler, sampler_steps, steps) == len(
                reverse_timesteps(steps, sampler, sampler_steps)) == len(sampling_timesteps(steps, sampler_steps))
    assert denoiser_calls("one_step", 7, steps) == 1 == len(reverse_timesteps(steps, "one_step", 7))
    with pytest.raises(ValueError, match="sampler='euler'"):
        denoiser_calls("euler", None, steps)


@pytest.mark.parametrize("sampler,sampler_steps,expected", [
    ("ddpm", None, 32), ("ddpm", 16, 17), ("ddim", 8, 9), ("ddim", 2, 3), ("ddpm", 1, 2), ("one_step", None, 1)])
def test_sample_calls_the_network_as_often_as_denoiser_calls_says(sampler, sampler_steps, expected):
    diffusion = GaussianDiffusion(32, "trunc_lin")
    seen = []

    def denoise(x_t, t):
        seen.append(int(t[0]))
        return torch.tanh(x_t)

    diffusion.sample(denoise, (3, 4), "cpu", sampler=sampler, sampler_steps=sampler_steps)
    assert len(seen) == denoiser_calls(sampler, sampler_steps, 32) == expected
    assert seen == reverse_timesteps(32, sampler, sampler_steps)
    assert denoiser_calls("ddim", 20, 2000) == 21 and denoiser_calls("ddpm", None, 2000) == 2000  # PreferDiff, DreamRec


def _reference_keyed_normal(seed, keys, shape):
    """keyed_normal written plainly (one hash per column, whole tensors, no blocks): the optimised path's reference."""
    mask = 0xFFFFFFFF

    def mul32(x, constant):
        return (x * (constant & 0xFFFF) + (((x * (constant >> 16)) & 0xFFFF) << 16)) & mask

    def hash32(x):
        x = mul32(x ^ (x >> 16), 0x7FEB352D)
        x = mul32(x ^ (x >> 15), 0x846CA68B)
        return x ^ (x >> 16)

    state = hash32(torch.full((keys.size(0),), seed & mask, dtype=torch.int64))
    for column in keys.long().unbind(dim=1):
        state = hash32(state ^ (column & mask))
    element = hash32(torch.arange(math.prod(shape), dtype=torch.int64))
    bits = hash32(state[:, None] ^ element[None, :])
    u1 = ((hash32(bits ^ 0x68E31DA4) >> 8).float() + 0.5) / 2.0 ** 24
    u2 = ((hash32(bits ^ 0x1B56C4E9) >> 8).float() + 0.5) / 2.0 ** 24
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).view(keys.size(0), *shape)


@pytest.mark.parametrize("shape", [(1,), (16,), (20, 64)])
def test_keyed_noise_has_the_bits_of_the_plain_formula(shape):
    """Blocks of rows, in-place hashing and the shared key part hashed once change no bit of the draws."""
    rows = 300  # (20, 64) needs several blocks of rows
    keys = torch.stack([torch.arange(rows) * 7919 + 3, torch.arange(rows) % 3], dim=1)
    for seed in (0, 2020, 2 ** 33 + 5):
        assert torch.equal(keyed_normal(seed, keys, shape), _reference_keyed_normal(seed, keys, shape))
        noise = KeyedNoise(seed, keys)
        for stream, step in ((noise.START, 32), (noise.DDPM, 0), (noise.LAMBDA, 31)):
            full_keys = torch.cat([torch.full((rows, 1), stream), torch.full((rows, 1), step), keys], dim=1)
            expected = _reference_keyed_normal(seed, full_keys, shape)
            assert torch.equal(noise.normal(stream, step, shape), expected)
            assert torch.equal(noise.normal(stream, torch.full((rows,), step), shape), expected)


def _reference_sample(diffusion, denoise, shape, sampler, sampler_steps, variance, noise):
    """The reverse loop written with the public step functions, one step at a time (the plain reference)."""
    x_t = noise.normal(KeyedNoise.START, diffusion.num_steps, shape[1:])
    timesteps = [diffusion.num_steps - 1] if sampler == "one_step" else sampling_timesteps(diffusion.num_steps,
                                                                                          sampler_steps)
    for step, next_step in zip(timesteps, timesteps[1:] + [-1]):
        t = torch.full((shape[0],), step)
        s = torch.full_like(t, next_step)
        x0_hat = denoise(x_t, t)
        if sampler == "ddpm":
            x_t = diffusion.ddpm_step(x0_hat, x_t, t, s, variance=variance,
                                      noise=noise.normal(KeyedNoise.DDPM, step, shape[1:]))
        else:
            x_t = diffusion.ddim_step(x0_hat, x_t, t, s)
    return x_t


@pytest.mark.parametrize("steps,schedule", [(32, "trunc_lin"), (200, "linear"), (50, "cosine")])
def test_sample_has_the_bits_of_the_step_by_step_loop(steps, schedule):
    """The precomputed plan of step coefficients gives exactly what ddpm_step / ddim_step give one at a time."""
    diffusion = GaussianDiffusion(steps, schedule)
    weight = torch.randn(8, 8, generator=torch.Generator().manual_seed(0)) / 8 ** 0.5

    def denoise(x_t, t):
        return torch.tanh(x_t @ weight) * (1 + t[:, None].float() / steps)

    keys = torch.stack([torch.arange(6) + 100, torch.zeros(6, dtype=torch.long)], dim=1)
    for sampler, sampler_steps in (("ddpm", None), ("ddpm", 4), ("ddim", None), ("ddim", 7), ("ddim", 1),
                                   ("one_step", None)):
        for variance in ("posterior", "fixed_large"):
            noise = KeyedNoise(11, keys)
            fast = diffusion.sample(denoise, (6, 8), "cpu", sampler, sampler_steps, variance, noise)
            plain = _reference_sample(diffusion, denoise, (6, 8), sampler, sampler_steps, variance, noise)
            assert torch.equal(fast, plain), (sampler, sampler_steps, variance)
