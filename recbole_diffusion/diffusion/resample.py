"""The training-step samplers (improved-diffusion's ``resample.py``): which diffusion steps a training batch
draws, and the weight of each example's loss.

``timestep_sampler: uniform`` draws every step alike; ``loss_aware`` draws by the steps' recent losses (models
that report a loss per example, SeqDiffRec). Under ``torch.distributed`` the loss-aware sampler gathers every
process's losses (:func:`all_gather_rows`) so that every process keeps the same state.
"""

import torch
import torch.distributed as dist
from torch import nn

TIMESTEP_SAMPLERS = ("uniform", "loss_aware")


def all_gather_rows(*tensors):
    """Every process's rows of ``tensors`` (one first dimension within a process, any size across them),
    concatenated in rank order; the tensors themselves outside a process group.

    Tensor collectives on the tensors' device (padded to the longest process's rows), no pickling: the
    loss-aware timestep sampler calls this at every training step.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return tensors
    world_size = dist.get_world_size()
    size = torch.tensor([tensors[0].size(0)], device=tensors[0].device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    sizes = [int(value) for value in sizes]
    gathered = []
    for tensor in tensors:
        padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
        padded[: tensor.size(0)] = tensor
        parts = [torch.empty_like(padded) for _ in range(world_size)]
        dist.all_gather(parts, padded)
        gathered.append(torch.cat([part[:rows] for part, rows in zip(parts, sizes)]))
    return tuple(gathered)


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
        t, losses = all_gather_rows(t.long(), losses.detach().to(self.loss_history.dtype))
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
