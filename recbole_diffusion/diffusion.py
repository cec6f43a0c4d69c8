"""The shared diffusion core: beta schedules, forward noising, DDPM / DDIM reverse steps, guidance, sampling.

Every model of this package diffuses one ``B x d`` target embedding and predicts ``x0`` directly; this module
holds all of the diffusion arithmetic of ``MODELS.md`` ("Shared diffusion core") so no model re-implements it.

Conventions: timesteps are 0-based, ``t`` in ``0 .. T-1``; ``abar[t] = prod_{s <= t} (1 - beta_s)``, and the
step "before" ``t = 0`` has ``abar = 1`` (clean data). A reverse step goes from ``t`` to an earlier ``s < t``
(``s = t - 1`` for plain DDPM, a stride for DDIM or respaced DDPM; ``s = -1`` means "to x0").

Training draws its steps from a timestep sampler: uniform, or loss-aware importance sampling
(:class:`LossAwareTimestepSampler`) for models that report per-example losses.
"""

import math

import torch
from torch import nn

from recbole_diffusion import distributed

BETA_SCHEDULES = ("linear", "scaled_linear", "trunc_lin", "cosine", "sqrt")
DDPM_VARIANCES = ("fixed_large", "posterior")
SAMPLERS = ("ddpm", "ddim", "one_step")
TIMESTEP_SAMPLERS = ("uniform", "loss_aware")


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

    With ``k = sampler_steps < T``: ``k`` strides of ``T // k`` counted down from the noisiest step ``T - 1``,
    then a last call at ``t = 0``. For T = 2000 and k = 20 that is 1999, 1899, ..., 99, 0: the 21 denoiser
    calls of the authors' DDIM. The run always starts from the noisiest step, whatever T and k.

    One difference from the authors' DDIM (PreferDiff): they read the schedule at these steps but feed the
    network ``t + 1`` (2000, 1900, ..., 100) except at the last call (0). We feed the network the same ``t``
    as the schedule, the steps it is trained on (``t`` in ``0 .. T-1``); their first input, 2000, is a step
    the network never sees in training. The time embedding of ``t`` and ``t + 1`` differ little at T = 2000.
    """
    if sampler_steps is None or sampler_steps >= num_steps:
        return list(range(num_steps - 1, -1, -1))
    stride = num_steps // sampler_steps
    steps = [num_steps - 1 - i * stride for i in range(sampler_steps)]
    return steps + [0] if steps[-1] > 0 else steps


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
    ``k + 1`` (the k strides from ``T - 1`` and a last call at ``t = 0``), or ``k`` when the last stride lands
    on 0. A call of a guided model evaluates its conditional and unconditional branches as one batch.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}: expected one of {SAMPLERS}")
    if sampler == "one_step":
        return 1
    if sampler_steps is None or sampler_steps >= num_steps:
        return num_steps
    last_stride = num_steps - 1 - (sampler_steps - 1) * (num_steps // sampler_steps)
    return sampler_steps + (1 if last_stride > 0 else 0)


_MASK32 = 0xFFFFFFFF
# Rows of a draw hashed at a time on a CPU: about 2**16 int64 elements (512 KiB), so that the in-place passes of
# the hash stay in the core's cache instead of streaming through memory (measured on a 2-core EPYC: 2**15 to
# 2**16 fastest, 2**13 slower from Python's per-block cost); a GPU takes every row at once.
_CPU_CHUNK_ELEMENTS = 1 << 16
_UNIFORM_SALTS = (0x68E31DA4, 0x1B56C4E9)


def _mul32(x, constant):
    """``x * constant mod 2**32`` for int64 tensors of 32-bit values, split so no product leaves int64."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def _hash32(x):
    """A 32-bit integer mixer (xor-shift / multiply, "lowbias32" constants): every input bit flips about half
    of the output bits. Exact integer arithmetic, so CPU and CUDA give the same bits. Works on int64 tensors
    of 32-bit values and on Python ints alike (same bits)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _hash32_(x, scratch):
    """:func:`_hash32` in place on the int64 tensor ``x`` (``scratch``: a tensor of its shape), same bits."""
    for shift, constant in ((16, 0x7FEB352D), (15, 0x846CA68B), (16, None)):
        x.bitwise_xor_(torch.bitwise_right_shift(x, shift, out=scratch))
        if constant is not None:  # x * constant mod 2**32, split as in _mul32
            torch.mul(x, constant >> 16, out=scratch).bitwise_and_(0xFFFF).bitwise_left_shift_(16)
            x.mul_(constant & 0xFFFF).add_(scratch).bitwise_and_(_MASK32)
    return x


def _row_states(state, keys):
    """Hash each row's key columns into the running ``state`` (a ``B`` tensor), one column at a time."""
    for column in keys.long().unbind(dim=1):
        state = _hash32(state ^ (column & _MASK32))
    return state


def _element_hashes(numel, device):
    """The hash of each element index of a draw: it depends on the draw's size only."""
    return _hash32(torch.arange(numel, dtype=torch.int64, device=device))


def _normal_from_states(states, elements, shape):
    """Box-Muller normals ``B x *shape`` from row states (``B``) and element hashes (``numel``).

    Two hashed 24-bit uniforms per element; computed in place, a block of rows at a time (see
    ``_CPU_CHUNK_ELEMENTS``), with exactly the operations of the plain formula, so the bits do not depend on
    the blocks.
    """
    rows, numel = states.size(0), elements.numel()
    out = torch.empty(rows, numel, dtype=torch.float32, device=states.device)
    block = rows if states.is_cuda else max(1, _CPU_CHUNK_ELEMENTS // max(numel, 1))
    for begin in range(0, rows, block):
        bits = states[begin:begin + block, None] ^ elements[None, :]
        scratch = torch.empty_like(bits)
        _hash32_(bits, scratch)
        first = _hash32_(bits ^ _UNIFORM_SALTS[0], scratch)
        second = _hash32_(bits.bitwise_xor_(_UNIFORM_SALTS[1]), scratch)
        u1 = first.bitwise_right_shift_(8).float().add_(0.5).div_(2.0 ** 24)
        u2 = second.bitwise_right_shift_(8).float().add_(0.5).div_(2.0 ** 24)
        # sqrt(-2 log u1) * cos(2 pi u2)
        target = out[begin:begin + block]
        torch.log(u1, out=target).mul_(-2.0).sqrt_().mul_(u2.mul_(2.0 * math.pi).cos_())
    return out.view(rows, *shape)


def keyed_normal(seed, keys, shape):
    """Standard normal draws that are a pure function of ``(seed, keys[b], element index)``.

    ``keys`` is a ``B x K`` integer tensor (one row of K counters per draw, values below 2**32); the result is
    ``B x *shape`` on ``keys``' device. Two hashed 24-bit uniforms per element go through Box-Muller, so no
    random generator state is read or advanced: the same key gives the same noise in any batch, any process
    and any order (up to float rounding of ``log`` / ``cos`` between devices).
    """
    state = torch.full((keys.size(0),), int(seed) & _MASK32, dtype=torch.int64, device=keys.device)
    states = _row_states(_hash32(state), keys)
    return _normal_from_states(states, _element_hashes(math.prod(shape), keys.device), shape)


class KeyedNoise:
    """The noise of one evaluation batch, keyed by ``(eval_seed, stream, step, row key)`` (see :func:`keyed_normal`).

    ``row_keys`` (``B x K``) names each row: a user id and an ensemble member, say. Each use of noise is a
    ``stream``; a draw at reverse step ``t`` is keyed by it too, so every user gets the same noise for the same
    step whatever the batch size, the batch it falls in or the number of processes. Equal to
    ``keyed_normal(seed, [stream, step, row_keys])``; a draw at an integer step hashes the part of the key that
    all rows share once, and the element hashes of a draw size are kept for the batch's later draws.
    """

    START, DDPM, LAMBDA = 1, 2, 3  # streams: x_T, the DDPM step noise, DiffuRec's lambda

    def __init__(self, seed, row_keys):
        self.seed, self.row_keys = int(seed), row_keys
        self._elements = {}

    def normal(self, stream, step, shape):
        """``B x *shape`` standard normal draws for ``stream`` at reverse step ``step`` (an int or a ``B`` tensor)."""
        rows = self.row_keys.size(0)
        numel = math.prod(shape)
        if numel not in self._elements:
            self._elements[numel] = _element_hashes(numel, self.row_keys.device)
        if isinstance(step, int):  # the key's shared part (seed, stream, step) hashed once, as a Python int
            shared = _hash32(_hash32(_hash32(self.seed & _MASK32) ^ (stream & _MASK32)) ^ (step & _MASK32))
            states = _row_states(torch.full((rows,), shared, dtype=torch.int64, device=self.row_keys.device),
                                 self.row_keys)
        else:
            step = torch.as_tensor(step, device=self.row_keys.device).expand(rows)
            state = torch.full((rows,), self.seed & _MASK32, dtype=torch.int64, device=self.row_keys.device)
            keys = torch.cat([torch.full_like(step, stream)[:, None], step[:, None], self.row_keys], dim=1)
            states = _row_states(_hash32(state), keys)
        return _normal_from_states(states, self._elements[numel], shape)


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


class UniformTimestepSampler(nn.Module):
    """``t ~ Uniform{0 .. T-1}`` with unit weights; keeps no state."""

    def __init__(self, num_steps):
        super().__init__()
        self.num_steps = int(num_steps)

    def sample(self, batch_size, device):
        """``(t, weights)``: ``B`` steps and the weight of each example's loss (all 1)."""
        t = torch.randint(0, self.num_steps, (batch_size,), device=device)
        return t, torch.ones(batch_size, device=device)

    def update(self, t, losses):
        """Uniform sampling does not depend on the losses."""


class LossAwareTimestepSampler(nn.Module):
    """Importance sampling of the diffusion steps by their recent losses (improved-diffusion's
    loss-second-moment resampler, Nichol & Dhariwal 2021), for models that report a loss per example.

    Each step keeps a ring buffer of its last ``history`` losses. Until every step has ``history`` of them the
    steps are drawn uniformly; then ``p_t`` is proportional to ``sqrt(mean(loss_t^2))``, mixed with a uniform
    share ``u``: ``p = (1 - u) p + u / T`` (every step stays reachable, so its history keeps moving, and no
    weight exceeds ``1 / u``). Each example's loss is weighted by ``1 / (T p_t)``, which keeps the objective
    unbiased: ``E_{t ~ p}[L_t / (T p_t)] = (1/T) sum_t L_t``, the uniform-step objective, with less variance.

    The history and the counts are registered buffers, so they are part of the model's ``state_dict``: they
    are checkpointed and a resumed run continues with the same distribution. Under ``torch.distributed``
    every process's steps and losses are gathered (in rank order) before each update, so every process keeps
    the same state.
    """

    def __init__(self, num_steps, history=10, uniform_share=0.001):
        super().__init__()
        if int(history) != history or history < 1:
            raise ValueError(f"loss_aware_history={history!r}: must be an integer >= 1")
        if not 0 < uniform_share <= 1:
            raise ValueError(f"loss_aware_uniform_share={uniform_share!r}: must lie in (0, 1]")
        self.num_steps, self.history, self.uniform_share = int(num_steps), int(history), float(uniform_share)
        self.register_buffer("loss_history", torch.zeros(self.num_steps, self.history, dtype=torch.float64))
        self.register_buffer("loss_counts", torch.zeros(self.num_steps, dtype=torch.long))

    def probabilities(self):
        """``p_t`` (float64, length T): uniform until every step holds ``history`` losses (or all are 0)."""
        uniform = torch.full_like(self.loss_history[:, 0], 1.0 / self.num_steps)
        scale = self.loss_history.pow(2).mean(dim=1).sqrt()
        total = scale.sum()
        mixed = (1.0 - self.uniform_share) * scale / total.clamp(min=torch.finfo(total.dtype).tiny) \
            + self.uniform_share * uniform
        warmed_up = (self.loss_counts >= self.history).all() & (total > 0)
        return torch.where(warmed_up, mixed, uniform)

    def sample(self, batch_size, device):
        """``(t, weights)``: ``B`` steps drawn from :meth:`probabilities` and the weights ``1 / (T p_t)``."""
        p = self.probabilities().to(device)
        t = torch.multinomial(p, batch_size, replacement=True)
        return t, (1.0 / (self.num_steps * p[t])).float()

    @torch.no_grad()
    def update(self, t, losses):
        """Append each example's loss (``B``, detached) to its step's history, all processes' examples alike.

        Vectorised over the batch: the examples are grouped by step in arrival order; the j-th new loss of a
        step goes to slot ``(count + j) mod history`` and only the last ``history`` of a step's new losses are
        written, so the slots written are distinct and the buffer ends as a sequential ring buffer would.
        """
        t, losses = distributed.all_gather_rows(t.long(), losses.detach().to(self.loss_history.dtype))
        t, order = torch.sort(t, stable=True)
        losses = losses[order]
        per_step = torch.bincount(t, minlength=self.num_steps)
        first = torch.cumsum(per_step, dim=0) - per_step
        rank = torch.arange(t.numel(), device=t.device) - first[t]
        keep = rank >= per_step[t] - self.history
        slot = (self.loss_counts[t] + rank) % self.history
        self.loss_history[t[keep], slot[keep]] = losses[keep]
        self.loss_counts += per_step


def make_timestep_sampler(name, num_steps, history=10, uniform_share=0.001):
    """The training-step sampler of config key ``timestep_sampler`` (``uniform`` or ``loss_aware``)."""
    if name not in TIMESTEP_SAMPLERS:
        raise ValueError(f"timestep_sampler={name!r}: expected one of {TIMESTEP_SAMPLERS}")
    if name == "uniform":
        return UniformTimestepSampler(num_steps)
    return LossAwareTimestepSampler(num_steps, history, uniform_share)


class TimestepEmbedding(nn.Module):
    """Sinusoidal embedding of the step ``t`` followed by a 2-layer MLP (``d -> mult*d -> d``).

    ``t_scale`` multiplies ``t`` before the sinusoid (DiffuRec rescales to 0..1000 with ``1000 / T``).
    """

    def __init__(self, dim, t_scale=1.0, hidden_mult=4, activation="silu", max_period=10000):
        super().__init__()
        self.dim, self.t_scale, self.max_period = dim, t_scale, max_period
        act = {"silu": nn.SiLU, "gelu": nn.GELU}[activation]
        self.mlp = nn.Sequential(nn.Linear(dim, hidden_mult * dim), act(), nn.Linear(hidden_mult * dim, dim))

    def sinusoid(self, t):
        half = self.dim // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = (t.float() * self.t_scale)[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if self.dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t):
        return self.mlp(self.sinusoid(t))
