"""UCR Anomaly Archive runner: one predicted location per series, scored by the UCR hit rule.

Protocol (one configuration for every file): ``detector.fit(values[:trainEnd])`` (training part only),
``score(values)`` causally over the whole series, prediction = argmax of the scores after trainEnd minus
the detector's ``lag`` (a subsequence detector scores a window at its last point; the lag moves the
prediction back to the window's middle). Predictions are absolute 0-based indices into the full series.
"""
from __future__ import annotations

import gzip
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from benchmarks.detectors import DetectorSpec
from models.errors import InputError
from models.metrics.ucr import UcrAccuracy, UcrSpec, is_hit, parse_ucr_name, ucr_accuracy

logger = logging.getLogger(__name__)

UCR_DEFAULT_DETECTORS: tuple[str, ...] = ("windowed_gaussian_train", "matrix_profile_train", "half_space_trees_train")
# |z| ranks extreme points where NAB's 1 - Q(|z|) saturates at exactly 1.0.
UCR_DETECTOR_DEFAULTS: dict[str, dict] = {
    "windowed_gaussian": {"output": "zscore"},
    "windowed_gaussian_train": {"output": "zscore"},
    # Series of up to 270k points: a diffusion window every quarter window instead of every 2 points. The
    # nearest-neighbour discord channels (z-normalised at the window and half window, level-keeping at the
    # window) catch unseen raw shapes and unseen levels the scalogram model finds plausible (see
    # models.series_detector); one setting for every file.
    **{f"diffusion-{s}": {"hop_fraction": 0.25, "discord_scales": (1.0, 0.5), "value_discord_scales": (1.0,)}
       for s in ("recon", "kl", "trend", "dynamic", "adversarial")},
}
INDEX_FRAME = (
    "absolute 0-based index into the full series (rows [0, trainEnd) are the training part); "
    "the labelled anomaly is [begin, end) with end exclusive; hit if begin - max(L,100) <= pred <= end + max(L,100), "
    "L = end - begin (hits_pm100: slack 100)"
)
_UCR_FILE = re.compile(r"^\d+_UCR_Anomaly_.+\.txt(\.gz)?$")


def find_ucr_files(directory: Path) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"UCR data directory not found: {directory}")
    files = sorted(p for p in directory.iterdir() if p.is_file() and _UCR_FILE.match(p.name))
    if not files:
        raise InputError(f"no NNN_UCR_Anomaly_*.txt(.gz) files in {directory}")
    return files


def load_ucr_series(path: Path) -> np.ndarray:
    """Values of one UCR file (one value per line; also tolerates the few originals on a single line)."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt") as fh:
            text = fh.read()
    except (OSError, gzip.BadGzipFile) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    try:
        values = np.array(text.replace(",", " ").split(), dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"{path}: non-numeric value: {exc}") from exc
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise InputError(f"{path}: empty or contains NaN/inf")
    return values


def predict_location(spec: DetectorSpec, values: np.ndarray, train_end: int) -> tuple[int, np.ndarray]:
    """(predicted absolute index, per-point scores)."""
    if not 0 < train_end < values.size:
        raise InputError(f"trainEnd {train_end} outside a series of {values.size} points")
    det = spec.build()
    det.fit(values[:train_end])
    scores = np.asarray(det.score(values), dtype=np.float64)
    if scores.shape != values.shape or not np.all(np.isfinite(scores)):
        raise InputError(f"{spec.label}: expected {values.size} finite scores, got shape {scores.shape}")
    peak = train_end + int(np.argmax(scores[train_end:]))
    return int(min(max(peak - int(getattr(det, "lag", 0)), 0), values.size - 1)), scores


@dataclass
class UcrDetectorReport:
    spec: DetectorSpec
    predictions: dict[str, int]  # file name -> absolute 0-based index
    accuracy: UcrAccuracy
    seconds: float
    hits: dict[str, bool] = field(default_factory=dict)


@dataclass
class UcrReport:
    files: list[UcrSpec]
    names: list[str] = field(default_factory=list)  # file names, same order
    detectors: list[UcrDetectorReport] = field(default_factory=list)
    example_scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # stem -> label -> scores


def run_ucr(
    files: Sequence[Path],
    specs: Sequence[DetectorSpec],
    progress: bool = True,
    keep_scores_for: Sequence[str] = (),
) -> UcrReport:
    """Run every detector on every file; keep the full score arrays only for ``keep_scores_for`` stems."""
    parsed = [(parse_ucr_name(p.name), p) for p in files]
    report = UcrReport(files=[s for s, _ in parsed], names=[p.name for _, p in parsed])
    preds: dict[str, dict[str, int]] = {spec.label: {} for spec in specs}
    seconds: dict[str, float] = {spec.label: 0.0 for spec in specs}
    bar = tqdm(total=len(parsed) * len(specs), desc="UCR", unit="run", disable=not progress)
    for ucr, path in parsed:
        values = load_ucr_series(path)
        if ucr.end > values.size:
            raise InputError(f"{path.name}: anomaly end {ucr.end} beyond the series ({values.size} points)")
        for spec in specs:
            bar.set_postfix_str(f"{spec.label} {ucr.number:03d}", refresh=False)
            t0 = time.perf_counter()
            pred, scores = predict_location(spec, values, ucr.train_end)
            seconds[spec.label] += time.perf_counter() - t0
            preds[spec.label][path.name] = pred
            if ucr.stem in keep_scores_for:
                report.example_scores.setdefault(ucr.stem, {})[spec.label] = scores
            bar.update(1)
    bar.close()
    by_name = {path.name: ucr for ucr, path in parsed}
    for spec in specs:
        p = preds[spec.label]
        acc = ucr_accuracy((by_name[k], v) for k, v in p.items())
        hits = {k: is_hit(by_name[k], v) for k, v in p.items()}
        report.detectors.append(UcrDetectorReport(spec, p, acc, seconds[spec.label], hits))
        logger.info("%s: accuracy %.3f (±100: %.3f)", spec.label, acc.accuracy, acc.accuracy_100)
    return report
