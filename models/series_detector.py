"""The product detector behind the benchmarks' series-detector protocol (``fit(train)`` / ``score(values)``).

A thin driver of :mod:`models.detector`: the same :func:`~models.detector.online.score_series` path the monitor's
online state runs, so a benchmark number is the monitor's number. Registered as ``scalowatch`` (``preset=`` picks
the configuration, ``nab`` by default) and as ``diffusion-<scorer>`` (the same detector with another scorer).
"""
from __future__ import annotations

from typing import Any, Collection

import numpy as np

from models.baselines import as_series, register_series_detector
from models.detector import DetectorConfig, FittedDetector, preset, score_series
from models.detector.config import SCORERS
from models.errors import NotFittedError

PRODUCT = "scalowatch"


class ProductSeriesDetector:
    """``fit(train)`` fits the detector on the training part; ``score(values)`` scores every point causally."""

    def __init__(self, preset_name: str = "nab", name: str = PRODUCT, **options: Any) -> None:
        self.preset = preset_name
        self.config: DetectorConfig = preset(preset_name, **options)
        self.name = name
        self.output_is_probability = self.config.calibrate
        self.fitted: FittedDetector | None = None

    @property
    def lag(self) -> int:
        return 0 if self.fitted is None else self.fitted.lag

    def fit(self, train: np.ndarray) -> "ProductSeriesDetector":
        self.fitted = FittedDetector.fit(train, self.config, reference=False)  # scored from sample 0, never resumed
        return self

    def _fitted(self) -> FittedDetector:
        if self.fitted is None:
            raise NotFittedError(f"{self.name}: call fit(train) before score()")
        return self.fitted

    def score(self, values: np.ndarray) -> np.ndarray:
        return score_series(self._fitted(), as_series(values))["product"].scores

    def ablation_variants(self) -> dict[str, Collection[str] | None]:
        """product / without_diffusion / diffusion_only, as channel selections of this detector."""
        from models.detector.online import ablation_variants

        return ablation_variants(self._fitted())

    def score_variants(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """The ablation's three variants from one pass over the channels."""
        out = score_series(self._fitted(), as_series(values), self.ablation_variants())
        return {k: v.scores for k, v in out.items()}


def _factory(name: str, scorer: str | None):
    def build(preset: str = "nab", **options: Any) -> ProductSeriesDetector:
        if scorer is not None:
            options.setdefault("scorer", scorer)
        return ProductSeriesDetector(preset, name=name, **options)

    return build


register_series_detector(PRODUCT, _factory(PRODUCT, None))
for _scorer in SCORERS:
    register_series_detector(f"diffusion-{_scorer}", _factory(f"diffusion-{_scorer}", _scorer))

__all__ = ["PRODUCT", "ProductSeriesDetector"]
