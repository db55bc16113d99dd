"""Altair charts for the dashboard. Pure functions from data to chart specs, so they are testable without a
browser. Times are shown in UTC (the store's clock), not the viewer's local zone."""
from __future__ import annotations

from typing import Sequence

import altair as alt
import numpy as np
import pandas as pd

from dashboards.store import LabelWindow

ALERT_COLOR = "#d62728"
LABEL_COLOR = "#ff9f1c"
VALUE_COLOR = "#1f77b4"
SCORE_COLOR = "#6a3d9a"
THRESHOLD_COLOR = "#444444"
MAX_HEATMAP_CELLS = (64, 128)
MAX_SAMPLE_POINTS = 2000


def _time_axis(title: str | None = "time (UTC)") -> alt.X:
    return alt.X("time:T", title=title, scale=alt.Scale(type="utc"),
                 axis=alt.Axis(format="%m-%d %H:%M", labelOverlap=True))


def _spans_frame(alerts: pd.DataFrame, labels: Sequence[LabelWindow], end_ns: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Alert spans (open alerts run to the end of the data) and label spans, as time intervals."""
    alert_rows = []
    for row in alerts.itertuples():
        stop = int(row.end_ns) if int(row.end_ns) > 0 else int(end_ns)
        alert_rows.append({"start": row.time_ns, "stop": max(stop, int(row.time_ns)), "kind": "alert",
                           "severity": row.severity, "state": row.state})
    label_rows = [{"start": w.start_ns, "stop": w.end_ns, "kind": "known anomaly", "source": w.source}
                  for w in labels]
    a = pd.DataFrame(alert_rows, columns=["start", "stop", "kind", "severity", "state"])
    lab = pd.DataFrame(label_rows, columns=["start", "stop", "kind", "source"])
    for frame in (a, lab):
        frame["start"] = pd.to_datetime(frame["start"], unit="ns", utc=True)
        frame["stop"] = pd.to_datetime(frame["stop"], unit="ns", utc=True)
    return a, lab


def stream_charts(
    scores: pd.DataFrame, alerts: pd.DataFrame, labels: Sequence[LabelWindow], title: str,
    value_height: int = 210, score_height: int = 190,
) -> tuple[alt.LayerChart, alt.LayerChart]:
    """(value chart, score chart) for one stream, drawn one above the other on the same time axis: the raw
    value, then the calibrated score with its threshold (dashed). Alerts (red) and known anomaly windows
    (orange) are shaded in both. When the store downsampled the series, the score line is the bucket maximum so
    short bursts stay visible. Heights include axes and title (Streamlit fits the chart). Two charts rather than a vconcat because only single views fill the column
    width in Streamlit."""
    data = scores.copy()
    data["time"] = pd.to_datetime(data["time_ns"], unit="ns", utc=True)
    bucketed = bool(scores.attrs.get("bucket_ns", 0))
    score_field = "score_max" if bucketed else "score"
    score_title = "score (bucket max)" if bucketed else "score"
    end_ns = int(scores["time_ns"].max()) if len(scores) else 0
    alert_spans, label_spans = _spans_frame(alerts, labels, end_ns)
    domain = [data["time"].min().isoformat(), data["time"].max().isoformat()] if len(data) else None
    x_scale = alt.Scale(type="utc", domain=domain) if domain else alt.Scale(type="utc")

    def x_axis(title: str | None) -> alt.X:
        return alt.X("time:T", title=title, scale=x_scale,
                     axis=alt.Axis(format="%m-%d %H:%M", labelOverlap=True, labelFlush=True))

    def shading() -> list[alt.Chart]:
        layers = []
        if len(label_spans):
            layers.append(alt.Chart(label_spans).mark_rect(color=LABEL_COLOR, opacity=0.22).encode(
                x=alt.X("start:T", scale=x_scale), x2="stop:T",
                tooltip=[alt.Tooltip("kind:N"), alt.Tooltip("source:N"),
                         alt.Tooltip("start:T", format="%Y-%m-%d %H:%M:%S"),
                         alt.Tooltip("stop:T", format="%Y-%m-%d %H:%M:%S")]))
        if len(alert_spans):
            layers.append(alt.Chart(alert_spans).mark_rect(color=ALERT_COLOR, opacity=0.16).encode(
                x=alt.X("start:T", scale=x_scale), x2="stop:T",
                tooltip=[alt.Tooltip("kind:N"), alt.Tooltip("state:N"), alt.Tooltip("severity:Q", format=".3f"),
                         alt.Tooltip("start:T", format="%Y-%m-%d %H:%M:%S")]))
            layers.append(alt.Chart(alert_spans).mark_rule(color=ALERT_COLOR, strokeWidth=1.5).encode(
                x=alt.X("start:T", scale=x_scale)))
        return layers

    y_axis = alt.Axis(minExtent=44, titlePadding=6)  # same gutter in both charts keeps their x axes aligned
    base = alt.Chart(data)
    value_line = base.mark_line(color=VALUE_COLOR, strokeWidth=1.2).encode(
        x=x_axis(None), y=alt.Y("value:Q", title="value", scale=alt.Scale(zero=False), axis=y_axis),
        tooltip=[alt.Tooltip("time:T", format="%Y-%m-%d %H:%M:%S"), alt.Tooltip("value:Q", format=".4g")])
    value_chart = alt.layer(*shading(), value_line).properties(
        height=value_height, width="container", title=alt.Title(title, anchor="start", fontSize=15))

    score_line = base.mark_line(color=SCORE_COLOR, strokeWidth=1.4).encode(
        x=x_axis("time (UTC)"),
        y=alt.Y(f"{score_field}:Q", title=score_title, scale=alt.Scale(domain=[0, 1]), axis=y_axis),
        tooltip=[alt.Tooltip("time:T", format="%Y-%m-%d %H:%M:%S"),
                 alt.Tooltip(f"{score_field}:Q", format=".3f", title=score_title),
                 alt.Tooltip("threshold:Q", format=".3f")])
    threshold_line = base.mark_line(color=THRESHOLD_COLOR, strokeDash=[5, 4], strokeWidth=1).encode(
        x=x_axis("time (UTC)"), y=alt.Y("threshold:Q", axis=y_axis))
    score_chart = alt.layer(*shading(), score_line, threshold_line).properties(
        height=score_height, width="container")
    return value_chart, score_chart


def shrink(array: np.ndarray, max_shape: tuple[int, int] = MAX_HEATMAP_CELLS) -> np.ndarray:
    """Block-average a 2-D array down to at most ``max_shape`` cells (the browser draws one rect per cell)."""
    arr = np.asarray(array, dtype=np.float64)
    if arr.ndim != 2:
        arr = np.atleast_2d(np.squeeze(arr))
        if arr.ndim != 2:
            raise ValueError(f"expected a 2-D array, got shape {array.shape}")
    fy = int(np.ceil(arr.shape[0] / max_shape[0]))
    fx = int(np.ceil(arr.shape[1] / max_shape[1]))
    if fy == 1 and fx == 1:
        return arr
    h, w = arr.shape[0] // fy * fy, arr.shape[1] // fx * fx
    arr = arr[: max(h, fy), : max(w, fx)]
    return arr[:h, :w].reshape(h // fy, fy, w // fx, fx).mean(axis=(1, 3))


def heatmap(array: np.ndarray, title: str, scheme: str = "viridis", height: int = 280,
            width: int | str = "container") -> alt.Chart:
    """A time × frequency image: columns are time, rows are CWT scales (row 0 = highest frequency, on top)."""
    arr = shrink(array)
    rows, cols = np.indices(arr.shape)
    frame = pd.DataFrame({"time": cols.ravel(), "scale": rows.ravel(), "v": arr.ravel()})
    return alt.Chart(frame).mark_rect().encode(
        x=alt.X("time:O", title="time →", axis=None),
        y=alt.Y("scale:O", title="frequency (scale) ↓", axis=None),
        color=alt.Color("v:Q", scale=alt.Scale(scheme=scheme), legend=alt.Legend(title=None, orient="bottom")),
        tooltip=[alt.Tooltip("time:O"), alt.Tooltip("scale:O"), alt.Tooltip("v:Q", format=".3f")],
    ).properties(title=title, height=height, width=width)


def samples_chart(samples: np.ndarray, sample_rate: float, height: int = 170) -> alt.Chart:
    """The window's raw samples (strided to at most MAX_SAMPLE_POINTS points)."""
    samples = np.asarray(samples, dtype=np.float64).ravel()
    step = max(1, int(np.ceil(samples.size / MAX_SAMPLE_POINTS)))
    idx = np.arange(0, samples.size, step)
    seconds = idx / sample_rate if sample_rate > 0 else idx
    frame = pd.DataFrame({"t": seconds, "sample": samples[idx]})
    return alt.Chart(frame).mark_line(color=VALUE_COLOR, strokeWidth=1).encode(
        x=alt.X("t:Q", title="seconds into the window" if sample_rate > 0 else "sample"),
        y=alt.Y("sample:Q", title="sample", scale=alt.Scale(zero=False)),
    ).properties(height=height, width="container")


def running_score_chart(history: pd.DataFrame) -> alt.Chart:
    """NAB score (normalised) as rows arrive: columns ``time``, ``profile``, ``score``."""
    return alt.Chart(history).mark_line(point=False).encode(
        x=_time_axis(),
        y=alt.Y("score:Q", title="NAB score"),
        color=alt.Color("profile:N", legend=alt.Legend(orient="top-left", title=None, direction="horizontal")),
        tooltip=["profile:N", alt.Tooltip("score:Q", format=".1f"), alt.Tooltip("time:T", format="%Y-%m-%d %H:%M")],
    ).properties(height=260, width="container", title="NAB score so far (normalised: 100 = perfect, 0 = silent)")
