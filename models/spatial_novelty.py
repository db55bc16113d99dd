"""Spatial novelty: is this value outside every value seen so far (by more than a tolerance of their range)?

Why it exists beside the likelihood channels: a likelihood judges a score against the score's own recent history,
so it needs a few points to react and it forgets. A value that leaves the whole range the stream has ever shown is
an anomaly on its own, at once, whatever the model thinks. This is the rule HTM's NAB detector adds to its
likelihood (a 5 % tolerance), applied here to the range of *past* points only: no file-wide min/max (which NAB's
published detectors are handed by the runner) and nothing from the future.

The first points of a stream widen the range quickly and fire often, which is why a detector only uses this
after its training part (NAB never scores the probationary rows either).
"""
from __future__ import annotations

import numpy as np

from models.baselines import as_series


def spatial_novelty(values: np.ndarray, tolerance: float = 0.05) -> np.ndarray:
    """1.0 where ``values[t]`` lies beyond ``[min - tol·range, max + tol·range]`` of ``values[:t]``, else 0.0.

    Causal by construction (running extremes of earlier points only). The first point, and every point while
    the past range is still empty (a flat start), get 0: a range of zero says nothing about scale.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    x = as_series(values)
    out = np.zeros(x.size)
    if x.size < 2:
        return out
    past_max = np.maximum.accumulate(x)[:-1]
    past_min = np.minimum.accumulate(x)[:-1]
    span = past_max - past_min
    now = x[1:]
    beyond = (now > past_max + tolerance * span) | (now < past_min - tolerance * span)
    out[1:] = (beyond & (span > 0)).astype(np.float64)
    return out


__all__ = ["spatial_novelty"]
