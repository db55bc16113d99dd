"""NAB corpus and result-file I/O: data CSVs in, NAB-format result CSVs out (plain or .gz).

Kept apart from the scorer (models/metrics/nab.py, pure numpy) and from the runner (benchmarks/nab.py)
so the validation test can read NAB's published result files without running any detector.
"""
from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.errors import InputError
from models.metrics import nab as nab_metrics


@dataclass(frozen=True)
class NabSeries:
    """One NAB data file. ``key`` is ``category/name.csv`` as in the label files."""

    key: str
    timestamp_text: list[str]
    timestamps: np.ndarray  # datetime64[us]
    values: np.ndarray  # float64

    @property
    def category(self) -> str:
        return self.key.split("/")[0]

    @property
    def name(self) -> str:
        return self.key.split("/")[1]

    def __len__(self) -> int:
        return int(self.values.shape[0])


@dataclass(frozen=True)
class NabCorpus:
    """Locations inside a NAB checkout (data/, labels/, config/)."""

    root: Path

    @property
    def windows_path(self) -> Path:
        return self.root / "labels" / "combined_windows.json"

    @property
    def profiles_path(self) -> Path:
        return self.root / "config" / "profiles.json"

    def check(self) -> None:
        for p in (self.root / "data", self.windows_path):
            if not p.exists():
                raise InputError(f"not a NAB corpus: {p} is missing (expected data/ and labels/ under {self.root})")

    def windows(self) -> dict[str, list[tuple[np.datetime64, np.datetime64]]]:
        return nab_metrics.load_windows(self.windows_path)

    def profiles(self) -> dict[str, nab_metrics.NabProfile]:
        if self.profiles_path.exists():
            return nab_metrics.load_profiles(self.profiles_path)
        return dict(nab_metrics.DEFAULT_PROFILES)

    def keys(self) -> list[str]:
        """Files named in the label file that exist under data/, sorted."""
        return sorted(k for k in self.windows() if (self.root / "data" / k).exists())

    def read(self, key: str) -> NabSeries:
        return read_data_file(self.root / "data" / key, key)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", newline="")
    return open(path, newline="")


def _read_columns(path: Path, needed: tuple[str, ...]) -> dict[str, list[str]]:
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader)]
            missing = [c for c in needed if c not in header]
            if missing:
                raise InputError(f"{path}: missing column(s) {missing}; header is {header}")
            cols = {c: header.index(c) for c in needed}
            out: dict[str, list[str]] = {c: [] for c in needed}
            for lineno, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) < len(header):
                    raise InputError(f"{path}:{lineno}: expected {len(header)} fields, got {len(row)}")
                for c, j in cols.items():
                    out[c].append(row[j])
    except (OSError, StopIteration, gzip.BadGzipFile) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    return out


def _floats(path: Path, texts: list[str], column: str) -> np.ndarray:
    try:
        arr = np.array([float(t) for t in texts], dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"{path}: non-numeric {column}: {exc}") from exc
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{path}: {column} contains NaN or inf")
    return arr


def read_data_file(path: Path, key: str) -> NabSeries:
    """A NAB data CSV (``timestamp,value``), read by the one NAB reader the replay and the model CLI use too
    (:func:`streamer.replay.read_nab_csv`), in the file's row order (NAB's)."""
    from streamer.replay import ReplayError, read_nab_csv

    try:
        src = read_nab_csv(Path(path), windows_file=None, labels=False, sort=False)
    except (ReplayError, OSError, UnicodeDecodeError) as exc:
        raise InputError(str(exc)) from exc
    stamps = src.times_ns.astype("datetime64[ns]")
    text = [t.replace("T", " ") for t in np.datetime_as_string(stamps, unit="s")]
    return NabSeries(key=key, timestamp_text=text, timestamps=stamps.astype("datetime64[us]"), values=src.values)


def read_result_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps, anomaly_score) from a NAB result CSV (ours or NAB's published ones, .csv or .csv.gz)."""
    cols = _read_columns(Path(path), ("timestamp", "anomaly_score"))
    return nab_metrics.parse_timestamps(cols["timestamp"]), _floats(Path(path), cols["anomaly_score"], "anomaly_score")


def result_path(out_dir: Path, detector: str, key: str, gz: bool = False) -> Path:
    """NAB layout: ``<out>/<detector>/<category>/<detector>_<file>.csv``."""
    category, name = key.split("/")
    return Path(out_dir) / detector / category / (f"{detector}_{name}" + (".gz" if gz else ""))


def find_result_file(results_dir: Path, detector: str, key: str) -> Path:
    plain = result_path(results_dir, detector, key)
    zipped = result_path(results_dir, detector, key, gz=True)
    if plain.exists():
        return plain
    if zipped.exists():
        return zipped
    raise InputError(f"no result file for {key}: looked for {plain} and {zipped}")


def write_result_file(path: Path, series: NabSeries, scores: np.ndarray, labels: np.ndarray) -> None:
    """``timestamp,value,anomaly_score,label`` — one row per input row, scores in [0, 1]."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != series.values.shape or labels.shape != series.values.shape:
        raise InputError(f"{series.key}: need one score and one label per row")
    if np.any(scores < 0) or np.any(scores > 1) or not np.all(np.isfinite(scores)):
        raise InputError(f"{series.key}: anomaly_score must be finite and in [0, 1]")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value", "anomaly_score", "label"])
        for ts, v, s, lab in zip(series.timestamp_text, series.values, scores, labels):
            w.writerow([ts, repr(float(v)), repr(float(s)), int(lab)])


def window_labels(layout: nab_metrics.FileLayout) -> np.ndarray:
    """NAB's label column: 1 inside a labelled window, else 0."""
    return (layout.window_id >= 0).astype(np.int64)


def load_detector_results(
    corpus: NabCorpus, results_dir: Path, detector: str
) -> tuple[list[nab_metrics.FileLayout], list[np.ndarray]]:
    """Layouts and anomaly scores for every corpus file from ``results_dir/detector``."""
    windows = corpus.windows()
    layouts, scores = [], []
    for key in corpus.keys():
        ts, sc = read_result_file(find_result_file(results_dir, detector, key))
        layouts.append(nab_metrics.build_layout(key, ts, windows[key]))
        scores.append(sc)
    return layouts, scores


def score_detector_results(
    corpus: NabCorpus, results_dir: Path, detector: str, thresholds: dict[str, float] | None = None
) -> dict[str, nab_metrics.ProfileResult]:
    """The three NAB profile scores of one detector's result files."""
    layouts, scores = load_detector_results(corpus, results_dir, detector)
    n_windows = sum(len(v) for v in corpus.windows().values())
    return nab_metrics.score_all_profiles(layouts, scores, n_windows, corpus.profiles(), thresholds)
