"""Typed values that cross module boundaries (scorer -> streamer, benchmarks, dashboard)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ScoreBatch:
    """What every scorer returns for a batch of N inputs.

    ``scores`` is one float per sample, higher = more anomalous. ``maps`` localises the anomaly at the
    input's resolution (N, H, W) so the dashboard can show *where* in time/frequency or in the image it is.
    ``reconstructions`` is optional (N, C, H, W): the dashboard's window inspector shows it when present.
    """

    scores: np.ndarray
    maps: np.ndarray
    reconstructions: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scores.ndim != 1:
            raise ValueError(f"scores must be 1-D (N,), got shape {self.scores.shape}")
        if self.maps.ndim != 3 or self.maps.shape[0] != self.scores.shape[0]:
            raise ValueError(
                f"maps must be (N, H, W) with N={self.scores.shape[0]}, got shape {self.maps.shape}"
            )

    def __len__(self) -> int:
        return int(self.scores.shape[0])
