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


@dataclass(frozen=True)
class AppendOnlySeries:
    """The newest values of a series that only ever grows at its end: ``values`` are its elements
    ``end - len(values)`` … ``end - 1``, and an element never changes once appended.

    Why a type of its own in a detector's state: most of a stream's saved state is such series (the likelihood
    histories, the windowed Gaussian's buffer: ~0.9 MB), and between two checkpoints only their newest elements
    change. Saying so lets a checkpoint writer append those instead of rewriting the whole history.
    """

    values: np.ndarray
    end: int

    def __post_init__(self) -> None:
        if self.values.ndim != 1:
            raise ValueError(f"an append-only series is 1-D, got shape {self.values.shape}")
        if self.end < self.values.size:
            raise ValueError(f"end {self.end} < the {self.values.size} values held")

    @property
    def start(self) -> int:
        return self.end - int(self.values.size)


def series_values(saved):
    """A saved series' elements: an :class:`AppendOnlySeries`'s values, or the plain list / array a state file
    from before the type (or a one-channel ``state_dict``) holds."""
    return saved.values if isinstance(saved, AppendOnlySeries) else saved
