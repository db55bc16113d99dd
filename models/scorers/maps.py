"""Anomaly-map arithmetic shared by the scorers: distances, smoothing, resizing, map → sample score.

All functions are batched torch ops on the scorer's device; maps are (N, H, W).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Reduction = Literal["topk", "max", "mean"]


def l1_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pixel |x − y|, mean over channels: (N, C, H, W) → (N, H, W)."""
    return (x - y).abs().mean(dim=1)


def cosine_distance_map(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 − cos(a, b) along channels at every location: (N, F, h, w) → (N, h, w), in [0, 2]."""
    return 1.0 - F.cosine_similarity(a, b, dim=1, eps=eps)


def mse_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-location mean squared difference over channels: (N, F, h, w) → (N, h, w)."""
    return (a - b).pow(2).mean(dim=1)


def resize_map(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) → (N, H, W) bilinear; maps must come back at the input's resolution."""
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    return F.interpolate(m.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def gaussian_smooth(m: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, H, W) maps with reflect padding; ``sigma <= 0`` is a no-op."""
    if sigma <= 0:
        return m
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, m.shape[-1] - 1, m.shape[-2] - 1)
    if radius < 1:
        return m
    xs = torch.arange(-radius, radius + 1, device=m.device, dtype=m.dtype)
    kernel = torch.exp(-0.5 * (xs / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = m.unsqueeze(1)
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, kernel.reshape(1, 1, 1, -1))
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.reshape(1, 1, -1, 1))
    return x.squeeze(1)


def reduce_map(m: torch.Tensor, how: Reduction = "topk", top_percent: float = 1.0) -> torch.Tensor:
    """Map → one score per sample.

    ``topk``: mean of the highest ``top_percent`` % of pixels — as sensitive to a small localised anomaly as
    ``max`` but not decided by one noisy pixel. ``max``: the papers' image score. ``mean``: whole-map average.
    """
    flat = m.flatten(1)
    if how == "max":
        return flat.max(dim=1).values
    if how == "mean":
        return flat.mean(dim=1)
    if how == "topk":
        k = max(1, int(round(flat.shape[1] * top_percent / 100.0)))
        return flat.topk(k, dim=1).values.mean(dim=1)
    raise ValueError(f"unknown reduction {how!r}; choose 'topk', 'max' or 'mean'")
