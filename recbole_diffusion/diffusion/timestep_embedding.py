"""The embedding of the diffusion step ``t`` that every model's network reads (MODELS.md, "Timestep embedding")."""

import math

import torch
from torch import nn


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
