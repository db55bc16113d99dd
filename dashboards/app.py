"""Streamlit entry point: ``streamlit run dashboards/app.py`` (what ``scalowatch dashboard`` runs).

The store is chosen by the environment (``SCALOWATCH_DASHBOARD_STORE``, ``SCALOWATCH_DASHBOARD_SQLITE_PATH``,
else the monitor's own settings), so the CLI and `scalowatch demo` only have to set variables.
"""
from __future__ import annotations

import streamlit as st

from dashboards.queries import get_store

st.set_page_config(page_title="Scalowatch", page_icon=":material/monitoring:", layout="wide",
                   initial_sidebar_state="expanded")

PAGES = {
    "Monitor": [
        # The default page is served at "/" (Streamlit ignores a url_path on it).
        st.Page("views/live_alerts.py", title="Live alerts", icon=":material/notifications_active:", default=True),
        st.Page("views/streams.py", title="Streams", icon=":material/show_chart:", url_path="streams"),
        st.Page("views/inspector.py", title="Window inspector", icon=":material/troubleshoot:",
                url_path="inspector"),
        st.Page("views/replay_score.py", title="Live replay score", icon=":material/scoreboard:",
                url_path="replay"),
    ],
    "Results": [
        st.Page("views/images.py", title="Images", icon=":material/image:", url_path="images"),
        st.Page("views/scoreboard.py", title="Scoreboard", icon=":material/leaderboard:", url_path="scoreboard"),
    ],
}

# Streamlit's default top padding wastes a fifth of a laptop screen on a monitoring page.
st.html("<style>[data-testid='stMainBlockContainer']{padding-top:2.2rem;padding-bottom:2rem}</style>")
navigation = st.navigation(PAGES)
with st.sidebar:
    st.markdown("### Scalowatch")
    try:
        store = get_store()
        st.caption(store.description, help=store.key.split(":", 1)[1])  # full location on hover; no secrets
    except ValueError as exc:  # a bad store kind in the settings: every page will say so too
        st.caption(f"Store misconfigured: {exc}")
navigation.run()
