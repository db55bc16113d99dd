"""The one detector that the monitor, the model CLI and the benchmarks all drive.

``config`` holds every knob and the named presets; ``fitted`` is what fitting a stream's training part learns
(window, scalogram diffusion model, discord references, normalisers); ``online`` is the per-stream state that turns
samples and window scores into scores. See ``models/README.md``.
"""
from models.detector.config import PRESETS, DetectorConfig, Preset, preset
from models.detector.fitted import FitSummary, FittedDetector, WindowScores
from models.detector.online import (CHANNEL_WORDS, Detection, Detections, DetectorState, describe_channel,
                                    score_series)

__all__ = ["CHANNEL_WORDS", "Detection", "Detections", "DetectorConfig", "DetectorState", "FitSummary",
           "FittedDetector", "PRESETS", "Preset", "WindowScores", "describe_channel", "preset", "score_series"]
