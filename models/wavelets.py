"""Differentiable 2-D discrete wavelet transform with periodization, as strided convolutions.

Why our own: the U-Net needs the Daubechies sub-bands of its input at every encoder resolution, inside the
autograd graph, batched over N and C, and with exactly dyadic sizes (H/2, W/2). ``ptwt`` pads (non-dyadic sizes)
and ``pytorch_wavelets`` does not install here. Periodization makes the transform an orthogonal map for
orthogonal wavelets (db, sym, coif), so the inverse is simply the adjoint: a transposed convolution followed by
folding the periodic wrap back — perfect reconstruction without a separate synthesis bank.

Conventions (match ``pywt.dwt2(x, w, mode="periodization")``): one level maps [N, C, H, W] to four bands
LL, LH, HL, HH = pywt's cA, cH, cV, cD, each [N, C, H/2, W/2]. When bands are concatenated on channels the
layout is band-major: ``[LL(c=0..C-1), LH(...), HL(...), HH(...)]`` → [N, 4C, H/2, W/2].
"""
from __future__ import annotations

import functools

import numpy as np
import pywt
import torch
import torch.nn as nn
import torch.nn.functional as F

BANDS = ("LL", "LH", "HL", "HH")


@functools.lru_cache(maxsize=None)
def _filter_bank(wavelet: str) -> tuple[np.ndarray, int]:
    """4 separable 2-D analysis filters [4, L, L] (cross-correlation form) and the periodic shift."""
    w = pywt.Wavelet(wavelet)
    if not w.orthogonal:
        raise ValueError(
            f"wavelet {wavelet!r} is not orthogonal; the periodized transform here needs an orthogonal "
            "wavelet (e.g. db1..db20, sym*, coif*)"
        )
    lo = np.asarray(w.dec_lo, dtype=np.float64)[::-1]  # flipped: conv2d is a cross-correlation
    hi = np.asarray(w.dec_hi, dtype=np.float64)[::-1]
    # pywt's periodized coefficient k is sum_j h[j] x[(2k + L/2 - j) mod N]: verified against pywt.dwt.
    # First letter = filter along rows (axis -2), second = along columns (axis -1):
    # cA = lo/lo, cH = hi(rows)/lo(cols), cV = lo(rows)/hi(cols), cD = hi/hi.
    bank = np.stack([np.outer(lo, lo), np.outer(hi, lo), np.outer(lo, hi), np.outer(hi, hi)])
    return bank, len(lo)


def _wrap_index(n: int, filter_len: int, device: torch.device) -> torch.Tensor:
    """Indices of the periodic extension that makes a stride-2 'valid' correlation give pywt's n/2 outputs."""
    left = filter_len // 2 - 1
    padded = n - 2 + filter_len
    return (torch.arange(padded, device=device) - left) % n


def _check_size(h: int, w: int) -> None:
    if h % 2 or w % 2:
        raise ValueError(f"DWT needs even spatial sizes, got {h}x{w} (use sizes divisible by 2**levels)")


class DWT2d(nn.Module):
    """One level of the periodized 2-D DWT: [N, C, H, W] → (LL, LH, HL, HH), each [N, C, H/2, W/2]."""

    def __init__(self, wavelet: str = "db2") -> None:
        super().__init__()
        bank, self.filter_len = _filter_bank(wavelet)
        self.wavelet = wavelet
        # float64 so double-precision callers get exact filters; cast to the input's dtype per call.
        self.register_buffer("weight", torch.from_numpy(bank.copy()).unsqueeze(1), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        bands = self.forward_stacked(x)
        return tuple(bands.unbind(dim=2))  # type: ignore[return-value]

    def forward_stacked(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] → [N, C, 4, H/2, W/2] (band axis in the order LL, LH, HL, HH)."""
        n, c, h, w = x.shape
        _check_size(h, w)
        rows = _wrap_index(h, self.filter_len, x.device)
        cols = _wrap_index(w, self.filter_len, x.device)
        padded = x.reshape(n * c, 1, h, w).index_select(2, rows).index_select(3, cols)
        weight = self.weight.to(device=x.device, dtype=x.dtype)
        out = F.conv2d(padded, weight, stride=2)  # [N*C, 4, H/2, W/2]
        return out.reshape(n, c, 4, h // 2, w // 2)

    def forward_concat(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] → [N, 4C, H/2, W/2], band-major channels (LL of every channel first)."""
        stacked = self.forward_stacked(x)
        n, c, _, h2, w2 = stacked.shape
        return stacked.transpose(1, 2).reshape(n, 4 * c, h2, w2)


class IDWT2d(nn.Module):
    """Inverse of :class:`DWT2d` (exact for orthogonal wavelets): four bands → [N, C, H, W]."""

    def __init__(self, wavelet: str = "db2") -> None:
        super().__init__()
        bank, self.filter_len = _filter_bank(wavelet)
        self.wavelet = wavelet
        self.register_buffer("weight", torch.from_numpy(bank.copy()).unsqueeze(1), persistent=False)

    def forward(
        self, ll: torch.Tensor, lh: torch.Tensor, hl: torch.Tensor, hh: torch.Tensor
    ) -> torch.Tensor:
        return self.forward_stacked(torch.stack([ll, lh, hl, hh], dim=2))

    def forward_stacked(self, bands: torch.Tensor) -> torch.Tensor:
        """[N, C, 4, h, w] → [N, C, 2h, 2w]: the adjoint of the analysis (transposed conv + periodic fold)."""
        n, c, four, h2, w2 = bands.shape
        if four != 4:
            raise ValueError(f"expected 4 bands on axis 2, got {four}")
        h, w = 2 * h2, 2 * w2
        weight = self.weight.to(device=bands.device, dtype=bands.dtype)
        spread = F.conv_transpose2d(bands.reshape(n * c, 4, h2, w2), weight, stride=2)
        rows = _wrap_index(h, self.filter_len, bands.device)
        cols = _wrap_index(w, self.filter_len, bands.device)
        folded = spread.new_zeros(n * c, 1, h, spread.shape[3]).index_add(2, rows, spread)
        folded = folded.new_zeros(n * c, 1, h, w).index_add(3, cols, folded)
        return folded.reshape(n, c, h, w)

    def forward_concat(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`DWT2d.forward_concat`: [N, 4C, h, w] → [N, C, 2h, 2w]."""
        n, c4, h2, w2 = x.shape
        if c4 % 4:
            raise ValueError(f"channel count {c4} is not a multiple of 4")
        return self.forward_stacked(x.reshape(n, 4, c4 // 4, h2, w2).transpose(1, 2))


def wavelet_pyramid(x: torch.Tensor, levels: int, wavelet: str = "db2") -> list[torch.Tensor]:
    """Multi-level decomposition: level l (1-based) is [N, 4C, H/2^l, W/2^l] = [LL, LH, HL, HH] of LL_{l-1}.

    Every level keeps its own LL, so a consumer at resolution H/2^l sees the coarse picture and the details
    at that scale in one tensor — what the U-Net's wavelet pyramid module injects into each encoder level.
    """
    if levels < 1:
        raise ValueError("levels must be >= 1")
    h, w = x.shape[-2:]
    if h % (2**levels) or w % (2**levels):
        raise ValueError(f"size {h}x{w} is not divisible by 2**{levels}={2**levels}")
    dwt = _cached_dwt(wavelet)
    out: list[torch.Tensor] = []
    current = x
    for _ in range(levels):
        stacked = dwt.forward_stacked(current)
        n, c, _, h2, w2 = stacked.shape
        out.append(stacked.transpose(1, 2).reshape(n, 4 * c, h2, w2))
        current = stacked[:, :, 0]
    return out


@functools.lru_cache(maxsize=None)
def _cached_dwt(wavelet: str) -> DWT2d:
    return DWT2d(wavelet)
