"""Scoreboard: every table (JSON) and plot (PNG) the benchmarks left in ``benchmarks/results/``."""
from __future__ import annotations

import streamlit as st

from dashboards.results import MAX_COLUMNS, results_dir, run_summary, scan
from dashboards.ui import guarded


@guarded
def render() -> None:
    st.title("Scoreboard")
    root = results_dir()
    jsons, pngs = scan(root)
    if not jsons and not pngs:
        st.info(f"No benchmark results in `{root}` yet. Run `scalowatch bench ...` to produce them.",
                icon=":material/leaderboard:")
        return
    st.caption(f"From `{root}` · {len(jsons)} table(s), {len(pngs)} plot(s)")
    for result in jsons:
        st.subheader(result.title)
        if result.error and result.data is None:
            st.warning(result.error, icon=":material/warning:")
            continue
        summary = run_summary(result.data)
        if summary:
            st.caption(summary)
        if result.tables:
            for label, table in result.tables:
                if label:
                    st.markdown(f"**{label.replace('_', ' ')}**")
                shown = table.iloc[:, :MAX_COLUMNS]
                st.dataframe(shown, hide_index=True, width="stretch")
                if table.shape[1] > MAX_COLUMNS:
                    st.caption(f"{table.shape[1] - MAX_COLUMNS} more column(s) in the raw JSON below.")
            with st.expander("Raw JSON"):
                st.json(result.data, expanded=1)
        else:
            if result.error:
                st.caption(result.error)
            st.json(result.data, expanded=1)
    if pngs:
        st.subheader("Plots")
        cols = st.columns(2)
        for i, path in enumerate(pngs):
            cols[i % 2].image(str(path), caption=str(path.relative_to(root)), width="stretch")


if __name__ == "__main__":
    render()
