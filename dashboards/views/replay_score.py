"""Live replay score: while a labelled file (NAB/UCR) replays, its NAB score so far, from the ``window_score``
and ``label_window`` points in the store."""
from __future__ import annotations

import math

import streamlit as st

from dashboards.charts import running_score_chart
from dashboards.live_nab import PROFILE_TITLES, NabUnavailable, live_nab_score
from dashboards.queries import REFRESH_S, get_store, query
from dashboards.ui import guarded


@st.cache_data(ttl=120, show_spinner=False, max_entries=32)
def _score(store_key: str, stream: str, rows: int, last_ns: int, n_labels: int, _scores, _labels):
    """NAB scoring of the rows so far, recomputed only when rows or labels change (keyed by their count and
    newest time, so the big frame is not hashed on every refresh)."""
    return live_nab_score(_scores, _labels)


@st.fragment(run_every=REFRESH_S)
@guarded
def score_panel(stream: str) -> None:
    store = get_store()
    summary = {s.stream: s for s in query(store, "streams")}.get(stream)
    labels = query(store, "labels", stream)
    if summary is None:
        st.info(f"**{stream}** has label windows but no scored windows yet: the replay has not reached the "
                "monitor's output.", icon=":material/hourglass_empty:")
        return
    scores = query(store, "window_scores", stream, summary.first_ns, summary.last_ns + 1, max_points=None)
    try:
        last = int(scores["time_ns"].max()) if len(scores) else 0
        result = _score(store.key, stream, len(scores), last, len(labels), scores, labels)
    except NabUnavailable as exc:
        st.warning(f"**NAB scorer unavailable.** {exc}. The counts below are still live.",
                   icon=":material/warning:")
        c1, c2, c3 = st.columns(3)
        c1.metric("Scored windows", len(scores))
        c2.metric("Label windows", len(labels))
        c3.metric("Alerting windows", int((scores["alert"] >= 0.5).sum()))
        return
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Scored windows", f"{result.rows:,}")
    c2.metric("Label windows reached", f"{result.windows_reached} / {result.windows_total}")
    c3.metric("Alerting windows", f"{result.detections:,}")
    if result.profiles:
        std = result.profiles.get("standard")
        c4.metric("Detected / missed / false", f"{std.tp} / {std.fn} / {std.fp}" if std else "–")
    if result.note:
        st.info(result.note, icon=":material/info:")
        return
    cols = st.columns(len(result.profiles))
    for col, (name, ps) in zip(cols, result.profiles.items()):
        best = "" if math.isnan(ps.best_score) else f"best possible {ps.best_score:.1f} @ {ps.best_threshold:.3f}"
        col.metric(f"NAB {PROFILE_TITLES.get(name, name)}", f"{ps.score:.1f}", help=best or None)
        if best:
            col.caption(best)
    if not result.history.empty:
        st.altair_chart(running_score_chart(result.history), width="stretch")
    st.caption("Detections are the monitor's own alerts (alert = 1). 100 = every window caught at its start "
               "with no false alarms, 0 = no detections at all. Updates every "
               f"{REFRESH_S:g} s while the file replays.")


@guarded
def render() -> None:
    st.title("Live replay score")
    store = get_store()
    labels = query(store, "labels")
    labelled = sorted({w.stream for w in labels})
    if not labelled:
        st.info("No labelled replay in the store. Replay a labelled file (e.g. `scalowatch replay nab ...`) and "
                "its running NAB score appears here.", icon=":material/scoreboard:")
        return
    stream = st.selectbox("Labelled stream", labelled, key="replay_stream")
    sources = sorted({w.source for w in labels if w.stream == stream and w.source})
    if sources:
        st.caption("Labels from " + ", ".join(f"`{s}`" for s in sources))
    score_panel(stream)


if __name__ == "__main__":
    render()
