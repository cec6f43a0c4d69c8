"""The Gaussian diffusion of every model: beta schedules, forward noising, DDPM / DDIM reverse steps, guidance,
sampling (improved-diffusion's ``gaussian_diffusion.py``, for an x0-predicting network).

Every model of this package diffuses one ``B x d`` target embedding and predicts ``x0`` directly; this module
holds the diffusion arithmetic of ``MODELS.md`` ("Shared diffusion core") so no model re-implements it. The
training-step samplers are :mod:`~recbole_diffusion.diffusion.resample`, the evaluation noise
:mod:`~recbole_diffusion.diffusion.keyed_noise`, the step embedding
:mod:`~recbole_diffusion.diffusion.timestep_embedding`.

Conventions: timesteps are 0-based, ``t`` in ``0 .. T-1``; ``abar[t] = prod_{s <= t} (1 - beta_s)``, and the
step "before" ``t = 0`` has ``abar = 1`` (clean data). A reverse step goes from ``t`` to an earlier ``s < t``
(``s = t - 1`` for plain DDPM, a stride for DDIM or respaced DDPM; ``s = -1`` means "to x0").
"""

import math

import torch
from torch import nn

from recbole_diffusion.diffusion.keyed_noise import KeyedNoise

BETA_SCHEDULES = ("linear", "scaled_linear", "trunc_lin", "cosine", "sqrt")
DDPM_VARIANCES = ("fixed_large", "posterior")
SAMPLERS = ("ddpm", "ddim", "one_step")



def _betas_from_alpha_bar(alpha_bar, num_steps, max_beta=0.999):
    """Discretise a continuous ``abar(u)``, ``u`` in [0, 1], into ``num_steps`` betas (Nichol & Dhariwal)."""
    u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    abar = alpha_bar(u)
    return (1.0 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def make_betas(schedule, num_steps, beta_start=1e-4, beta_end=0.02):
    """Betas (float64, length ``num_steps``) of a named schedule, with the constants of the authors' code.

    * ``linear``: ``linspace(beta_start, beta_end, T)`` (DreamRec / PreferDiff: 1e-4 .. 0.02).
    * ``scaled_linear``: the same with both ends times ``1000 / T`` (DiffuRec's "linear").
    * ``trunc_lin``: ``linspace(s*1e-4 + 0.01, s*0.02 + 0.01, T)`` with ``s = 1000 / T``; when that end
      exceeds 1 it becomes ``s*0.001 + 0.01`` (DiffuRec's default).
    * ``cosine``: ``abar(u) = cos((u + 0.008) / 1.008 * pi / 2)^2``, betas clipped at 0.999.
    * ``sqrt``: ``abar(u) = 1 - sqrt(u + 1e-4)``, discretised like cosine.
    """
    if schedule not in BETA_SCHEDULES:
        raise ValueError(f"beta_schedule={schedule!r}: unknown schedule, expected one of {BETA_SCHEDULES}")
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"diffusion_steps={num_steps!r}: the number of diffusion steps T must be an integer >= 1")
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    scale = 1000.0 / num_steps
    if schedule == "scaled_linear":
        return torch.linspace(scale * beta_start, scale * beta_end, num_steps, dtype=torch.float64)
    if schedule == "trunc_lin":
        start, end = scale * 0.0001 + 0.01, scale * 0.02 + 0.01
        if end > 1:
            end = scale * 0.001 + 0.01
        return torch.linspace(start, end, num_steps, dtype=torch.float64)
    if schedule == "cosine":
        return _betas_from_alpha_bar(lambda u: torch.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2, num_steps)
    return _betas_from_alpha_bar(lambda u: 1 - torch.sqrt(u + 0.0001), num_steps)


def _gather(values, t, like):
    """``values[t]`` (float64) shaped to broadcast against ``like`` (``B x 1 x ...``); ``t = -1`` gives 1.

    Step coefficients are combined in float64 and cast to the data's dtype only when applied: near ``t = 0``
    the quantity ``1 - abar`` is about 1e-4 and float32 rounding of ``abar`` would cost it 3 digits.
    """
    padded = torch.cat([values.new_ones(1), values])
    return padded[t + 1].reshape(-1, *([1] * (like.dim() - 1)))


def _merged_posterior(abar_t, abar_s):
    """``(coef1, coef2, variance)`` of ``q(x_s | x_t, x0)`` for the merged step ``alpha = abar_t / abar_s``
    (float64, any shape): the mean is ``coef1 x0 + coef2 x_t``."""
    alpha = abar_t / abar_s
    coef1 = abar_s.sqrt() * (1 - alpha) / (1 - abar_t)
    coef2 = alpha.sqrt() * (1 - abar_s) / (1 - abar_t)
    variance = (1 - alpha) * (1 - abar_s) / (1 - abar_t)
    return coef1, coef2, variance


def _ddim_coefficients(abar_t, abar_s, eta):
    """``(x0_coef, eps_coef, sigma^2)`` of a DDIM step, ``x_s = x0_coef x0_hat + eps_coef x_t + sigma z``."""
    sigma_sq = eta ** 2 * (1 - abar_t / abar_s) * (1 - abar_s) / (1 - abar_t)
    eps_coef = (1 - abar_s - sigma_sq).clamp(min=0).sqrt() / (1 - abar_t).sqrt()
    # x_s = sqrt(abar_s) x0_hat + eps_coef * (x_t - sqrt(abar_t) x0_hat), with eps_hat expanded
    x0_coef = abar_s.sqrt() - eps_coef * abar_t.sqrt()
    return x0_coef, eps_coef, sigma_sq


def guided_prediction(conditional, unconditional, guidance_weight):
    """Classifier-free guidance: ``(1 + w) * f(x_t, h) - w * f(x_t, null)``."""
    return (1.0 + guidance_weight) * conditional - guidance_weight * unconditional


def sampling_timesteps(num_steps, sampler_steps):
    """The decreasing timesteps a reverse run visits: all of ``T-1 .. 0``, or a strided subset.

    With ``k = sampler_steps < T``: ``k`` jumps from the noisiest step ``T - 1`` down to ``t = 0``, of
    ``(T - 1) // k`` steps each and one more for the first ``(T - 1) % k`` of them, so no jump is more than one step
    longer than another, and ``k + 1`` denoiser calls. When ``k`` divides ``T`` these are strides of ``T / k`` and a
    last jump one step shorter: for T = 2000 and k = 20, 1999, 1899, ..., 99, 0, the 21 denoiser calls of the
    authors' DDIM. The run always starts from the noisiest step, whatever T and k.

    One difference from the authors' DDIM (PreferDiff): they read the schedule at these steps but feed the
    network ``t + 1`` (2000, 1900, ..., 100) except at the last call (0). We feed the network the same ``t``
    as the schedule, the steps it is trained on (``t`` in ``0 .. T-1``); their first input, 2000, is a step
    the network never sees in training. The time embedding of ``t`` and ``t + 1`` differ little at T = 2000.
    """
    if sampler_steps is None or sampler_steps >= num_steps:
        return list(range(num_steps - 1, -1, -1))
    jump, longer = divmod(num_steps - 1, sampler_steps)
    steps = [num_steps - 1]
    for index in range(sampler_steps):
        steps.append(steps[-1] - jump - (1 if index < longer else 0))
    return steps


def reverse_timesteps(num_steps, sampler, sampler_steps):
    """The timesteps at which :meth:`GaussianDiffusion.sample` calls the network, noisiest first.

    ``one_step`` calls it once, at ``T - 1``; ``ddpm`` and ``ddim`` at :func:`sampling_timesteps`.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}: expected one of {SAMPLERS}")
    return [num_steps - 1] if sampler == "one_step" else sampling_timesteps(num_steps, sampler_steps)


def denoiser_calls(sampler, sampler_steps, num_steps):
    """Network calls of one reverse run (per user and ensemble member) of a ``(sampler, steps, T)`` setting.

    The cost unit of a sampler: ``one_step`` makes 1 call; all T steps make T; ``k < T`` strided steps make
    ``k + 1`` (:func:`sampling_timesteps`). A call of a guided model evaluates its conditional and unconditional
    branches as one batch.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}: expected one of {SAMPLERS}")
    if sampler == "one_step":
        return 1
    if sampler_steps is None or sampler_steps >= num_steps:
        return num_steps
    return sampler_steps + 1


class GaussianDiffusion(nn.Module):
    """A Gaussian diffusion over ``B x d`` vectors with an x0-predicting model (schedule + pure step functions).

    Holds no trainable parameters: the schedule is precomputed once, in float64, as non-persistent buffers,
    so it moves with the model between devices but is not written to checkpoints.
    """

    def __init__(self, num_steps, schedule="linear", beta_start=1e-4, beta_end=0.02):
        super().__init__()
        betas = make_betas(schedule, num_steps, beta_start, beta_end)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        alphas_cumprod_prev = torch.cat([betas.new_ones(1), alphas_cumprod[:-1]])
        self.num_steps = int(num_steps)
        for name, value in {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            # DDPM posterior q(x_{t-1} | x_t, x0) = N(coef1 * x0 + coef2 * x_t, posterior_variance)
            "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * (1.0 - betas).sqrt() / (1.0 - alphas_cumprod),
            "posterior_variance": betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        }.items():
            self.register_buffer(name, value, persistent=False)

    def sample_timesteps(self, batch_size, device):
        """``t ~ Uniform{0 .. T-1}``, one per example."""
        return torch.randint(0, self.num_steps, (batch_size,), device=device)

    def q_sample(self, x0, t, noise=None, offset_noise_scale=0.0):
        """Forward process ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``.

        With ``offset_noise_scale > 0`` (DiffuRecSys, training only) ``eps = randn(B, d) +
        offset_noise_scale * randn(B, 1)``: a per-example constant shift on top of white noise.
        """
        if noise is None:
            noise = torch.randn_like(x0)
            if offset_noise_scale:
                noise = noise + offset_noise_scale * torch.randn_like(x0[..., :1])
        signal, noise_scale = _gather(self.sqrt_alphas_cumprod, t, x0), _gather(self.sqrt_one_minus_alphas_cumprod, t, x0)
        return signal.to(x0.dtype) * x0 + noise_scale.to(x0.dtype) * noise

    def posterior(self, x0_hat, x_t, t, s=None):
        """Mean and variance of ``q(x_s | x_t, x0 = x0_hat)``; ``s = t - 1`` by default.

        For ``s = t - 1`` the mean is ``c1_t x0 + c2_t x_t`` with the precomputed DDPM coefficients. For an
        earlier ``s`` (respaced sampling) the same formula is applied to the merged step
        ``alpha = abar_t / abar_s``, exactly as a DDPM whose schedule is the subsequence of visited steps.
        """
        if s is None:
            coef1, coef2 = _gather(self.posterior_mean_coef1, t, x_t), _gather(self.posterior_mean_coef2, t, x_t)
            variance = _gather(self.posterior_variance, t, x_t)
        else:
            coef1, coef2, variance = _merged_posterior(_gather(self.alphas_cumprod, t, x_t),
                                                       _gather(self.alphas_cumprod, s, x_t))
        mean = coef1.to(x_t.dtype) * x0_hat + coef2.to(x_t.dtype) * x_t
        return mean, variance.to(x_t.dtype)

    def ddpm_step(self, x0_hat, x_t, t, s=None, variance="posterior", noise=None):
        """One ancestral DDPM step from ``t`` to ``s`` (default ``t - 1``) given the model's ``x0_hat``.

        ``variance="posterior"`` uses ``beta~ = beta (1 - abar_s) / (1 - abar_t)`` (DreamRec, PreferDiff);
        ``"fixed_large"`` uses ``beta`` itself (DiffuRec; improved-diffusion's value at ``t = 0`` never matters
        because no noise is added when stepping to x0, ``s = -1``).
        """
        s = t - 1 if s is None else s
        mean, posterior_variance = self.posterior(x0_hat, x_t, t, s)
        if variance == "posterior":
            var = posterior_variance
        else:
            var = (1 - _gather(self.alphas_cumprod, t, x_t) / _gather(self.alphas_cumprod, s, x_t)).to(x_t.dtype)
        if noise is None:
            noise = torch.randn_like(x_t)
        not_last = (s >= 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.dim() - 1)))
        return mean + not_last * var.sqrt() * noise

    def ddim_step(self, x0_hat, x_t, t, s, eta=0.0, noise=None):
        """DDIM from ``t`` to ``s``: ``sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z``.

        ``eps_hat = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t)`` and ``sigma^2 = eta^2`` times the
        posterior variance of the step. ``eta = 0`` (the default, what the models use) is deterministic;
        ``eta = 1`` has exactly the DDPM posterior mean and variance.
        """
        x0_coef, eps_coef, sigma_sq = _ddim_coefficients(_gather(self.alphas_cumprod, t, x_t),
                                                         _gather(self.alphas_cumprod, s, x_t), eta)
        out = x0_coef.to(x_t.dtype) * x0_hat + eps_coef.to(x_t.dtype) * x_t
        if eta and noise is not None:
            out = out + sigma_sq.sqrt().to(x_t.dtype) * noise
        return out

    def reverse_plan(self, timesteps, sampler, variance, dtype):
        """Every step's coefficients of a reverse run over ``timesteps``, computed once per run.

        Returns three ``n x 1`` tensors in ``dtype``: the step from ``timesteps[i]`` to the next one (``-1``
        after the last) is ``x_s = a[i] x0_hat + b[i] x_t + sigma[i] z`` (``sigma`` is 0 for DDIM and for the
        last step). The float64 arithmetic is that of :meth:`ddpm_step` / :meth:`ddim_step` (``eta = 0``), so
        a run gives the very same bits as those steps applied one at a time.
        """
        t = torch.tensor(timesteps, dtype=torch.long, device=self.alphas_cumprod.device)
        s = torch.cat([t[1:], t.new_full((1,), -1)])
        abar_t, abar_s = _gather(self.alphas_cumprod, t, t), _gather(self.alphas_cumprod, s, t)
        if sampler == "ddpm":
            x0_coef, xt_coef, posterior_variance = _merged_posterior(abar_t, abar_s)
            var = posterior_variance if variance == "posterior" else 1 - abar_t / abar_s
            sigma = (s >= 0).to(dtype) * var.to(dtype).sqrt()
        else:  # ddim, and one_step's single step to x0 (abar_s = 1: x0_hat itself)
            x0_coef, xt_coef, _ = _ddim_coefficients(abar_t, abar_s, 0.0)
            sigma = torch.zeros_like(abar_t, dtype=dtype)
        return x0_coef.to(dtype)[:, None], xt_coef.to(dtype)[:, None], sigma[:, None]

    @torch.no_grad()
    def sample(self, denoise, shape, device, sampler="ddpm", sampler_steps=None, variance="posterior", noise=None):
        """Run the reverse process from ``x_T ~ N(0, I)`` and return the final ``x0``.

        ``denoise(x_t, t)`` returns ``x0_hat`` for a whole batch (``t`` is a ``B`` tensor). ``sampler_steps``
        visits a strided subset of the T steps (all of them when ``None``). ``sampler="one_step"`` visits only
        the noisiest step ``T - 1``: one denoiser call, whose ``x0_hat`` is the sample (the step to ``s = -1``
        lands exactly on it; ``sampler_steps`` is not read). ``noise`` (a :class:`KeyedNoise`) makes ``x_T``
        and the DDPM noise a function of the rows' keys; without it they come from torch's RNG. The network is
        called :func:`denoiser_calls` times; the step coefficients come from :meth:`reverse_plan`.
        """
        timesteps = reverse_timesteps(self.num_steps, sampler, sampler_steps)

        def draw(stream, step):
            if noise is None:
                return torch.randn(shape, device=device)
            return noise.normal(stream, step, shape[1:]).to(device)

        x_t = draw(KeyedNoise.START, self.num_steps)
        x0_coef, xt_coef, sigma = (c.to(device) for c in self.reverse_plan(timesteps, sampler, variance, x_t.dtype))
        for index, step in enumerate(timesteps):
            x0_hat = denoise(x_t, torch.full((shape[0],), step, device=device, dtype=torch.long))
            x_t = x0_coef[index] * x0_hat + xt_coef[index] * x_t
            if sampler == "ddpm" and index < len(timesteps) - 1:  # no noise is added on the step to x0
                x_t = x_t + sigma[index] * draw(KeyedNoise.DDPM, step)
        return x_t
