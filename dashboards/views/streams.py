"""Streams: an overview of every stream (state + sparkline), then raw value, anomaly score and threshold of
chosen streams side by side, with alerts and known anomaly windows shaded."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards.charts import ALERT_COLOR, stream_charts
from dashboards.queries import REFRESH_S, get_store, query
from dashboards.store import StreamSummary
from dashboards.ui import SPAN_PARAMS, SPANS, guarded, to_datetime

CHART_POINTS = 1200  # per stream and panel: enough for a wide screen, small enough to stay fast
SPARK_BUCKETS = 40
COLUMNS_PER_ROW = 2


def sparkline_scores(store, streams: list[StreamSummary], span_ns: int | None,
                     buckets: int = SPARK_BUCKETS) -> dict[str, list[float]]:
    """Each stream's bucket-max score over the last ``span_ns`` of ITS OWN data (replayed files can be years
    apart, and a stream that stalled should still show its last activity); a stream with less data than that,
    or ``span_ns`` None, over its whole extent. Streams whose windows coincide share one query, so a live
    deployment (every stream current) costs one query for all of them."""
    groups: dict[tuple[int, int], list[str]] = {}
    for s in streams:
        extent = s.last_ns - s.first_ns + 1
        if span_ns is None or extent <= span_ns:
            key = (s.first_ns, s.last_ns + 1)
        else:
            width = max(1, span_ns // buckets)
            end = (s.last_ns // width + 1) * width
            key = (end - width * buckets, end)
        groups.setdefault(key, []).append(s.stream)
    out: dict[str, list[float]] = {}
    for (start, end), names in groups.items():
        frame = query(store, "score_overview", start, end, buckets=buckets, streams=tuple(sorted(names)))
        for name, group in frame.groupby("stream"):
            out[name] = group["score_max"].fillna(0).round(4).tolist()
    return out


def overview_table(streams: list[StreamSummary], sparks: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame({
        "State": ["ALERT" if s.in_alert else "normal" for s in streams],
        "Stream": [s.stream for s in streams],
        "Class": [s.stream_class for s in streams],
        "Score": [s.last_score for s in streams],
        "Threshold": [s.last_threshold for s in streams],
        "Recent score": [sparks.get(s.stream, []) for s in streams],
        "Last seen (UTC)": [to_datetime(s.last_ns) for s in streams],
        "_alert": [s.in_alert for s in streams],
    }).sort_values(["_alert", "Score"], ascending=[False, False]).drop(columns="_alert").reset_index(drop=True)


def _span_ns(choice: str, first_ns: int, last_ns: int, centre_ns: int | None = None) -> tuple[int, int]:
    """The chosen span ending at the stream's newest point, or centred on ``centre_ns`` (a link from an
    alert), clipped to the stream's extent."""
    span = SPANS[choice]
    if span is None:
        return int(first_ns), int(last_ns) + 1
    if centre_ns is None:
        end = int(last_ns) + 1
        return max(int(first_ns), end - span), end
    start = max(int(first_ns), int(centre_ns) - span // 2)
    return start, min(int(last_ns) + 1, start + span)


def _centre() -> int | None:
    raw = st.query_params.get("t")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        st.warning(f"Ignoring the time in the link ({raw!r} is not a nanosecond timestamp).")
        return None


@st.fragment(run_every=REFRESH_S)
@guarded
def overview_panel(span_choice: str) -> None:
    store = get_store()
    streams = query(store, "streams")
    if not streams:
        return
    last = max(s.last_ns for s in streams)
    sparks = sparkline_scores(store, streams, SPANS[span_choice])
    in_alert = sum(s.in_alert for s in streams)
    c1, c2, c3 = st.columns(3)
    c1.metric("Streams", len(streams))
    c2.metric("In alert now", in_alert)
    c3.metric("Newest point (UTC)", to_datetime(last).strftime("%Y-%m-%d %H:%M:%S"))
    table = overview_table(streams, sparks)
    styled = table.style.map(lambda v: f"color: {ALERT_COLOR}; font-weight: 600" if v == "ALERT" else "",
                             subset=["State"])
    st.dataframe(
        styled, hide_index=True, width="stretch",
        height=min(36 + 35 * len(streams), 320),
        column_config={
            "Score": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.3f",
                                                     help="Latest calibrated anomaly score"),
            "Threshold": st.column_config.NumberColumn(format="%.3f"),
            "Recent score": st.column_config.LineChartColumn(
                y_min=0.0, y_max=1.0, help="Maximum calibrated score per bucket over the chosen range of each stream's own data"),
            "Last seen (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        },
    )


@st.fragment(run_every=REFRESH_S)
@guarded
def charts_panel(selected: tuple[str, ...], span_choice: str, centre_ns: int | None = None) -> None:
    store = get_store()
    by_name = {s.stream: s for s in query(store, "streams")}
    for row_start in range(0, len(selected), COLUMNS_PER_ROW):
        cols = st.columns(COLUMNS_PER_ROW)
        for col, name in zip(cols, selected[row_start:row_start + COLUMNS_PER_ROW]):
            with col:
                stream_panel(by_name.get(name), name, span_choice, centre_ns)


@guarded
def stream_panel(summary: StreamSummary | None, name: str, span_choice: str, centre_ns: int | None = None) -> None:
    store = get_store()
    if summary is None:
        st.warning(f"Unknown stream **{name}**: the store has no scores for it.", icon=":material/help:")
        return
    start, end = _span_ns(span_choice, summary.first_ns, summary.last_ns, centre_ns)
    scores = query(store, "window_scores", name, start, end, max_points=CHART_POINTS)
    if scores.empty:
        st.info(f"**{name}**: no scores in this time range.")
        return
    alerts = query(store, "alerts", streams=(name,), limit=500)
    alerts = alerts[(alerts["time_ns"] < end) & ((alerts["end_ns"] == 0) | (alerts["end_ns"] >= start))]
    labels = [w for w in query(store, "labels", name) if w.end_ns >= start and w.start_ns < end]
    title = f"{name} · {summary.stream_class}" + ("  · IN ALERT" if summary.in_alert else "")
    value_chart, score_chart = stream_charts(scores, alerts, labels, title)
    st.altair_chart(value_chart, width="stretch")
    st.altair_chart(score_chart, width="stretch")
    note = f"{len(scores)} points"
    if scores.attrs.get("bucket_ns"):
        note += f" (downsampled, {scores.attrs['bucket_ns'] / 1e9:g} s buckets)"
    note += f" · {len(alerts)} alert(s) · {len(labels)} known anomaly window(s) shaded orange"
    st.caption(note)


@guarded
def render() -> None:
    st.title("Streams")
    store = get_store()
    streams = query(store, "streams")
    if not streams:
        st.info("The store has no scored windows yet. Start the monitor (or `scalowatch demo`) and streams "
                "will appear here.", icon=":material/database:")
        return
    names = [s.stream for s in streams]
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    default_span = SPAN_PARAMS.get(st.query_params.get("range", "1d"), "Last day")
    span_choice = c2.selectbox("Time range", list(SPANS), index=list(SPANS).index(default_span), key="streams_span",
                               help="Ends at each stream's newest point (replayed data may be years old).")
    requested = st.query_params.get_all("stream")
    default = [n for n in requested if n in names]
    if not requested:
        alerting = [s.stream for s in streams if s.in_alert]
        default = (alerting or names)[:1]
    selected = c1.multiselect("Streams to chart (side by side)", names, default=default, key="streams_selected",
                              max_selections=6)
    unknown = [n for n in requested if n not in names]
    for name in unknown:
        st.warning(f"Unknown stream **{name}**: the store has no scores for it.", icon=":material/help:")
    with st.expander("All streams", expanded=True):
        overview_panel(span_choice)
    centre = _centre()
    if centre is not None:
        c1, c2 = st.columns([4, 1], vertical_alignment="center")
        c1.caption(f"Centred on {to_datetime(centre).strftime('%Y-%m-%d %H:%M:%S')} UTC (from an alert link).")
        if c2.button("Follow newest data", key="streams_follow"):
            del st.query_params["t"]
            st.rerun()
    if selected:
        charts_panel(tuple(selected), span_choice, centre)
    elif not unknown:
        st.info("Choose one or more streams to chart.")


if __name__ == "__main__":
    render()
