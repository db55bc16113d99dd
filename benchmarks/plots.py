"""Benchmark pictures (matplotlib, Agg backend, PNG files): how people in the field read these results."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(fig, path: Path, dpi: int = 100) -> Path:
    """Lay out, write (creating the folder) and close a benchmark figure: every picture of the benchmarks ends so."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_nab_per_file(
    per_file: Mapping[str, Mapping[str, float]], path: Path, title: str = "NAB raw score per file (standard profile)"
) -> Path:
    """Small multiples: one panel per detector, one horizontal bar per file (raw NAB score at the
    detector's corpus-optimised standard threshold; each missed window costs -1, each caught one up to +1)."""
    detectors = list(per_file)
    files = sorted({f for d in per_file.values() for f in d})
    n_det = max(len(detectors), 1)
    fig, axes = plt.subplots(1, n_det, figsize=(2.2 * n_det + 3.5, 0.16 * len(files) + 1.5), sharey=True,
                             squeeze=False)
    y = np.arange(len(files))
    lo = min([0.0] + [v for d in per_file.values() for v in d.values()])
    hi = max([0.0] + [v for d in per_file.values() for v in d.values()])
    for k, (ax, det) in enumerate(zip(axes[0], detectors)):
        vals = np.array([per_file[det].get(f, np.nan) for f in files])
        colors = np.where(vals >= 0, "tab:green", "tab:red")
        ax.barh(y, vals, color=colors, height=0.75)
        ax.axvline(0.0, color="black", lw=0.6)
        ax.set_xlim(lo - 0.5, hi + 0.5)
        ax.set_title(det, fontsize=7)
        ax.tick_params(axis="x", labelsize=6)
        ax.grid(axis="x", lw=0.3, alpha=0.5)
    axes[0][0].set_yticks(y)
    axes[0][0].set_yticklabels(files, fontsize=5)
    axes[0][0].invert_yaxis()
    fig.suptitle(title, fontsize=9)
    fig.supxlabel("raw NAB score", fontsize=8)
    return save_figure(fig, path, dpi=110)


def plot_scoreboard(table: Mapping[str, Mapping[str, float]], path: Path, title: str) -> Path:
    """Bars for the three NAB profiles per detector (normalised: null 0, perfect 100)."""
    detectors = list(table)
    profiles = ["standard", "reward_low_FP_rate", "reward_low_FN_rate"]
    width = 0.8 / len(profiles)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(detectors) + 2), 4))
    x = np.arange(len(detectors))
    for k, prof in enumerate(profiles):
        vals = [table[d].get(prof, np.nan) for d in detectors]
        bars = ax.bar(x + k * width - 0.4 + width / 2, vals, width=width, label=prof)
        ax.bar_label(bars, fmt="%.1f", fontsize=6)
    ax.set_xticks(x)
    ax.set_xticklabels(detectors, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("NAB score")
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=110)


def plot_series_scores(
    values: np.ndarray,
    scores: Mapping[str, np.ndarray],
    path: Path,
    title: str,
    train_end: int,
    anomaly: tuple[int, int] | None = None,
    predictions: Mapping[str, int] | None = None,
    max_points: int = 20000,
) -> Path:
    """The series on top, each detector's score (scaled to [0, 1] over the test part) below;
    the labelled anomaly shaded, the training part greyed, predicted locations marked."""
    n = values.size
    step = max(1, n // max_points)
    idx = np.arange(0, n, step)
    rows = 1 + len(scores)
    fig, axes = plt.subplots(rows, 1, figsize=(11, 1.6 * rows + 0.6), sharex=True)
    axes = np.atleast_1d(axes)
    axes[0].plot(idx, values[idx], lw=0.5, color="black")
    axes[0].set_ylabel("value", fontsize=7)
    for ax in axes:
        ax.axvspan(0, train_end, color="0.85", lw=0)
        if anomaly is not None:
            ax.axvspan(anomaly[0], max(anomaly[1], anomaly[0] + 1), color="tab:red", alpha=0.3, lw=0)
    for ax, (name, sc) in zip(axes[1:], scores.items()):
        test = sc[train_end:]
        lo, hi = (float(np.min(test)), float(np.max(test))) if test.size else (0.0, 1.0)
        scaled = (sc - lo) / (hi - lo) if hi > lo else np.zeros_like(sc)
        ax.plot(idx, np.clip(scaled[idx], 0, 1), lw=0.5)
        ax.set_ylabel(name, fontsize=7, rotation=0, ha="right")
        ax.set_ylim(-0.05, 1.1)
        if predictions and name in predictions:
            ax.axvline(predictions[name], color="tab:green", lw=1.0)
    axes[0].set_title(title, fontsize=9)
    axes[-1].set_xlabel("index")
    return save_figure(fig, path, dpi=100)


def plot_accuracy_bars(acc: Mapping[str, Mapping[str, float]], path: Path, title: str,
                       keys: Sequence[str] = ("accuracy", "accuracy_pm100")) -> Path:
    detectors = list(acc)
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(detectors) + 2), 4))
    x = np.arange(len(detectors))
    for k, key in enumerate(keys):
        bars = ax.bar(x + k * width - 0.4 + width / 2, [acc[d][key] for d in detectors], width=width, label=key)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(detectors, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=110)


def plot_rig(times_ns: np.ndarray, sensors: Mapping[str, tuple[np.ndarray, np.ndarray]], flagged: np.ndarray,
             train_rows: int, rigs: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """One test-bed log: each sensor's readings (each z-scored on its own, stacked), then each detector's rig
    score with its alerting rows marked; labelled rows shaded red, the training part grey. ``sensors``: name →
    (times, values); ``rigs``: detector → (row scores, alerting rows)."""
    t = (times_ns - times_ns[0]) / 1e9
    fig, axes = plt.subplots(1 + len(rigs), 1, figsize=(11, 1.4 * len(rigs) + 2.6), sharex=True,
                             gridspec_kw={"height_ratios": [2.2] + [1] * len(rigs)})
    axes = np.atleast_1d(axes)
    from streamer.replay import flag_runs

    runs = flag_runs(flagged)
    for ax in axes:
        if train_rows:
            ax.axvspan(t[0], t[min(train_rows, t.size - 1)], color="0.88", lw=0)
        for a, b in runs:
            ax.axvspan(t[a], t[b - 1] if b - 1 > a else t[a] + 0.5, color="tab:red", alpha=0.25, lw=0)
    for k, (name, (st, sv)) in enumerate(sensors.items()):
        z = (sv - np.mean(sv)) / (np.std(sv) or 1.0)
        axes[0].plot((st - times_ns[0]) / 1e9, z / 8 + k, lw=0.5)
    axes[0].set_yticks(range(len(sensors)))
    axes[0].set_yticklabels(list(sensors), fontsize=6)
    for ax, (name, (score, alerts)) in zip(axes[1:], rigs.items()):
        ax.plot(t, score, lw=0.5, color="black")
        if alerts.any():
            ax.plot(t[alerts], score[alerts], "|", color="tab:orange", ms=6)
        ax.set_ylabel(name, fontsize=7, rotation=0, ha="right")
    axes[0].set_title(f"{title} (grey: training part, red: labelled rows, orange: alerting rows)", fontsize=9)
    axes[-1].set_xlabel("seconds")
    return save_figure(fig, path, dpi=100)
