"""Live alerts: newest first, filterable, with a person's verdict (acknowledged / false positive) per alert."""
from __future__ import annotations

import time
import urllib.parse

import pandas as pd
import streamlit as st

from dashboards.queries import REFRESH_S, get_store, query, write_feedback
from dashboards.store import AlertFeedback, Store
from dashboards.ui import fmt_duration, fmt_time, guarded, to_datetime
from models.detector.channels import describe_channel

VERDICT_LABELS = {"ack": "Acknowledged", "false_positive": "False positive", "": ""}


def alerts_with_feedback(alerts: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
    """Alerts joined with their verdict (feedback is keyed by stream + alert start time)."""
    fb = feedback[["stream", "time_ns", "verdict", "note", "at_ns"]]
    merged = alerts.merge(fb, on=["stream", "time_ns"], how="left")
    for name in ("verdict", "note"):
        merged[name] = merged[name].fillna("")
    merged["at_ns"] = merged["at_ns"].fillna(0).astype("int64")
    return merged


def display_table(merged: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "Start (UTC)": to_datetime(merged["time_ns"]),
        "Stream": merged["stream"],
        "Class": merged["stream_class"],
        "Severity": merged["severity"],
        "Why": [describe_channel(d) if d else "" for d in merged["decided_by"]],
        "Duration": [fmt_duration(s) for s in merged["duration_s"]],
        "State": merged["state"],
        "Verdict": [VERDICT_LABELS.get(v, v) for v in merged["verdict"]],
        "Note": merged["note"],
        "Chart": ["streams?" + urllib.parse.urlencode({"stream": s, "t": int(t), "range": "1d"})
                  for s, t in zip(merged["stream"], merged["time_ns"])],
        "Inspect": ["inspector?" + urllib.parse.urlencode({"stream": s, "t": int(t)})
                    for s, t in zip(merged["stream"], merged["time_ns"])],
    })


def feedback_csv(merged: pd.DataFrame) -> bytes:
    rows = merged[merged["verdict"] != ""]
    out = pd.DataFrame({
        "stream": rows["stream"],
        "alert_start_utc": to_datetime(rows["time_ns"]).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "alert_start_ns": rows["time_ns"],
        "severity": rows["severity"],
        "verdict": rows["verdict"],
        "note": rows["note"],
        "verdict_at_utc": to_datetime(rows["at_ns"]).dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
    })
    return out.to_csv(index=False).encode("utf-8")


def _filters(store: Store) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None, bool]:
    streams = query(store, "streams")
    names = sorted({s.stream for s in streams})
    classes = sorted({s.stream_class for s in streams if s.stream_class})
    c1, c2, c3 = st.columns([3, 2, 1.2], vertical_alignment="bottom")
    chosen = c1.multiselect("Streams", names, key="alerts_streams", placeholder="All streams")
    chosen_classes = c2.multiselect("Stream class", classes, key="alerts_classes", placeholder="All classes")
    hide_fp = c3.toggle("Hide false positives", key="alerts_hide_fp")
    return (tuple(chosen) or None, tuple(chosen_classes) or None, hide_fp)


def _load(store: Store, streams, classes, hide_fp: bool) -> pd.DataFrame:
    alerts = query(store, "alerts", streams=streams, classes=classes, limit=1000)
    merged = alerts_with_feedback(alerts, query(store, "feedback"))
    if hide_fp:
        merged = merged[merged["verdict"] != "false_positive"].reset_index(drop=True)
    return merged


@st.fragment(run_every=REFRESH_S)
@guarded
def live_panel(streams, classes, hide_fp: bool) -> None:
    store = get_store()
    merged = _load(store, streams, classes, hide_fp)
    total = len(merged)
    open_alerts = int((merged["state"] == "open").sum())
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Open alerts", open_alerts)
    c2.metric("Alerts shown", total)
    c3.metric("Acknowledged", int((merged["verdict"] == "ack").sum()))
    c4.metric("False positives", int((merged["verdict"] == "false_positive").sum()))
    if merged.empty:
        if streams or classes:
            st.info("No alerts match these filters.", icon=":material/filter_alt_off:")
        else:
            st.info("No alerts yet. Alerts appear here, newest first, as soon as the monitor raises them.",
                    icon=":material/notifications_none:")
        return
    st.dataframe(
        display_table(merged), hide_index=True, width="stretch",
        height=min(36 + 35 * total, 460),
        column_config={
            "Start (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
            "Severity": st.column_config.ProgressColumn(
                help="Peak calibrated anomaly score during the alert", min_value=0.0, max_value=1.0, format="%.3f"),
            "Chart": st.column_config.LinkColumn(display_text="chart", width="small"),
            "Inspect": st.column_config.LinkColumn(display_text="inspect", width="small"),
        },
    )
    st.caption(f"Refreshes every {REFRESH_S:g} s · newest first · times in UTC")


@guarded
def review_form(streams, classes, hide_fp: bool) -> None:
    store = get_store()
    merged = _load(store, streams, classes, False)
    if merged.empty:
        return
    st.subheader("Review an alert")
    keys = list(zip(merged["stream"], merged["time_ns"]))
    labels = {k: f"{k[0]} · {fmt_time(k[1])} · severity {sev:.2f} · {state}"
              for k, sev, state in zip(keys, merged["severity"], merged["state"])}
    with st.form("review", clear_on_submit=True, border=True):
        choice = st.selectbox("Alert", keys, format_func=lambda k: labels[k], key="review_alert")
        c1, c2 = st.columns([1, 2])
        verdict = c1.radio("Verdict", ["ack", "false_positive"], format_func=VERDICT_LABELS.get,
                           horizontal=True, key="review_verdict")
        note = c2.text_input("Note (optional)", key="review_note", max_chars=500)
        if st.form_submit_button("Save verdict", type="primary"):
            write_feedback(store, AlertFeedback(stream=choice[0], alert_ns=int(choice[1]), verdict=verdict,
                                                note=note.strip(), at_ns=time.time_ns()))
            st.session_state["review_saved"] = f"{choice[0]} @ {fmt_time(choice[1])}: {VERDICT_LABELS[verdict]}"
            st.rerun()  # redraw the table above with the new verdict
    if st.session_state.get("review_saved"):
        st.success(f"Verdict saved — {st.session_state['review_saved']}")
    reviewed = merged[merged["verdict"] != ""]
    st.download_button(
        f"Export verdicts as CSV ({len(reviewed)})", feedback_csv(merged), file_name="alert_feedback.csv",
        mime="text/csv", disabled=reviewed.empty, icon=":material/download:",
    )


@guarded
def render() -> None:
    st.title("Live alerts")
    store = get_store()
    streams, classes, hide_fp = _filters(store)
    live_panel(streams, classes, hide_fp)
    review_form(streams, classes, hide_fp)


if __name__ == "__main__":
    render()
