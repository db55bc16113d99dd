"""Window inspector: for one alert, the scalogram the model saw, its reconstruction and the anomaly map
(from the ``window_snapshot`` the monitor kept), the window's samples, which detector channel opened the alert in
words, and for audio a play button."""
from __future__ import annotations

import numpy as np
import streamlit as st

from dashboards.charts import heatmap, samples_chart
from dashboards.queries import get_store, query
from dashboards.store import Store, WindowSnapshot
from dashboards.ui import fmt_duration, fmt_time, guarded
from models.detector.channels import describe_channel

DAY_NS = 24 * 3600 * 10**9


def _requested_alert(keys: list[tuple[str, int]]) -> int:
    """Index of the alert named by ?stream=..&t=.. (links from the alerts table), else 0."""
    stream = st.query_params.get("stream")
    t = st.query_params.get("t")
    if stream is None:
        return 0
    for i, (s, ts) in enumerate(keys):
        if s == stream and (t is None or str(ts) == str(t)):
            return i
    st.warning(f"No alert of stream **{stream}**" + (f" starting at {t}" if t else "") + " in the store; "
               "showing the newest alert instead.", icon=":material/help:")
    return 0


def show_snapshot(snap: WindowSnapshot, stream_class: str) -> None:
    arrays = (("Input scalogram", snap.scalogram, "viridis"), ("Reconstruction", snap.reconstruction, "viridis"),
              ("Anomaly map", snap.anomaly_map, "inferno"))
    cols = st.columns(3)
    for col, (title, arr, scheme) in zip(cols, arrays):
        with col:
            if arr.size == 0 or arr.ndim != 2:
                st.info(f"{title}: not in this snapshot.")
            else:
                st.altair_chart(heatmap(arr, f"{title} ({arr.shape[0]}×{arr.shape[1]})", scheme=scheme),
                                width="stretch")
    if snap.anomaly_map.size and snap.anomaly_map.ndim == 2:
        amap = snap.anomaly_map
        peak_row, peak_col = np.unravel_index(int(np.nanargmax(amap)), amap.shape)
        st.caption(f"Anomaly map: mean {np.nanmean(amap):.4g}, max {np.nanmax(amap):.4g} at scale row {peak_row}, "
                   f"time column {peak_col} (of {amap.shape[1]}). Row 0 is the highest frequency.")
    if snap.samples.size:
        st.markdown("**Window samples**")
        st.altair_chart(samples_chart(snap.samples, snap.sample_rate), width="stretch")
        if stream_class == "audio":
            if snap.sample_rate > 0:
                audio = np.asarray(snap.samples, dtype=np.float32)
                peak = float(np.max(np.abs(audio))) if audio.size else 0.0
                st.audio(audio / peak if peak > 0 else audio, sample_rate=int(snap.sample_rate))
                st.caption(f"{audio.size / snap.sample_rate:.2f} s at {snap.sample_rate:g} Hz (peak-normalised)")
            else:
                st.info("The snapshot has no sample rate, so the audio cannot be played.")


@guarded
def render() -> None:
    st.title("Window inspector")
    store: Store = get_store()
    alerts = query(store, "alerts", limit=500)
    if alerts.empty:
        st.info("No alerts yet. When the monitor raises one, the windows it kept can be inspected here.",
                icon=":material/search_off:")
        return
    keys = list(zip(alerts["stream"], alerts["time_ns"].astype(int)))
    info = {k: row for k, row in zip(keys, alerts.itertuples())}
    choice = st.selectbox(
        "Alert", keys, index=_requested_alert(keys), key="inspect_alert",
        format_func=lambda k: f"{k[0]} · {fmt_time(k[1])} · severity {info[k].severity:.2f} · {info[k].state}")
    alert = info[choice]
    stream, start = choice
    end = int(alert.end_ns) if int(alert.end_ns) > 0 else start + DAY_NS
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Stream", stream)
    c2.metric("Severity", f"{alert.severity:.3f}")
    c3.metric("Duration", fmt_duration(alert.duration_s))
    c4.metric("State", alert.state)
    if alert.decided_by:
        st.markdown(f"**Why it opened:** {describe_channel(alert.decided_by)} (channel `{alert.decided_by}`; "
                    f"highest channel value while open {alert.peak_raw_score:.3g}).")
    times = query(store, "snapshot_times", stream, start, end)
    if not times:
        st.info("The monitor kept no window snapshot for this alert (snapshots are written for alerting windows "
                "only, and may be switched off).", icon=":material/image_not_supported:")
        return
    if len(times) > 1:
        at = st.select_slider("Snapshot", times, format_func=fmt_time, key="inspect_time")
    else:
        at = times[0]
    snap = query(store, "snapshot", stream, int(at))
    if snap is None:
        st.info("That snapshot is no longer in the store.")
        return
    st.caption(f"Window ending {fmt_time(snap.time_ns)} · {len(times)} snapshot(s) for this alert")
    show_snapshot(snap, alert.stream_class)


if __name__ == "__main__":
    render()
