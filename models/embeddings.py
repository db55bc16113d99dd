"""Timestep embedding for the denoiser: the paper's hybrid sinusoidal + Conv1D embedding.

Why hybrid: the sinusoidal code (Vaswani/Ho) gives every t a unique, smooth, multi-frequency signature, but an
MLP on it sees each frequency as an unrelated input. Treating the sinusoidal vector as a 1-channel sequence and
running a small Conv1D over it lets the network learn filters shared across neighbouring frequencies (local
patterns in the frequency ordering), which the paper (Chen 2025, "hybrid time embeddings") credits with better
conditioning at few training steps. The two branches are added and passed through an MLP, like the standard
DDPM time MLP, so with the conv branch zeroed this reduces exactly to the usual embedding.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """[N] timesteps → [N, dim] (cos | sin halves), frequencies geometric from 1 to 1/max_period."""
    if dim % 2:
        raise ValueError(f"embedding dim must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float().reshape(-1, 1) * freqs.reshape(1, -1)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class HybridTimeEmbedding(nn.Module):
    """t [N] → [N, out_dim]: MLP(sinusoidal(t) + proj(Conv1D(sinusoidal(t))))."""

    def __init__(
        self,
        dim: int,
        out_dim: int | None = None,
        conv_channels: int = 8,
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd so the sequence length is kept")
        self.dim = dim
        self.out_dim = out_dim or 4 * dim
        self.conv = nn.Sequential(
            nn.Conv1d(1, conv_channels, kernel_size, padding=kernel_size // 2),
            nn.SiLU(),
            # Stride 2 halves the length so the flattened projection stays small.
            nn.Conv1d(conv_channels, conv_channels, kernel_size, stride=2, padding=kernel_size // 2),
            nn.SiLU(),
        )
        conv_len = (dim + 2 * (kernel_size // 2) - kernel_size) // 2 + 1
        self.conv_proj = nn.Linear(conv_channels * conv_len, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, self.out_dim), nn.SiLU(), nn.Linear(self.out_dim, self.out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        sin = sinusoidal_embedding(t, self.dim)
        conv = self.conv(sin.unsqueeze(1)).flatten(1)
        return self.mlp(sin + self.conv_proj(conv))
