"""Which series detectors a benchmark can run, and how a command-line name becomes a detector.

Detectors come from the registry in ``models.baselines`` (name -> factory). Other packages add theirs by
calling ``register_series_detector`` in a module listed in ``PLUGIN_MODULES``; those modules are imported
here when they exist, so ``scalowatch bench nab --scorer recon`` works as soon as the adapter is written.
A spec may carry keyword arguments: ``name:key=value,key=value`` (ints, floats, true/false, strings).
"""
from __future__ import annotations

import importlib
import importlib.util
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.baselines import SERIES_DETECTORS, SeriesDetector, create_series_detector
from models.calibration import training_part_likelihood
from models.errors import InputError

# Modules that register extra series detectors (e.g. the diffusion scorers' series adapter).
PLUGIN_MODULES: tuple[str, ...] = ("benchmarks.series_scorers",)
# The product's detector (models/detector) by its benchmark names: the one the monitor runs, and the same with each
# research scorer as its diffusion channel. They take a preset; the series benchmarks give each its own default.
PRODUCT_NAMES: tuple[str, ...] = ("scalowatch", "diffusion-recon", "diffusion-kl", "diffusion-trend",
                                  "diffusion-dynamic", "diffusion-adversarial")
VARIANTS: tuple[str, ...] = ("product", "without_diffusion", "diffusion_only")
"""An ablation's rows (``--ablate``): a product detector's :meth:`score_variants`, from one fit."""


def load_plugins() -> None:
    for mod in PLUGIN_MODULES:
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod)


def available_detectors() -> list[str]:
    load_plugins()
    return sorted(SERIES_DETECTORS)


def _literal(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


@dataclass(frozen=True)
class DetectorSpec:
    """A registry name plus keyword arguments; ``label`` names result folders and plot legends."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: str = ""  # the user's ``k=v`` part, kept for the label (benchmark defaults are not)

    @property
    def label(self) -> str:
        if not self.options:
            return self.name
        # ';' and '/' separate numbers inside one option ("value_discords=2;4"): keep them apart from "24".
        extra = self.options.replace("=", "-").replace(",", "_").replace(";", "-").replace("/", "-")
        return re.sub(r"[^A-Za-z0-9_.-]", "", f"{self.name}_{extra}")

    def build(self) -> SeriesDetector:
        load_plugins()
        return create_series_detector(self.name, **self.kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kwargs": dict(self.kwargs), "label": self.label}


def split_spec(text: str) -> tuple[str, dict[str, Any], str]:
    """``"name:k=v,k2=v2"`` → (name, {k: v, k2: v2}, "k=v,k2=v2"): the one parser of detector options."""
    name, _, rest = text.strip().partition(":")
    if not name:
        raise InputError(f"empty detector name in {text!r}")
    kwargs: dict[str, Any] = {}
    if rest:
        for part in rest.split(","):
            key, eq, value = part.partition("=")
            if not eq or not key.strip():
                raise InputError(f"bad detector option {part!r} in {text!r} (expected key=value)")
            kwargs[key.strip()] = _literal(value.strip())
    return name, kwargs, rest.strip()


def parse_spec(text: str, defaults: dict[str, dict[str, Any]] | None = None) -> DetectorSpec:
    """``"name"`` or ``"name:k=v,k2=v2"``; ``defaults[name]`` supplies per-benchmark kwargs."""
    name, options, rest = split_spec(text)
    kwargs: dict[str, Any] = {**(defaults or {}).get(name, {}), **options}
    load_plugins()
    if name not in SERIES_DETECTORS:
        raise InputError(f"unknown detector {name!r}; known: {sorted(SERIES_DETECTORS)}")
    spec = DetectorSpec(name, kwargs, rest)
    try:  # building is cheap (nothing is fitted): a bad option fails here, before any file is read
        spec.build()
    except (TypeError, ValueError) as exc:
        raise InputError(f"{text!r}: {exc}") from None
    return spec


def calibrated_scores(det: SeriesDetector, raw, train: int, n: int, where: str) -> np.ndarray:
    """A fitted detector's scores of ``n`` points as probabilities, the rule every series benchmark applies: as they
    are when the detector outputs probabilities (checked to lie in [0, 1]), else through the anomaly likelihood
    learnt on the first ``train`` points (NAB's own detectors calibrate so). ``where`` names the run in errors."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.shape != (n,) or not np.all(np.isfinite(raw)):
        raise InputError(f"{where}: expected {n} finite scores, got shape {raw.shape}")
    if det.output_is_probability:
        if np.any(raw < 0) or np.any(raw > 1):
            raise InputError(f"{where}: the detector claims probabilities but scored outside [0, 1]")
        return raw
    return training_part_likelihood(train).transform(raw)
