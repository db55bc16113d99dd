"""The running NAB score of a labelled file while it replays: the monitor's decisions so far against the known
anomaly windows so far.

Why it is scored this way: NAB scores rows, and here a row is one scored window (``window_score`` point). The
detections are what the monitor actually decided (``alert`` = 1), scored at a fixed threshold of 0.5, so the
number is the live system's score, not a hindsight-tuned one. The best score the calibrated score could reach
with a threshold chosen afterwards is reported beside it for context. Label windows (``label_window`` points)
are snapped to the first and last scored row inside them, because window timestamps are the windows' last
samples and rarely fall exactly on a label's edges. Windows the replay has not reached yet are left out,
windows it is inside are cut at the newest row.

The scorer itself is H3's :mod:`models.metrics.nab`; if it cannot be imported this module says so
(:class:`NabUnavailable`) rather than guessing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from dashboards.store import LabelWindow

PROFILE_TITLES = {
    "standard": "Standard",
    "reward_low_FP_rate": "Low FP",
    "reward_low_FN_rate": "Low FN",
}


class NabUnavailable(RuntimeError):
    """models.metrics.nab cannot be imported (not built yet, or broken)."""


def _nab() -> Any:
    try:
        from models.metrics import nab  # noqa: PLC0415 - optional at import time of the dashboard
    except Exception as exc:  # noqa: BLE001 - any import failure means the same to the page
        raise NabUnavailable(f"NAB scorer unavailable: models.metrics.nab cannot be imported ({exc})") from exc
    for name in ("build_layout", "score_all_profiles"):
        if not hasattr(nab, name):
            raise NabUnavailable(f"NAB scorer unavailable: models.metrics.nab has no {name}()")
    return nab


def nab_available() -> bool:
    try:
        _nab()
    except NabUnavailable:
        return False
    return True


@dataclass(frozen=True)
class ProfileScore:
    profile: str
    score: float  # normalised NAB score (100 = perfect, 0 = null detector)
    best_score: float  # with the calibrated score and the threshold that maximises it
    best_threshold: float
    tp: int
    fn: int
    fp: int


@dataclass(frozen=True)
class LiveNabResult:
    rows: int
    windows_total: int
    windows_reached: int
    detections: int
    profiles: dict[str, ProfileScore] = field(default_factory=dict)
    history: pd.DataFrame = field(default_factory=pd.DataFrame)  # time, profile, score
    note: str = ""


def snap_windows(times_ns: np.ndarray, labels: Sequence[LabelWindow]) -> list[tuple[int, int]]:
    """Label windows as (first row, last row) index pairs over the sorted row times; unreached windows are
    dropped and windows that collide after snapping are merged (NAB needs disjoint windows)."""
    spans: list[tuple[int, int]] = []
    n = len(times_ns)
    for w in sorted(labels, key=lambda w: w.start_ns):
        first = int(np.searchsorted(times_ns, w.start_ns, side="left"))
        last = int(np.searchsorted(times_ns, w.end_ns, side="right")) - 1
        if first >= n or last < first:
            continue
        if spans and first <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], last))
        else:
            spans.append((first, last))
    return spans


def _score_prefix(nab: Any, times_ns: np.ndarray, alert: np.ndarray, score: np.ndarray,
                  labels: Sequence[LabelWindow], with_best: bool) -> tuple[dict[str, ProfileScore], int]:
    spans = snap_windows(times_ns, labels)
    if not spans:
        return {}, 0
    stamps = times_ns.astype("datetime64[ns]").astype("datetime64[us]")
    windows = [(stamps[s], stamps[e]) for s, e in spans]
    layout = nab.build_layout("live", stamps, windows)
    if len(layout.scorable_windows) == 0:
        return {}, len(spans)
    fixed = nab.score_all_profiles([layout], [alert], len(spans), thresholds={
        name: 0.5 for name in PROFILE_TITLES})
    best = nab.score_all_profiles([layout], [score], len(spans)) if with_best else {}
    out = {}
    for name, result in fixed.items():
        f = result.files[0]
        b = best.get(name)
        out[name] = ProfileScore(
            profile=name, score=float(result.normalized),
            best_score=float(b.normalized) if b else float("nan"),
            best_threshold=float(b.threshold) if b else float("nan"),
            tp=int(f.tp), fn=int(f.fn), fp=int(f.fp),
        )
    return out, len(spans)


def live_nab_score(scores: pd.DataFrame, labels: Sequence[LabelWindow], history_points: int = 25) -> LiveNabResult:
    """Score the rows so far. ``scores`` is a raw (not downsampled) ``window_scores`` frame."""
    nab = _nab()
    frame = scores.sort_values("time_ns").drop_duplicates("time_ns")
    times = frame["time_ns"].to_numpy(dtype=np.int64)
    alert = np.nan_to_num(frame["alert"].to_numpy(dtype=np.float64), nan=0.0)
    score = np.nan_to_num(frame["score"].to_numpy(dtype=np.float64), nan=0.0)
    base = LiveNabResult(rows=len(times), windows_total=len(labels), windows_reached=0,
                         detections=int((alert >= 0.5).sum()))
    if len(times) == 0:
        return LiveNabResult(**{**base.__dict__, "note": "No scored windows yet for this stream."})
    profiles, reached = _score_prefix(nab, times, alert, score, labels, with_best=True)
    if not profiles:
        note = ("No label window has been reached yet." if reached == 0
                else "The label windows reached so far lie in NAB's probationary period (first 15% of rows).")
        return LiveNabResult(**{**base.__dict__, "windows_reached": reached, "note": note})
    history_rows = []
    cuts = np.unique(np.linspace(max(2, len(times) // history_points), len(times), history_points).astype(int))
    for cut in cuts:
        part, _ = _score_prefix(nab, times[:cut], alert[:cut], score[:cut], labels, with_best=False)
        for name, ps in part.items():
            history_rows.append({"time": pd.to_datetime(int(times[cut - 1]), unit="ns", utc=True),
                                 "profile": PROFILE_TITLES.get(name, name), "score": ps.score})
    history = pd.DataFrame(history_rows, columns=["time", "profile", "score"])
    return LiveNabResult(rows=len(times), windows_total=len(labels), windows_reached=reached,
                         detections=base.detections, profiles=profiles, history=history)
