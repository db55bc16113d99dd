"""``bench testbed``: logs of a test bed (CSV files with one column per sensor and label columns, SKAB's layout)
through the product detector, one stream per sensor — what ``scalowatch replay FILE --label-column ...`` into
``scalowatch monitor`` runs (the streams named by the log's path below the data folder, as ``--stream`` names
them, so that logs of nested folders stay apart).

Why a benchmark of its own: a rig's fault shows on some of its sensors, not all, and is labelled per row of the
log. NAB's scoring of each sensor as a file of its own would count every sensor that stays quiet as a miss. Here
the rig is judged as its operator sees it: a row's score is the highest of its sensors' scores, and a row is
alerting while any of its sensors' alerts (the monitor's alert rule, the preset's threshold) is open.

Protocol, the same for every file (no per-file tuning):
- the training part is the file's leading rows, NAB's probationary length ``min(floor(0.15 n), 750)``, never
  reaching the first labelled row; a sensor trains on its own readings in those rows;
- scores are causal; every detector that does not output probabilities is calibrated by the anomaly likelihood
  learnt on the training part (as ``bench nab``);
- metrics over the rows after the training part, pooled over the files: ROC AUC of the row scores; at the alert
  rule, point-wise precision / recall / F1 and the false-alarm (FAR) and missed-alarm (MAR) rates SKAB reports,
  the fraction of labelled runs with an alert inside (and the mean delay, in rows, from a run's first row to its
  first alerting row), and the alert runs that touch no labelled run.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from benchmarks.detectors import PRODUCT_NAMES, DetectorSpec, calibrated_scores
from benchmarks.parallel import map_files
from benchmarks.via_monitor import latest_at
from models.detector import MIN_TRAIN_SAMPLES
from models.errors import InputError
from models.metrics import nab as nab_metrics
from streamer.replay import ReplayError, SeriesSource, columns_in_none, file_stem, flag_runs, read_sensor_log

log = logging.getLogger(__name__)

TESTBED_DEFAULT_DETECTORS: tuple[str, ...] = ("scalowatch", "windowed_gaussian")
TESTBED_DETECTOR_DEFAULTS: dict[str, dict] = {name: {"preset": "rig"} for name in PRODUCT_NAMES}


@dataclass
class BedLog:
    """One log: its rows' times (in time order), which rows are labelled anomalous, one source per sensor."""

    name: str
    path: Path
    times_ns: np.ndarray
    flagged: np.ndarray
    sensors: list[SeriesSource]
    train_rows: int

    def train_samples(self, sensor: SeriesSource) -> int:
        """The sensor's readings inside the training rows."""
        if self.train_rows >= self.times_ns.size:
            return int(sensor.times_ns.size)
        return int(np.searchsorted(sensor.times_ns, self.times_ns[self.train_rows], side="left"))


def find_testbed_files(root: Path, exclude: Path | None = None) -> list[Path]:
    """Every ``.csv``/``.csv.gz`` below ``root`` (but not below ``exclude``: a benchmark's own output folder)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder of test-bed logs (.csv files)")
    skip = Path(exclude).resolve() if exclude is not None else None
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith((".csv", ".csv.gz"))
                   and not (skip is not None and p.resolve().is_relative_to(skip)))
    if not files:
        raise InputError(f"{root}: no .csv files")
    return files


def log_name(path: Path, root: Path) -> str:
    """A log's name: its path below the data folder without ``.csv``/``.csv.gz`` (any case) — the prefix of its
    streams and the name of its row files."""
    relative = Path(path).relative_to(root)
    return (relative.parent / file_stem(relative.name)).as_posix()


def load_testbed(paths: Sequence[Path], root: Path, label_columns: Sequence[str],
                 skip_columns: Sequence[str] = (), limit: int | None = None) -> list[BedLog]:
    """The first ``limit`` logs of ``paths`` (:func:`load_testbed_file`). A log may lack the label columns (SKAB's
    anomaly-free log: all its rows count as normal), but a label or skipped column that no log of the folder has —
    all of ``paths``, not only the first ``limit`` — is refused as a typo."""
    try:
        absent = columns_in_none(paths, [*label_columns, *skip_columns])
    except ReplayError as exc:
        raise InputError(str(exc)) from None
    if absent:
        raise InputError(f"no log under {root} has the column(s) {absent!r}")
    return [load_testbed_file(p, root, label_columns, skip_columns) for p in paths[:limit]]


def load_testbed_file(path: Path, root: Path, label_columns: Sequence[str],
                      skip_columns: Sequence[str] = ()) -> BedLog:
    """The sensors of one log as the replay reads them (stream ``<log name>/<column>``) and its rows' labels.

    The rows are the file's own, a row where no sensor has a reading included: its label counts, and the training
    part must stop before it."""
    name = log_name(path, root)
    try:
        read = read_sensor_log(path, stream=name, label_columns=label_columns, skip_columns=skip_columns)
    except ReplayError as exc:
        raise InputError(str(exc)) from None
    times, flagged, sensors = read.times_ns, read.flagged, read.sources
    train = nab_metrics.probationary_length(times.size)
    if flagged.any():
        train = min(train, int(np.argmax(flagged)))
    if train < times.size:  # a sensor silent after the training part has nothing to be judged on
        silent = [s for s in sensors if s.times_ns[-1] < times[train]]
        for s in silent:
            log.warning("%s: sensor %s has no reading after the training part; it is left out of the rig",
                        path, s.stream)
        sensors = [s for s in sensors if s not in silent]
        if not sensors:
            raise InputError(f"{path}: no sensor has a reading after the training part ({train} rows)")
    return BedLog(name, Path(path), times, flagged, sensors, train)


def check_logs(files: Sequence[BedLog]) -> None:
    """Refuse, before any model is fitted, what would make a result wrong: two logs whose streams would merge
    (``x.csv`` beside ``x.csv.gz``), a sensor with too few training readings for the detector (the monitor's path
    would stop at that sensor, after the others' fits; here all are named at once)."""
    seen: dict[str, Path] = {}
    for f in files:
        if f.name in seen:
            raise InputError(f"{seen[f.name]} and {f.path} would share the stream names {f.name}/…: keep one of them")
        seen[f.name] = f.path
    short = [f"{s.stream} ({f.train_samples(s)})" for f in files for s in f.sensors
             if f.train_samples(s) < MIN_TRAIN_SAMPLES]
    if short:
        raise InputError(f"training part under {MIN_TRAIN_SAMPLES} readings (a label too early, too few rows, or a "
                         f"sensor that starts late): {', '.join(short)}")


def sensor_scores(spec: DetectorSpec, sensor: SeriesSource, train: int, ablate: bool) -> dict[str, np.ndarray]:
    """One sensor's scores per variant (``product`` / ``without_diffusion`` / ``diffusion_only`` with
    ``ablate``, else the detector's own label), from one fit on its training readings, calibrated as in every
    series benchmark (:func:`benchmarks.detectors.calibrated_scores`)."""
    det = spec.build()
    det.fit(sensor.values[:train])
    raw = det.score_variants(sensor.values) if ablate else {spec.label: det.score(sensor.values)}
    return {k: calibrated_scores(det, v, train, sensor.values.size, f"{spec.label} ({k}) on {sensor.stream}")
            for k, v in raw.items()}


@dataclass(frozen=True)
class _SensorTask:
    spec: DetectorSpec
    sensor: SeriesSource
    train: int
    ablate: bool


def _sensor_scores(task: _SensorTask) -> dict[str, np.ndarray]:
    """:func:`sensor_scores` of one task, in a worker of :func:`benchmarks.parallel.map_files`."""
    return sensor_scores(task.spec, task.sensor, task.train, task.ablate)


def alert_rows(stream: str, times_ns: np.ndarray, scores: np.ndarray, policy) -> np.ndarray:
    """Per reading, whether the monitor's alert rule has the stream's alert open (:class:`streamer.alerts.AlertMachine`,
    the rule the monitor applies to every stored score)."""
    from streamer.alerts import AlertMachine

    machine = AlertMachine(stream, policy)
    return np.array([machine.update(int(t), float(s), float(s)).in_alert for t, s in zip(times_ns, scores)],
                    dtype=bool)


@dataclass
class RigScores:
    """One detector (or variant) on one file: row scores (the highest sensor's) and alerting rows (any sensor's)."""

    scores: np.ndarray
    alerts: np.ndarray


def write_rows(path: Path, file: BedLog, rig: RigScores) -> Path:
    """One file's rows as the benchmark judged them (``time,label,in_training,score,alert``): anyone can re-score
    a run from these without running a model."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    stamps = np.datetime_as_string(file.times_ns.astype("datetime64[ns]"), unit="ms")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", "label", "in_training", "score", "alert"])
        for i, stamp in enumerate(stamps):
            writer.writerow([stamp, int(file.flagged[i]), int(i < file.train_rows), f"{rig.scores[i]:.9g}",
                             int(rig.alerts[i])])
    return path


@dataclass
class BedMetrics:
    """None where a measure is undefined: no labelled rows (recall, F1, MAR, ROC AUC, runs alerted), no normal
    rows (FAR, ROC AUC), no alert (precision), no caught run (delay)."""

    roc_auc: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    far: float | None
    mar: float | None
    event_recall: float | None
    events: int
    false_alert_runs: int
    mean_delay_rows: float | None
    rows: int

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def metrics(files: Sequence[BedLog], rigs: Sequence[RigScores]) -> BedMetrics:
    """Pooled over the files' rows after their training parts (see the module docstring)."""
    from sklearn.metrics import roc_auc_score

    y, s, a = [], [], []
    events = false_runs = 0
    delays: list[int] = []
    for f, r in zip(files, rigs):
        part = slice(f.train_rows, None)
        y.append(f.flagged[part])
        s.append(r.scores[part])
        a.append(r.alerts[part])
        labelled = flag_runs(f.flagged[part])
        events += len(labelled)
        delays += [int(np.argmax(r.alerts[part][i:j])) for i, j in labelled if r.alerts[part][i:j].any()]
        false_runs += sum(not f.flagged[part][i:j].any() for i, j in flag_runs(r.alerts[part]))
    y_all, s_all, a_all = np.concatenate(y), np.concatenate(s), np.concatenate(a)
    tp = int((y_all & a_all).sum())
    fp = int((~y_all & a_all).sum())
    fn = int((y_all & ~a_all).sum())
    tn = int((~y_all & ~a_all).sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if recall is not None else None  # the harmonic mean, 0 without an alert
    auc = float(roc_auc_score(y_all, s_all)) if 0 < y_all.sum() < y_all.size else None
    return BedMetrics(auc, precision, recall, f1, fp / (fp + tn) if fp + tn else None,
                      fn / (fn + tp) if fn + tp else None, len(delays) / events if events else None, events,
                      false_runs, float(np.mean(delays)) if delays else None, int(y_all.size))


@dataclass
class BedReport:
    results: dict[str, BedMetrics] = field(default_factory=dict)
    per_file: dict[str, dict[str, BedMetrics]] = field(default_factory=dict)
    rigs: dict[str, list[RigScores]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    policies: dict[str, dict] = field(default_factory=dict)


def run_testbed(files: Sequence[BedLog], specs: Sequence[DetectorSpec], *, ablate: bool = False,
                via: str = "detector", progress: bool = True, jobs: int = 1) -> BedReport:
    """Score every file with every detector (``ablate``: the product's three variants from one fit; ``via
    monitor``: the product replayed through the monitor's processing path, its stored scores and alerts).
    ``jobs``: sensors fitted side by side, each with one thread (``via="monitor"``: monitors side by side,
    each replaying its share of the sensors; :mod:`benchmarks.parallel`: the same figures for any ``jobs``)."""
    from benchmarks.nab import product_options
    from streamer.assemble import alert_policy
    from streamer.config import MonitorSettings

    if via not in ("detector", "monitor"):
        raise InputError(f"via must be detector or monitor, got {via!r}")
    if (ablate or via == "monitor") and [s.name for s in specs if s.name in PRODUCT_NAMES] != [s.name for s in specs]:
        raise InputError("--ablate and --via monitor run the product detector only (e.g. --scorer scalowatch)")
    if ablate and (via != "detector" or len(specs) != 1):
        raise InputError("--ablate needs --via detector and exactly one product detector (its variants share the "
                         "result names product / without_diffusion / diffusion_only)")
    check_logs(files)
    settings = MonitorSettings()
    report = BedReport()
    for spec in specs:
        started = time.perf_counter()
        # The monitor's alert rule for the detector's preset (a baseline: the default sensor preset's), with the
        # monitor's alert settings as this environment sets them — recorded in the report.
        preset, options = product_options(spec) if spec.name in PRODUCT_NAMES else (settings.sensor_preset, {})
        policy = alert_policy(settings, preset)
        rigs: dict[str, list[RigScores]] = {}
        if via == "monitor":
            from benchmarks.via_monitor import at_times, run_through_monitor

            sources = [s for f in files for s in f.sensors]
            train = {s.stream: f.train_samples(s) for f in files for s in f.sensors}
            stored = run_through_monitor(sources, train, preset=preset, options=options, progress=progress,
                                         jobs=jobs)
            for f in files:
                got = [stored[s.stream] for s in f.sensors]
                rigs.setdefault(spec.label, []).append(RigScores(
                    np.max([at_times(g, f.times_ns, g.score) for g in got], axis=0),
                    np.any([at_times(g, f.times_ns, g.alert.astype(np.float64)) > 0 for g in got], axis=0)))
        else:
            bar = tqdm(total=sum(len(f.sensors) for f in files), desc=f"testbed {spec.label}", unit="sensor",
                       disable=not progress)
            tasks = [_SensorTask(spec, s, f.train_samples(s), ablate) for f in files for s in f.sensors]
            scored = iter(map_files(_sensor_scores, tasks, jobs, lambda i, r: bar.update(1)))
            for f in files:
                views: dict[str, tuple[list, list]] = {}
                for s in f.sensors:
                    for variant, scores in next(scored).items():
                        alerts = alert_rows(s.stream, s.times_ns, scores, policy)
                        sv, av = views.setdefault(variant, ([], []))  # on the file's rows, as the monitor path
                        sv.append(latest_at(s.times_ns, f.times_ns, scores))
                        av.append(latest_at(s.times_ns, f.times_ns, alerts.astype(np.float64)) > 0)
                for variant, (sv, av) in views.items():
                    rigs.setdefault(variant, []).append(RigScores(np.max(sv, axis=0), np.any(av, axis=0)))
            bar.close()
        seconds = time.perf_counter() - started
        for label, per_file in rigs.items():
            # A baseline has no preset: its alert rule takes the threshold of the monitor's sensor preset.
            report.policies[label] = {"preset": preset if spec.name in PRODUCT_NAMES else None,
                                      "threshold_of_preset": preset, **asdict(policy)}
            report.rigs[label] = per_file
            report.results[label] = metrics(files, per_file)
            report.per_file[label] = {f.name: metrics([f], [r]) for f, r in zip(files, per_file)}
            report.seconds[label] = seconds
            log.info("%s: %s (%.1f s)", label, report.results[label].to_dict(), seconds)
    return report
