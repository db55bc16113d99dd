"""Time-conditioned discriminator for the ADDM adversarial loss (Kim et al. 2023, arXiv 2312.04382).

ADDM adds a discriminator that tells a real sample of the posterior q(x_{t-1} | x_t, x_0) from the denoiser's
own step p_θ(x_{t-1} | x_t). Noise levels differ enormously across t, so D must know t: the timestep embedding
is added to every stage, as in the U-Net. Kept small on purpose: it only has to supply a gradient signal at weight
≈ 0.05, and it must never dominate the CPU training budget.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.embeddings import sinusoidal_embedding


@dataclass(frozen=True)
class DiscriminatorConfig:
    in_channels: int = 1
    base_channels: int = 16
    num_downsamples: int = 3

    def to_dict(self) -> dict:
        return asdict(self)


class TimeConditionedDiscriminator(nn.Module):
    """D(x [N, C, H, W], t [N]) → logits [N] (positive = "real posterior sample")."""

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        ch = config.base_channels
        self.temb_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, self.temb_dim), nn.SiLU(), nn.Linear(self.temb_dim, self.temb_dim))
        self.conv_in = nn.Conv2d(config.in_channels, ch, 3, padding=1)
        self.stages = nn.ModuleList()
        self.time_proj = nn.ModuleList()
        for i in range(config.num_downsamples):
            out = ch * 2 if i < 2 else ch
            self.stages.append(nn.Conv2d(ch, out, 4, stride=2, padding=1))
            self.time_proj.append(nn.Linear(self.temb_dim, out))
            ch = out
        self.head = nn.Linear(ch, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time_mlp(sinusoidal_embedding(t.reshape(-1), self.config.base_channels).to(x.dtype))
        h = F.leaky_relu(self.conv_in(x), 0.2)
        for conv, proj in zip(self.stages, self.time_proj):
            h = F.leaky_relu(conv(h) + proj(temb)[:, :, None, None], 0.2)
        return self.head(h.mean(dim=(2, 3))).squeeze(1)
