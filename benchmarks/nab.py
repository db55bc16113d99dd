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

from benchmarks.detectors import PRODUCT_NAMES, VARIANTS, DetectorSpec, calibrated_scores
from benchmarks.nab_files import NabCorpus, NabSeries, result_path, window_labels, write_result_file
from benchmarks.parallel import map_files
from models.errors import InputError
from models.metrics import nab as nab_metrics

logger = logging.getLogger(__name__)

# The product's own detector first (preset "nab", the monitor's default for sensor streams), then the baselines.
NAB_DEFAULT_DETECTORS: tuple[str, ...] = (
    "scalowatch",
    "windowed_gaussian",
    "windowed_gaussian_train",
    "matrix_profile",
    "matrix_profile_train",
    "half_space_trees",
    "half_space_trees_train",
)
# A frozen Gaussian saturates 1 - Q(|z|) at exactly 1.0 once the data drifts; its |z| goes through the
# likelihood calibration instead, like every other raw score. The product's configuration is its "nab" preset
# (models/detector/config.py), the one the monitor runs.
NAB_DETECTOR_DEFAULTS: dict[str, dict] = {
    "windowed_gaussian_train": {"output": "zscore"},
    "matrix_profile": {"normalize": False},
    "matrix_profile_train": {"normalize": False},
    **{name: {"preset": "nab"} for name in PRODUCT_NAMES},
}
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


VIAS = ("detector", "monitor")


def product_options(spec: DetectorSpec) -> tuple[str, dict]:
    """(preset, detector options) of a product spec, as the monitor's settings take them."""
    if spec.name not in PRODUCT_NAMES:
        raise InputError(f"--via monitor runs the product's detector only ({', '.join(PRODUCT_NAMES)}), "
                         f"not {spec.name!r}")
    options = dict(spec.kwargs)
    preset = options.pop("preset", "nab")
    if spec.name.startswith("diffusion-"):
        options.setdefault("scorer", spec.name.split("-", 1)[1])
    return preset, options


def detect_via_monitor(spec: DetectorSpec, corpus: NabCorpus, keys: Sequence[str],
                       series: dict[str, NabSeries], progress: bool, jobs: int = 1) -> tuple[dict, dict]:
    """(anomaly_score per key, alert 0/1 per key) from the points the monitor path stored for every file."""
    from benchmarks.via_monitor import at_times, run_through_monitor
    from streamer.replay import read_nab_csv

    preset, options = product_options(spec)
    sources = [read_nab_csv(corpus.root / "data" / key, stream=key.removesuffix(".csv")) for key in keys]
    train = {key.removesuffix(".csv"): nab_metrics.probationary_length(len(series[key])) for key in keys}
    stored = run_through_monitor(sources, train, preset=preset, options=options, progress=progress, jobs=jobs)
    scores, alerts = {}, {}
    for key, source in zip(keys, sources):
        got = stored[source.stream]
        times = series[key].timestamps.astype("datetime64[ns]").astype(np.int64)
        if not np.array_equal(got.time_ns, np.unique(times)):  # one point per timestamp (repeated ones: the last)
            raise InputError(f"{key}: the monitor stored {got.time_ns.size} points for {np.unique(times).size} "
                             "timestamps")
        scores[key] = at_times(got, times, got.score)
        alerts[key] = at_times(got, times, got.alert.astype(np.float64))
    return scores, alerts


def ablation_scores(spec: DetectorSpec, series: NabSeries) -> dict[str, np.ndarray]:
    """product / without_diffusion / diffusion_only anomaly scores of one file, from one fit."""
    n, probation = len(series), nab_metrics.probationary_length(len(series))
    det = spec.build()
    det.fit(series.values[:probation])
    return {k: calibrated_scores(det, v, probation, n, f"{spec.label} ({k}) on {series.key}")
            for k, v in det.score_variants(series.values).items()}


def detect_series(spec: DetectorSpec, series: NabSeries) -> tuple[np.ndarray, np.ndarray]:
    """(raw scores, NAB anomaly_score in [0, 1]) for one file."""
    n, probation = len(series), nab_metrics.probationary_length(len(series))
    det = spec.build()
    det.fit(series.values[:probation])
    raw = np.asarray(det.score(series.values), dtype=np.float64)
    return raw, calibrated_scores(det, raw, probation, n, f"{spec.label} on {series.key}")


@dataclass(frozen=True)
class _NabTask:
    spec: DetectorSpec
    series: NabSeries
    variants: bool
    """The ablation's three score series from one fit, instead of the spec's own."""


def _score_file(task: _NabTask) -> tuple[dict[str, np.ndarray], float]:
    """One file's NAB anomaly scores by result-folder label, and the seconds they took (run in a worker by
    :func:`benchmarks.parallel.map_files`)."""
    t0 = time.perf_counter()
    if task.variants:
        return ablation_scores(task.spec, task.series), time.perf_counter() - t0
    return {task.spec.label: detect_series(task.spec, task.series)[1]}, time.perf_counter() - t0


@dataclass
class NabDetectorReport:
    spec: DetectorSpec
    results: dict[str, nab_metrics.ProfileResult]
    seconds: float
    label: str = ""
    """Result-folder name (the spec's label, or ``<label>-alerts`` for the monitor's alerts)."""

    def __post_init__(self) -> None:
        self.label = self.label or self.spec.label

    def summary(self) -> dict:
        return {
            "detector": {**self.spec.to_dict(), "label": self.label},
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
        return {d.label: {p: r.normalized for p, r in d.results.items()} for d in self.detectors}


def run_nab(
    corpus: NabCorpus,
    out_dir: Path,
    specs: Sequence[DetectorSpec],
    keys: Sequence[str] | None = None,
    progress: bool = True,
    via: str = "detector",
    ablate: bool = False,
    jobs: int = 1,
) -> NabReport:
    """Run, write result files under ``out_dir/<label>/...`` and score each detector.

    ``via="monitor"`` replays the files through the monitor's processing path instead (product detectors only)
    and also scores the monitor's alerts as binary detections (result folder ``<label>-alerts``).
    ``ablate`` (product detectors, ``via="detector"``): from the same fit and the same channel values, also score
    the detector without its diffusion channel and the diffusion channel alone; the result folders are
    ``product/``, ``without_diffusion/`` and ``diffusion_only/`` (one product detector per run).
    ``jobs``: files fitted side by side, each with one thread (``via="monitor"``: monitors side by side, each
    replaying its share of the files; :mod:`benchmarks.parallel`: the same scores for any ``jobs``). A detector's
    ``seconds`` is the sum of its files' fit-and-score times (the monitor's: its wall time); the run's wall time is
    in its metadata.
    """
    if ablate and (via != "detector" or sum(s.name in PRODUCT_NAMES for s in specs) != 1):
        raise InputError("--ablate needs --via detector and exactly one product detector (e.g. --scorer scalowatch)")
    if via not in VIAS:
        raise InputError(f"via must be one of {VIAS}, got {via!r}")
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
    ordered = [layouts[k] for k in keys]

    def score(spec: DetectorSpec, label: str, per_key: dict[str, np.ndarray], seconds: float) -> None:
        for key in keys:
            write_result_file(result_path(out_dir, label, key), series[key], per_key[key], window_labels(layouts[key]))
        results = nab_metrics.score_all_profiles(ordered, [per_key[k] for k in keys], n_label_windows, profiles)
        report.detectors.append(NabDetectorReport(spec, results, seconds, label))
        logger.info("%s: %s (%.1f s)", label,
                    " / ".join(f"{results[p].normalized:.1f}" for p in PROFILES if p in results), seconds)

    for spec in specs:
        started = time.perf_counter()
        if via == "monitor":
            scores, alerts = detect_via_monitor(spec, corpus, keys, series, progress, jobs)
            bar.update(len(keys))
            seconds = time.perf_counter() - started
            score(spec, spec.label, scores, seconds)
            score(spec, f"{spec.label}-alerts", alerts, seconds)
            continue
        variants = ablate and spec.name in PRODUCT_NAMES

        def tick(i: int, _: tuple, label: str = spec.label) -> None:
            bar.set_postfix_str(f"{label} {keys[i]}", refresh=False)
            bar.update(1)

        done = map_files(_score_file, [_NabTask(spec, series[key], variants) for key in keys], jobs, tick)
        seconds = sum(took for _, took in done)
        for label in (VARIANTS if variants else (spec.label,)):
            score(spec, label, {key: got[label] for key, (got, _) in zip(keys, done)}, seconds)
    bar.close()
    return report
