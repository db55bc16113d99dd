"""Simple series anomaly detectors behind one protocol, so benchmarks compare everything the same way.

A :class:`SeriesDetector` is fitted on the anomaly-free prefix of a series and then scores the whole
series *causally*: ``score(values)[t]`` may depend on ``values[:t + 1]`` and the fitted state only, and
``score`` restarts from the fitted state on every call (online detectors replay the series in order,
seeing each point once). Higher = more anomalous.

Detectors register by name (``SERIES_DETECTORS``: name -> factory) so the bench runner can build any of
them from a string; the diffusion scorers plug in through :func:`register_series_detector`.
"""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import numpy as np

from models.errors import InputError


@runtime_checkable
class SeriesDetector(Protocol):
    """``fit(train)`` on normal data, ``score(values)`` -> one causal score per point of ``values``.

    Attributes the bench runner reads:
    - ``name``: label used in result files;
    - ``output_is_probability``: True when scores are already calibrated to [0, 1] (NAB uses them
      as they are); False for raw scores (the runner wraps them in an :class:`AnomalyLikelihood`);
    - ``lag``: how many points after the middle of an anomalous pattern the score peaks (a subsequence
      detector scores a window at its last point); the UCR runner subtracts it from the argmax.
    """

    name: str
    output_is_probability: bool
    lag: int

    def fit(self, train: np.ndarray) -> "SeriesDetector": ...

    def score(self, values: np.ndarray) -> np.ndarray: ...


SeriesDetectorFactory = Callable[..., SeriesDetector]
SERIES_DETECTORS: dict[str, SeriesDetectorFactory] = {}


def register_series_detector(name: str, factory: SeriesDetectorFactory | None = None):
    """Register ``factory`` under ``name``; usable as a decorator when ``factory`` is omitted."""

    def _add(f: SeriesDetectorFactory) -> SeriesDetectorFactory:
        if name in SERIES_DETECTORS and SERIES_DETECTORS[name] is not f:
            raise ValueError(f"series detector {name!r} is already registered")
        SERIES_DETECTORS[name] = f
        return f

    return _add(factory) if factory is not None else _add


def create_series_detector(name: str, **kwargs) -> SeriesDetector:
    """Build a registered detector; unknown names get an error listing the known ones."""
    try:
        factory = SERIES_DETECTORS[name]
    except KeyError:
        raise InputError(f"unknown series detector {name!r}; known: {sorted(SERIES_DETECTORS)}") from None
    return factory(**kwargs)


def as_series(values: np.ndarray, what: str = "series", min_length: int = 1) -> np.ndarray:
    """1-D finite float64 copy, or a clear InputError."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        arr = arr.squeeze()
        if arr.ndim != 1:
            raise InputError(f"{what} must be 1-D, got shape {np.shape(values)}")
    if arr.size < min_length:
        raise InputError(f"{what} needs at least {min_length} points, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{what} contains NaN or inf")
    return arr


# Register the built-in baselines (their heavy imports — stumpy, river — happen lazily inside them).
from models.baselines import gaussian as _gaussian  # noqa: E402,F401
from models.baselines import half_space_trees as _hst  # noqa: E402,F401
from models.baselines import matrix_profile as _mp  # noqa: E402,F401

__all__ = [
    "SERIES_DETECTORS",
    "SeriesDetector",
    "as_series",
    "create_series_detector",
    "register_series_detector",
]
