"""UCR Anomaly Archive runner: one predicted location per series, scored by the UCR hit rule.

Protocol (one configuration for every file): ``detector.fit(values[:trainEnd])`` (training part only),
``score(values)`` causally over the whole series, prediction = argmax of the scores after trainEnd minus
the detector's ``lag`` (a subsequence detector scores a window at its last point; the lag moves the
prediction back to the window's middle). Predictions are absolute 0-based indices into the full series.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from benchmarks.detectors import PRODUCT_NAMES, VARIANTS, DetectorSpec
from benchmarks.parallel import map_files
from models.errors import InputError
from models.metrics.ucr import UcrAccuracy, UcrSpec, is_hit, parse_ucr_name, ucr_accuracy

logger = logging.getLogger(__name__)

# The product's own detector (preset "ucr") beside the baselines.
UCR_DEFAULT_DETECTORS: tuple[str, ...] = ("scalowatch", "windowed_gaussian_train", "matrix_profile_train",
                                          "half_space_trees_train")
# |z| ranks extreme points where NAB's 1 - Q(|z|) saturates at exactly 1.0. The product's configuration is its
# "ucr" preset (models/detector/config.py).
UCR_DETECTOR_DEFAULTS: dict[str, dict] = {
    "windowed_gaussian": {"output": "zscore"},
    "windowed_gaussian_train": {"output": "zscore"},
    **{name: {"preset": "ucr"} for name in ("scalowatch", "diffusion-recon", "diffusion-kl", "diffusion-trend",
                                            "diffusion-dynamic", "diffusion-adversarial")},
}
INDEX_FRAME = (
    "absolute 0-based index into the full series (rows [0, trainEnd) are the training part); "
    "the labelled anomaly is [begin, end) with end exclusive; hit if begin - max(L,100) <= pred <= end + max(L,100), "
    "L = end - begin (hits_pm100: slack 100)"
)
_UCR_FILE = re.compile(r"^\d+_UCR_Anomaly_.+\.txt(\.gz)?$", re.IGNORECASE)


def find_ucr_files(directory: Path) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"UCR data directory not found: {directory}")
    files = sorted(p for p in directory.iterdir() if p.is_file() and _UCR_FILE.match(p.name))
    if not files:
        raise InputError(f"no NNN_UCR_Anomaly_*.txt(.gz) files in {directory}")
    return files


def load_ucr_series(path: Path) -> np.ndarray:
    """Values of one UCR file, read by the one UCR reader the replay and the model CLI use too
    (:func:`streamer.replay.read_ucr_txt`)."""
    from streamer.replay import ReplayError, read_ucr_txt

    try:
        values = read_ucr_txt(Path(path)).values
    except (ReplayError, OSError) as exc:
        raise InputError(str(exc)) from exc
    if values.size == 0:
        raise InputError(f"{path}: empty")
    return values


def location_of(scores: np.ndarray, train_end: int, lag: int) -> int:
    """The UCR prediction: argmax of the scores after the training part, moved back by the detector's lag."""
    peak = train_end + int(np.argmax(scores[train_end:]))
    return int(min(max(peak - lag, 0), scores.size - 1))


def predict_via_monitor(spec: DetectorSpec, paths: Sequence[Path], specs_by_name: dict[str, UcrSpec],
                        progress: bool, jobs: int = 1) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """Every series replayed through the monitor's processing path; predictions from the stored scores."""
    from benchmarks.nab import product_options
    from benchmarks.via_monitor import at_times, run_through_monitor
    from streamer.replay import read_ucr_txt

    preset, options = product_options(spec)
    sources = [read_ucr_txt(p, stream=p.name, batch=256) for p in paths]
    train = {p.name: specs_by_name[p.name].train_end for p in paths}
    stored = run_through_monitor(sources, train, preset=preset, options=options, progress=progress, jobs=jobs)
    preds, scores = {}, {}
    for p, src in zip(paths, sources):
        got = stored[p.name]
        series_scores = at_times(got, src.times_ns, got.score)
        scores[p.name] = series_scores
        preds[p.name] = location_of(series_scores, train[p.name], (got.window - 1) // 2)
    return preds, scores


def predict_location(spec: DetectorSpec, values: np.ndarray, train_end: int) -> tuple[int, np.ndarray]:
    """(predicted absolute index, per-point scores)."""
    if not 0 < train_end < values.size:
        raise InputError(f"trainEnd {train_end} outside a series of {values.size} points")
    det = spec.build()
    det.fit(values[:train_end])
    scores = np.asarray(det.score(values), dtype=np.float64)
    if scores.shape != values.shape or not np.all(np.isfinite(scores)):
        raise InputError(f"{spec.label}: expected {values.size} finite scores, got shape {scores.shape}")
    return location_of(scores, train_end, int(getattr(det, "lag", 0))), scores


def predict_variants(spec: DetectorSpec, values: np.ndarray, train_end: int) -> dict[str, int]:
    """The ablation: product / without_diffusion / diffusion_only predictions from one fit."""
    det = spec.build()
    det.fit(values[:train_end])
    return {k: location_of(np.asarray(v, dtype=np.float64), train_end, det.lag)
            for k, v in det.score_variants(values).items()}


@dataclass(frozen=True)
class _UcrTask:
    path: Path
    ucr: UcrSpec
    specs: tuple[DetectorSpec, ...]
    ablate: bool
    """A product spec's rows are the ablation's three variants, from one fit."""
    keep_scores: bool


@dataclass(frozen=True)
class _UcrFileResult:
    predictions: dict[str, int]
    """Row label -> predicted index."""
    seconds: dict[str, float]
    """Row label -> seconds of this file's fit and scoring (a variant: its share of the one fit)."""
    scores: dict[str, np.ndarray]
    """Spec label -> per-point scores, where kept."""


def _predict_file(task: _UcrTask) -> _UcrFileResult:
    """One series read once, every detector fitted on it: run in a worker by :func:`benchmarks.parallel.map_files`."""
    values = load_ucr_series(task.path)
    if task.ucr.end > values.size:
        raise InputError(f"{task.path.name}: anomaly end {task.ucr.end} beyond the series ({values.size} points)")
    preds: dict[str, int] = {}
    seconds: dict[str, float] = {}
    scores: dict[str, np.ndarray] = {}
    for spec in task.specs:
        t0 = time.perf_counter()
        if task.ablate and spec.name in PRODUCT_NAMES:
            preds.update(predict_variants(spec, values, task.ucr.train_end))
            seconds.update({v: (time.perf_counter() - t0) / len(VARIANTS) for v in VARIANTS})
        else:
            preds[spec.label], series_scores = predict_location(spec, values, task.ucr.train_end)
            seconds[spec.label] = time.perf_counter() - t0
            if task.keep_scores:
                scores[spec.label] = series_scores
    return _UcrFileResult(preds, seconds, scores)


@dataclass
class UcrDetectorReport:
    spec: DetectorSpec
    predictions: dict[str, int]  # file name -> absolute 0-based index
    accuracy: UcrAccuracy
    seconds: float
    hits: dict[str, bool] = field(default_factory=dict)
    label: str = ""
    """Row name: the spec's label, or an ablation variant."""

    def __post_init__(self) -> None:
        self.label = self.label or self.spec.label


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
    via: str = "detector",
    ablate: bool = False,
    jobs: int = 1,
) -> UcrReport:
    """Run every detector on every file; keep the full score arrays only for ``keep_scores_for`` stems.

    ``via="monitor"``: product detectors only, every series replayed through the monitor's processing path.
    ``ablate``: one product detector; its rows are the variants ``product``, ``without_diffusion`` and
    ``diffusion_only`` of one fit per series.
    ``jobs``: series fitted side by side, each with one thread (``via="monitor"``: monitors side by side, each
    replaying its share of the series; :mod:`benchmarks.parallel`: the same predictions for any ``jobs``). A row's
    ``seconds`` is the sum of its fits' and scorings' times (the monitor's: its wall time); the run's wall time is
    in its metadata.
    """
    if via not in ("detector", "monitor"):
        raise InputError(f"via must be 'detector' or 'monitor', got {via!r}")
    if ablate and (via != "detector" or sum(s.name in PRODUCT_NAMES for s in specs) != 1):
        raise InputError("--ablate needs --via detector and exactly one product detector (e.g. --scorer scalowatch)")
    parsed = [(parse_ucr_name(p.name), p) for p in files]
    by_name = {path.name: ucr for ucr, path in parsed}
    report = UcrReport(files=[s for s, _ in parsed], names=[p.name for _, p in parsed])
    labels = [v for s in specs for v in ((VARIANTS if ablate and s.name in PRODUCT_NAMES else (s.label,)))]
    spec_of = {v: s for s in specs for v in ((VARIANTS if ablate and s.name in PRODUCT_NAMES else (s.label,)))}
    preds: dict[str, dict[str, int]] = {label: {} for label in labels}
    seconds: dict[str, float] = {label: 0.0 for label in labels}
    if via == "monitor":
        for spec in specs:
            t0 = time.perf_counter()
            got, scores = predict_via_monitor(spec, [p for _, p in parsed], by_name, progress, jobs)
            preds[spec.label] = got
            seconds[spec.label] = time.perf_counter() - t0
            for ucr, path in parsed:
                if ucr.stem in keep_scores_for:
                    report.example_scores.setdefault(ucr.stem, {})[spec.label] = scores[path.name]
    else:
        bar = tqdm(total=len(parsed), desc="UCR", unit="series", disable=not progress)

        def tick(i: int, result: _UcrFileResult) -> None:
            bar.set_postfix_str(f"{parsed[i][0].number:03d}", refresh=False)
            bar.update(1)

        tasks = [_UcrTask(path, ucr, tuple(specs), ablate, ucr.stem in keep_scores_for) for ucr, path in parsed]
        for (ucr, path), result in zip(parsed, map_files(_predict_file, tasks, jobs, tick)):
            for label, pred in result.predictions.items():
                preds[label][path.name] = pred
                seconds[label] += result.seconds[label]
            for label, series_scores in result.scores.items():
                report.example_scores.setdefault(ucr.stem, {})[label] = series_scores
        bar.close()
    for label in labels:
        p = preds[label]
        acc = ucr_accuracy((by_name[k], v) for k, v in p.items())
        hits = {k: is_hit(by_name[k], v) for k, v in p.items()}
        report.detectors.append(UcrDetectorReport(spec_of[label], p, acc, seconds[label], hits, label))
        logger.info("%s: accuracy %.3f (±100: %.3f)", label, acc.accuracy, acc.accuracy_100)
    return report
