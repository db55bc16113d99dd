"""Which cells a context-conditioned diffusion model fills in from the rest (imputation-style, as ImDiffusion).

A model denoising a whole map sees an anomaly in its own input, and a good denoiser reproduces much of it: the
anomaly is "reconstructed away". A context-conditioned model is given a block's surroundings clean and only the
block itself noised, and learns to denoise the block from both; scored that way, each cell is judged against what
its normal neighbourhood predicts, and never conditions on its own clean value.

The masks are ``block``×``block`` squares in a 2×2 checkerboard of squares: pattern k of four hides a quarter of
the map, every cell is hidden by exactly one pattern, and every hidden square has clean squares on all four sides.
Training draws a pattern and an offset per sample, so that the model fills squares wherever they fall.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

PATTERNS = 4


@dataclass(frozen=True)
class BlockMasks:
    block: int

    def __post_init__(self) -> None:
        if self.block < 1:
            raise ValueError(f"block must be >= 1, got {self.block}")

    def pattern(self, k: int, height: int, width: int, dy: int = 0, dx: int = 0,
                device: torch.device | str = "cpu") -> torch.Tensor:
        """Pattern ``k`` (0–3) shifted by (``dy``, ``dx``) cells: (1, 1, height, width), 1 = hidden."""
        if not 0 <= k < PATTERNS:
            raise ValueError(f"pattern must be in 0..{PATTERNS - 1}, got {k}")
        row, col = divmod(k, 2)
        i = (torch.arange(height, device=device) + dy) // self.block
        j = (torch.arange(width, device=device) + dx) // self.block
        return (((i[:, None] % 2) == row) & ((j[None, :] % 2) == col)).float()[None, None]

    def patterns(self, height: int, width: int, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """The four scoring patterns (no offset): together they hide every cell exactly once."""
        return [self.pattern(k, height, width, device=device) for k in range(PATTERNS)]

    def sample(self, n: int, height: int, width: int, generator: torch.Generator,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """One random pattern and offset per sample, for training: (n, 1, height, width)."""
        ks = torch.randint(0, PATTERNS, (n,), generator=generator, device=generator.device)
        offsets = torch.randint(0, 2 * self.block, (n, 2), generator=generator, device=generator.device)
        return torch.cat([self.pattern(int(k), height, width, int(o[0]), int(o[1]), device=device)
                          for k, o in zip(ks.tolist(), offsets.tolist())])


def condition(clean: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """The model's conditioning input: the clean map outside the hidden cells, and the mask itself."""
    return torch.cat([(1 - hidden) * clean, hidden.expand(clean.shape[0], 1, *clean.shape[2:])], dim=1)
