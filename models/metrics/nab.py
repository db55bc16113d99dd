"""NAB (Numenta Anomaly Benchmark) scoring, re-implemented from NAB's published rules and vectorised.

The rules (Lavin & Ahmad 2015; NAB v1.x scorer):
- Each labelled window [start, end] rewards the *earliest* detection inside it with the scaled sigmoid
  ``2 / (1 + exp(5 x)) - 1`` of the relative position ``x = -(end - i + 1) / width`` (x = -1 at the left
  edge gives 0.98661, divided by that maximum so the left edge earns exactly ``tp_weight``). Only the best
  (= earliest) detection of a window counts; a window without detection costs ``-fn_weight``.
- A detection outside every window costs ``fp_weight * sigmoid(|i - prev_end| / (prev_width - 1))``
  (negative, growing with the distance after the preceding window), or ``-fp_weight`` when no window
  came before (or the relative distance is >= 3). Every such detection counts.
- Rows in the probationary period ``min(floor(0.15 n), 0.15 * 5000)`` are ignored, and so are windows
  that lie wholly inside it.
- One threshold per profile for the whole corpus, chosen to maximise the summed raw score;
  a row is a detection when ``anomaly_score >= threshold``.
- Normalised score = 100 (S - S_null) / (S_perfect - S_null) with S_null the null detector's score
  (no detections: ``-fn_weight`` per scorable window) and S_perfect = ``tp_weight`` x number of windows
  in the label file.

Why vectorised: the threshold sweep over every distinct score of ~365k rows runs in well under a second,
so the benchmark can score many detectors and all three profiles without NAB's hill-climb.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from models.errors import InputError

PROBATION_PERCENT = 0.15
NO_DETECTION_THRESHOLD = 1.1  # above every score in [0, 1]: the null detector's choice
_MAX_TP = 2.0 / (1.0 + math.exp(-5.0)) - 1.0  # scaled sigmoid at the left window edge


@dataclass(frozen=True)
class NabProfile:
    """One cost matrix from NAB's config/profiles.json."""

    name: str
    tp_weight: float = 1.0
    fp_weight: float = 0.11
    fn_weight: float = 1.0


DEFAULT_PROFILES: dict[str, NabProfile] = {
    "standard": NabProfile("standard", 1.0, 0.11, 1.0),
    "reward_low_FP_rate": NabProfile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    "reward_low_FN_rate": NabProfile("reward_low_FN_rate", 1.0, 0.11, 2.0),
}


def load_profiles(path: str | Path) -> dict[str, NabProfile]:
    """Read NAB's config/profiles.json."""
    raw = json.loads(Path(path).read_text())
    out = {}
    for name, body in raw.items():
        cm = body["CostMatrix"]
        out[name] = NabProfile(name, float(cm["tpWeight"]), float(cm["fpWeight"]), float(cm["fnWeight"]))
    return out


def load_windows(path: str | Path) -> dict[str, list[tuple[np.datetime64, np.datetime64]]]:
    """Read labels/combined_windows.json: ``{"category/file.csv": [(start, end), ...]}`` as datetime64."""
    raw = json.loads(Path(path).read_text())
    return {
        key: [(parse_timestamp(a), parse_timestamp(b)) for a, b in wins] for key, wins in raw.items()
    }


def parse_timestamp(text: str) -> np.datetime64:
    """NAB timestamps: ``YYYY-MM-DD HH:MM:SS[.ffffff]``."""
    return np.datetime64(str(text).strip().replace(" ", "T"), "us")


def parse_timestamps(texts: Sequence[str]) -> np.ndarray:
    try:
        return np.array([str(t).strip() for t in texts], dtype="datetime64[us]")
    except ValueError as exc:
        raise InputError(f"unparseable NAB timestamp: {exc}") from exc


def probationary_length(n_rows: int, percent: float = PROBATION_PERCENT) -> int:
    """NAB: ``min(floor(percent * n), percent * 5000)`` rows at the start are not scored."""
    return int(min(math.floor(percent * n_rows), percent * 5000))


def scaled_sigmoid(position: np.ndarray) -> np.ndarray:
    """NAB's position weighting: 2/(1+exp(5x)) - 1, and exactly -1 for x >= 3."""
    x = np.asarray(position, dtype=np.float64)
    with np.errstate(over="ignore"):
        val = 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0
    return np.where(x >= 3.0, -1.0, val)


@dataclass(frozen=True)
class FileLayout:
    """Per-row NAB bookkeeping for one data file, independent of the detector and the profile.

    ``window_id`` is the window index (-1 outside windows); ``tp_unit`` the TP reward for a detection at
    that row divided by tp_weight; ``fp_unit`` the FP cost divided by fp_weight (<= 0);
    ``scorable`` is False in the probationary period.
    """

    key: str
    n_rows: int
    windows: tuple[tuple[int, int], ...]
    window_id: np.ndarray
    tp_unit: np.ndarray
    fp_unit: np.ndarray
    scorable: np.ndarray

    @property
    def scorable_windows(self) -> np.ndarray:
        """Indices of windows with at least one non-probationary row."""
        return np.array([w for w, (_, e) in enumerate(self.windows) if self.scorable[e]], dtype=np.int64)


def build_layout(
    key: str,
    timestamps: np.ndarray,
    windows: Sequence[tuple[np.datetime64, np.datetime64]],
    probation_percent: float = PROBATION_PERCENT,
) -> FileLayout:
    """Place NAB's windows on one file's rows (windows are matched by exact timestamp, as NAB does)."""
    ts = np.asarray(timestamps).astype("datetime64[us]")
    n = ts.shape[0]
    if n == 0:
        raise InputError(f"{key}: no rows")
    # NAB locates a window by the first row carrying its start / end timestamp (rows need not be sorted:
    # one NAB file has a timestamp going backwards).
    first_row: dict[np.datetime64, int] = {}
    for i, t in enumerate(ts.tolist()):
        first_row.setdefault(t, i)
    spans: list[tuple[int, int]] = []
    for start, end in windows:
        s = first_row.get(np.datetime64(start, "us").tolist())
        e = first_row.get(np.datetime64(end, "us").tolist())
        if s is None or e is None:
            raise InputError(f"{key}: window [{start}, {end}] does not match row timestamps")
        if e < s or (spans and s <= spans[-1][1]):
            raise InputError(f"{key}: windows overlap or are out of row order")
        spans.append((s, e))

    idx = np.arange(n, dtype=np.float64)
    window_id = np.full(n, -1, dtype=np.int64)
    tp_unit = np.zeros(n)
    # Outside windows: distance after the previous window's end, relative to that window's width - 1.
    fp_unit = np.full(n, -1.0)
    for w, (s, e) in enumerate(spans):
        width = e - s + 1
        window_id[s : e + 1] = w
        pos = -(e - idx[s : e + 1] + 1.0) / width
        tp_unit[s : e + 1] = scaled_sigmoid(pos) / _MAX_TP
        nxt = spans[w + 1][0] if w + 1 < len(spans) else n
        if e + 1 < nxt:
            after = idx[e + 1 : nxt]
            denom = width - 1
            with np.errstate(divide="ignore"):
                rel = np.abs(after - e) / denom if denom > 0 else np.full(after.shape, np.inf)
            fp_unit[e + 1 : nxt] = scaled_sigmoid(rel)
    scorable = idx >= probationary_length(n, probation_percent)
    fp_unit = np.where(window_id >= 0, 0.0, fp_unit)
    return FileLayout(key, n, tuple(spans), window_id, tp_unit, fp_unit, scorable)


@dataclass(frozen=True)
class FileScore:
    """One file at one threshold."""

    key: str
    raw_score: float
    tp: int  # windows detected
    fn: int  # windows missed
    fp: int  # detections outside windows


@dataclass(frozen=True)
class ProfileResult:
    """Corpus score for one profile (the NAB scoreboard number is ``normalized``)."""

    profile: str
    threshold: float
    raw_score: float
    null_score: float
    perfect_score: float
    normalized: float
    files: list[FileScore] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "profile": self.profile,
            "threshold": self.threshold,
            "raw_score": self.raw_score,
            "null_score": self.null_score,
            "perfect_score": self.perfect_score,
            "score": self.normalized,
            "files": {f.key: {"raw_score": f.raw_score, "tp": f.tp, "fn": f.fn, "fp": f.fp} for f in self.files},
        }


def _check_scores(layout: FileLayout, scores: np.ndarray) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64).ravel()
    if arr.shape[0] != layout.n_rows:
        raise InputError(f"{layout.key}: {arr.shape[0]} scores for {layout.n_rows} rows")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{layout.key}: anomaly scores contain NaN or inf")
    return arr


def score_file(layout: FileLayout, scores: np.ndarray, threshold: float, profile: NabProfile) -> FileScore:
    """Raw NAB score of one file when rows with ``score >= threshold`` are detections."""
    arr = _check_scores(layout, scores)
    det = (arr >= threshold) & layout.scorable
    outside = det & (layout.window_id < 0)
    total = profile.fp_weight * float(layout.fp_unit[outside].sum())
    tp = fn = 0
    for w in layout.scorable_windows:
        s, e = layout.windows[w]
        hits = det[s : e + 1]
        if hits.any():
            total += profile.tp_weight * float(layout.tp_unit[s : e + 1][hits].max())
            tp += 1
        else:
            total -= profile.fn_weight
            fn += 1
    return FileScore(layout.key, total, tp, fn, int(outside.sum()))


def sweep_thresholds(
    layouts: Sequence[FileLayout], scores: Sequence[np.ndarray], profile: NabProfile
) -> tuple[np.ndarray, np.ndarray]:
    """Corpus raw score at every candidate threshold (descending), the first being 'no detection'.

    Each row contributes an event (its score, the change in total when it becomes a detection):
    a row outside windows adds its FP cost; inside a window, a row raises the window's value only when
    it beats every higher-scored row of that window (the first one replaces the -fn_weight penalty).
    A cumulative sum over events sorted by score then gives all thresholds at once.
    """
    ev_score: list[np.ndarray] = []
    ev_delta: list[np.ndarray] = []
    base = 0.0
    for layout, raw in zip(layouts, scores):
        arr = _check_scores(layout, raw)
        outside = layout.scorable & (layout.window_id < 0)
        ev_score.append(arr[outside])
        ev_delta.append(profile.fp_weight * layout.fp_unit[outside])
        for w in layout.scorable_windows:
            s, e = layout.windows[w]
            rows = np.arange(s, e + 1)
            rows = rows[layout.scorable[rows]]
            order = np.argsort(-arr[rows], kind="stable")
            a = arr[rows][order]
            v = profile.tp_weight * layout.tp_unit[rows][order]
            # Within equal scores all rows switch on together: take the best value per score group.
            running = np.maximum.accumulate(v)
            group_end = np.r_[a[1:] != a[:-1], True]
            a_g, best = a[group_end], running[group_end]
            prev = np.r_[-profile.fn_weight, best[:-1]]
            ev_score.append(a_g)
            ev_delta.append(best - prev)
            base -= profile.fn_weight
    all_scores = np.concatenate(ev_score) if ev_score else np.zeros(0)
    all_delta = np.concatenate(ev_delta) if ev_delta else np.zeros(0)
    order = np.argsort(-all_scores, kind="stable")
    a = all_scores[order]
    totals = base + np.cumsum(all_delta[order])
    last_of_group = np.r_[a[1:] != a[:-1], True] if a.size else np.zeros(0, dtype=bool)
    thresholds = np.r_[NO_DETECTION_THRESHOLD, a[last_of_group]]
    totals = np.r_[base, totals[last_of_group]]
    return thresholds, totals


def optimize_threshold(
    layouts: Sequence[FileLayout], scores: Sequence[np.ndarray], profile: NabProfile
) -> tuple[float, float]:
    """(threshold, corpus raw score) maximising the raw score; ties go to the highest threshold."""
    thresholds, totals = sweep_thresholds(layouts, scores, profile)
    best = int(np.argmax(totals))
    return float(thresholds[best]), float(totals[best])


def score_corpus(
    layouts: Sequence[FileLayout],
    scores: Sequence[np.ndarray],
    profile: NabProfile,
    n_label_windows: int,
    threshold: float | None = None,
) -> ProfileResult:
    """Normalised NAB score for one profile; ``threshold=None`` optimises it over the corpus.

    ``n_label_windows`` is the number of windows in the whole label file (NAB's 'perfect' count).
    """
    if len(layouts) != len(scores):
        raise InputError("need one score array per file layout")
    if threshold is None:
        threshold, _ = optimize_threshold(layouts, scores, profile)
    files = [score_file(lay, sc, threshold, profile) for lay, sc in zip(layouts, scores)]
    raw = float(sum(f.raw_score for f in files))
    null = -profile.fn_weight * float(sum(len(lay.scorable_windows) for lay in layouts))
    perfect = profile.tp_weight * float(n_label_windows)
    # A corpus without scorable windows (e.g. a smoke run on artificialNoAnomaly) has no scale: NaN.
    normalized = 100.0 * (raw - null) / (perfect - null) if perfect != null else float("nan")
    return ProfileResult(profile.name, float(threshold), raw, null, perfect, normalized, files)


def score_all_profiles(
    layouts: Sequence[FileLayout],
    scores: Sequence[np.ndarray],
    n_label_windows: int,
    profiles: Mapping[str, NabProfile] | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> dict[str, ProfileResult]:
    """The three scoreboard columns; ``thresholds`` (profile -> value) fixes them instead of optimising."""
    profiles = profiles or DEFAULT_PROFILES
    return {
        name: score_corpus(
            layouts, scores, prof, n_label_windows, None if thresholds is None else thresholds.get(name)
        )
        for name, prof in profiles.items()
    }
