"""Images: MVTec-style results (image, anomaly-map overlay, score, ground-truth mask), browsed by category and
defect, from ``image_result`` points in the store or from a bench output folder."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from dashboards.imaging import (
    ImageLoadError, load_map, load_mask, load_results_folder, load_rgb, overlay, within,
)
from dashboards.queries import get_store, query
from dashboards.results import results_dir
from dashboards.ui import guarded

IMAGE_DIR_ENV = "SCALOWATCH_DASHBOARD_IMAGE_DIR"
BENCH_OUT_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "out"
SOURCES = ("Store", "Bench output folder")


def allowed_roots() -> list[Path]:
    """Folders the page may read results from: the results directory, the benches' default output, and the
    folder named by SCALOWATCH_DASHBOARD_IMAGE_DIR."""
    roots = [results_dir(), BENCH_OUT_DIR]
    if os.environ.get(IMAGE_DIR_ENV):
        roots.append(Path(os.environ[IMAGE_DIR_ENV]))
    return roots


@st.cache_data(ttl=30, show_spinner=False)
def _folder_results(folder: str) -> pd.DataFrame:
    return load_results_folder(folder)


def image_auroc(frame: pd.DataFrame) -> float | None:
    """Image-level AUROC (defect = positive) when both classes are present."""
    labels = (frame["defect"] != "good").astype(int).to_numpy()
    scores = frame["score"].to_numpy(dtype=float)
    if labels.min() == labels.max() or np.isnan(scores).any():
        return None
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    return float(roc_auc_score(labels, scores))


def show_result(row: pd.Series) -> None:
    cols = st.columns(3)
    try:
        image = load_rgb(row["path"])
    except ImageLoadError as exc:
        st.warning(str(exc), icon=":material/broken_image:")
        return
    cols[0].image(image, caption=f"{Path(row['path']).name} · score {row['score']:.4f}", width="stretch")
    with cols[1]:
        if row["map_path"]:
            try:
                st.image(overlay(image, load_map(row["map_path"])), caption="Anomaly map overlay", width="stretch")
            except ImageLoadError as exc:
                st.warning(str(exc), icon=":material/broken_image:")
        else:
            st.info("No anomaly map for this image.")
    with cols[2]:
        if row["mask_path"]:
            try:
                mask = load_mask(row["mask_path"], (image.shape[1], image.shape[0]))
                st.image(mask, caption="Ground-truth mask", width="stretch", clamp=True)
            except ImageLoadError as exc:
                st.warning(str(exc), icon=":material/broken_image:")
        else:
            st.info("No ground-truth mask (a good image has none).")


@guarded
def render() -> None:
    st.title("Images")
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    source = c1.radio("Results from", SOURCES, key="images_source", horizontal=True)
    if source == SOURCES[0]:
        frame = query(get_store(), "image_results")
        where = "the store"
    else:
        default = os.environ.get(IMAGE_DIR_ENV) or str(results_dir() / "mvtec")
        folder = c2.text_input("Bench output folder", value=default, key="images_folder",
                               help="A folder with image_results.csv / .jsonl / .json (up to two levels down)")
        roots = allowed_roots()
        if not within(folder, roots):
            st.warning(f"{folder} is outside the folders this dashboard serves ("
                       + ", ".join(str(r) for r in roots) + f"). Set {IMAGE_DIR_ENV} to serve another one.",
                       icon=":material/lock:")
            return
        if not Path(folder).is_dir():
            st.warning(f"No folder at {folder}.", icon=":material/folder_off:")
            return
        try:
            frame = _folder_results(folder)
        except ValueError as exc:
            st.error(str(exc))
            return
        where = folder
    if frame.empty:
        st.info(f"No image results in {where} yet. `scalowatch bench mvtec` or `scalowatch score` on an image "
                "folder writes them.", icon=":material/image_search:")
        return
    f1, f2 = st.columns(2)
    categories = sorted(frame["category"].unique())
    category = f1.selectbox("Category", categories, key="images_category")
    in_cat = frame[frame["category"] == category]
    defects = ["all"] + sorted(in_cat["defect"].unique())
    defect = f2.selectbox("Defect", defects, key="images_defect")
    shown = in_cat if defect == "all" else in_cat[in_cat["defect"] == defect]
    shown = shown.sort_values("score", ascending=False).reset_index(drop=True)
    m1, m2, m3 = st.columns(3)
    m1.metric("Images", len(shown))
    auroc = image_auroc(in_cat)
    m2.metric(f"Image AUROC ({category})", f"{auroc:.3f}" if auroc is not None else "–")
    m3.metric("Mean score", f"{shown['score'].mean():.4f}")
    table = pd.DataFrame({"Image": [Path(p).name for p in shown["path"]], "Defect": shown["defect"],
                          "Score": shown["score"], "Mask": shown["mask_path"] != ""})
    if (shown["model_version"] != "").any():  # which saved detector gave each score (empty for bench runs)
        table["Model"] = shown["model_version"]
    st.dataframe(
        table,
        hide_index=True, width="stretch", height=min(36 + 35 * len(shown), 260),
        column_config={"Score": st.column_config.ProgressColumn(
            min_value=float(frame["score"].min()), max_value=float(frame["score"].max()), format="%.4f")},
    )
    labels = [f"{Path(p).name} · {d} · {s:.4f}" for p, d, s in zip(shown["path"], shown["defect"], shown["score"])]
    pick = st.selectbox("Image", range(len(shown)), format_func=labels.__getitem__, key="images_pick")
    show_result(shown.iloc[int(pick)])


if __name__ == "__main__":
    render()
