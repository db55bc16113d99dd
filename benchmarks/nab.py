"""NAB benchmark runner: every detector over every corpus file, online, then NAB-scored.

Protocol (the same for every detector, no per-file tuning):
- each file's probationary part (NAB: ``min(floor(0.15 n), 750)`` rows) is the only training data:
  ``detector.fit(values[:probation])``;
- ``detector.score(values)`` is causal (checked by the protocol tests), one score per row;
- detectors whose scores are not already probabilities are calibrated online by an HTM-style
  :class:`AnomalyLikelihood` whose learning period is the probationary part;
- the NAB-format result files are written, then scored with the project's NAB scorer (thresholds
  optimised per profile over the whole corpus, as NAB does).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from benchmarks.detectors import DetectorSpec
from benchmarks.nab_files import NabCorpus, NabSeries, result_path, window_labels, write_result_file
from models.calibration import training_part_likelihood
from models.errors import InputError
from models.metrics import nab as nab_metrics

logger = logging.getLogger(__name__)

NAB_DEFAULT_DETECTORS: tuple[str, ...] = (
    "windowed_gaussian",
    "windowed_gaussian_train",
    "matrix_profile",
    "matrix_profile_train",
    "half_space_trees",
    "half_space_trees_train",
)
# A frozen Gaussian saturates 1 - Q(|z|) at exactly 1.0 once the data drifts; its |z| goes through the
# likelihood calibration instead, like every other raw score.
# Level and amplitude shifts are common NAB anomalies; z-normalised subsequences cannot see them.
# Diffusion detectors: every channel calibrated by its own likelihood — diffusion, level/scale, the online
# windowed Gaussian and level-keeping nearest-neighbour distances to the probationary part at five lengths —
# reported as HTM's log-scaled likelihood (NAB's output convention; monotone, so no score changes with it),
# overridden where a value leaves the range seen so far (HTM's 5 % spatial rule), one alert per rising edge
# within a fifth of the probationary part (CAD OSE's rest period).
# The scalograms are standardised with the probationary part's statistics, not per window: NAB's anomalies are
# as often "how big" as "which shape". See models.series_detector, "Fusion".
NAB_DIFFUSION_DEFAULTS: dict = {
    "calibrate": True, "fusion": "likelihood", "gaussian_channel": True, "value_discords": (2, 4, 8, 16, 32),
    "log_scale": True, "spatial_tolerance": 0.05, "suppress_fraction": 0.2, "scalogram_normalise": "training",
}
NAB_DETECTOR_DEFAULTS: dict[str, dict] = {
    "windowed_gaussian_train": {"output": "zscore"},
    "matrix_profile": {"normalize": False},
    "matrix_profile_train": {"normalize": False},
    **{f"diffusion-{s}": dict(NAB_DIFFUSION_DEFAULTS) for s in ("recon", "kl", "trend", "dynamic", "adversarial")},
}
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def detect_series(spec: DetectorSpec, series: NabSeries) -> tuple[np.ndarray, np.ndarray]:
    """(raw scores, NAB anomaly_score in [0, 1]) for one file."""
    n = len(series)
    probation = nab_metrics.probationary_length(n)
    det = spec.build()
    det.fit(series.values[:probation])
    raw = np.asarray(det.score(series.values), dtype=np.float64)
    if raw.shape != (n,) or not np.all(np.isfinite(raw)):
        raise InputError(f"{spec.label} on {series.key}: expected {n} finite scores, got shape {raw.shape}")
    if getattr(det, "output_is_probability", False):
        if np.any(raw < 0) or np.any(raw > 1):
            raise InputError(f"{spec.label} claims probabilities but scored outside [0, 1] on {series.key}")
        return raw, raw
    return raw, training_part_likelihood(probation).transform(raw)


@dataclass
class NabDetectorReport:
    spec: DetectorSpec
    results: dict[str, nab_metrics.ProfileResult]
    seconds: float

    def summary(self) -> dict:
        return {
            "detector": self.spec.to_dict(),
            "scores": {p: round(r.normalized, 3) for p, r in self.results.items()},
            "thresholds": {p: r.threshold for p, r in self.results.items()},
            "raw_scores": {p: r.raw_score for p, r in self.results.items()},
            "seconds": round(self.seconds, 2),
            "per_file_standard": {
                f.key: {"raw_score": round(f.raw_score, 4), "tp": f.tp, "fn": f.fn, "fp": f.fp}
                for f in self.results["standard"].files
            }
            if "standard" in self.results
            else {},
        }


@dataclass
class NabReport:
    detectors: list[NabDetectorReport] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def table(self) -> dict[str, dict[str, float]]:
        return {d.spec.label: {p: r.normalized for p, r in d.results.items()} for d in self.detectors}


def run_nab(
    corpus: NabCorpus,
    out_dir: Path,
    specs: Sequence[DetectorSpec],
    keys: Sequence[str] | None = None,
    progress: bool = True,
) -> NabReport:
    """Run, write result files under ``out_dir/<label>/...`` and score each detector."""
    corpus.check()
    windows = corpus.windows()
    profiles = corpus.profiles()
    keys = list(keys) if keys is not None else corpus.keys()
    # NAB's 'perfect' counts the label file's windows; restricted to the files actually scored.
    n_label_windows = sum(len(windows.get(k, [])) for k in keys)
    if not keys:
        raise InputError(f"no NAB data files found under {corpus.root / 'data'}")
    series = {}
    layouts = {}
    for key in keys:
        s = corpus.read(key)
        series[key] = s
        layouts[key] = nab_metrics.build_layout(key, s.timestamps, windows.get(key, []))

    report = NabReport(files=list(keys))
    bar = tqdm(total=len(specs) * len(keys), desc="NAB", unit="file", disable=not progress)
    for spec in specs:
        started = time.perf_counter()
        scores = []
        for key in keys:
            bar.set_postfix_str(f"{spec.label} {key}", refresh=False)
            _, anomaly_score = detect_series(spec, series[key])
            write_result_file(
                result_path(out_dir, spec.label, key), series[key], anomaly_score, window_labels(layouts[key])
            )
            scores.append(anomaly_score)
            bar.update(1)
        seconds = time.perf_counter() - started
        ordered = [layouts[k] for k in keys]
        results = nab_metrics.score_all_profiles(ordered, scores, n_label_windows, profiles)
        report.detectors.append(NabDetectorReport(spec, results, seconds))
        logger.info(
            "%s: %s (%.1f s)", spec.label,
            " / ".join(f"{results[p].normalized:.1f}" for p in PROFILES if p in results), seconds,
        )
    bar.close()
    return report
