"""The one detector that the monitor, the model CLI and the benchmarks all drive.

``config`` holds every knob and the named presets; ``fitted`` is what fitting a stream's training part learns
(window, scalogram diffusion model, discord references, normalisers); ``online`` is the per-stream state that turns
samples and window scores into scores; ``channels`` names the channels in words. See ``models/README.md``.

Names are loaded on first use (PEP 562), so ``models.detector.channels`` stays importable without torch (the
dashboard explains stored points with it).
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "CHANNEL_WORDS": "channels", "describe_channel": "channels",
    "MIN_TRAIN_SAMPLES": "config", "PRESETS": "config", "SCORERS": "config", "DetectorConfig": "config",
    "Preset": "config",
    "preset": "config",
    "FitSummary": "fitted", "FittedDetector": "fitted", "WindowScores": "fitted",
    "Detection": "online", "Detections": "online", "DetectorState": "online", "score_series": "online",
    "window_scores_together": "online",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'models.detector' has no attribute {name!r}")
    return getattr(importlib.import_module(f"models.detector.{module}"), name)


__all__ = sorted(_WHERE)
