"""MVTec-style result images for the Images page: load the picture, colour the anomaly map over it, show the
ground-truth mask; and read results from a bench output folder as well as from the store.

A bench output folder holds ``image_results.csv`` (or ``.jsonl`` / ``.json``: a list of objects) anywhere up to
two levels down, with the ``image_result`` columns of docs/store-schema.md (category, defect, path, score,
map_path, mask_path, model_version — absent in files written before it: then empty); relative paths are taken
relative to that file.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from dashboards.store import IMAGE_COLUMNS

log = logging.getLogger(__name__)

RESULT_FILE_NAMES = ("image_results.csv", "image_results.jsonl", "image_results.json")


class ImageLoadError(RuntimeError):
    """A result's image, map or mask file is missing or unreadable."""


def load_rgb(path: str | Path, max_side: int = 512) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((max_side, max_side))
            return np.asarray(img)
    except (OSError, ValueError) as exc:
        raise ImageLoadError(f"cannot read image {path}: {exc}") from exc


def load_map(path: str | Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ImageLoadError(f"cannot read anomaly map {path}: {exc}") from exc
    arr = np.squeeze(np.asarray(arr, dtype=np.float32))
    if arr.ndim != 2:
        raise ImageLoadError(f"anomaly map {path} has shape {arr.shape}, expected 2-D")
    return arr


def load_mask(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Ground-truth mask resized to ``size`` (width, height), as uint8 0/255."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L").resize(size, Image.NEAREST))
    except (OSError, ValueError) as exc:
        raise ImageLoadError(f"cannot read mask {path}: {exc}") from exc


def colorize(amap: np.ndarray, size: tuple[int, int], vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """The map scaled to [0, 1] (per image unless vmin/vmax are given), resized to ``size``, coloured (RGB)."""
    from matplotlib import colormaps  # noqa: PLC0415 - heavy import, only needed on this page

    lo = float(np.nanmin(amap)) if vmin is None else vmin
    hi = float(np.nanmax(amap)) if vmax is None else vmax
    norm = np.clip((amap - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(amap)
    resized = np.asarray(Image.fromarray((norm * 255).astype(np.uint8)).resize(size, Image.BILINEAR)) / 255.0
    return (colormaps["jet"](resized)[..., :3] * 255).astype(np.uint8)


def overlay(image: np.ndarray, amap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Anomaly map blended over the image (both RGB uint8, same size)."""
    heat = colorize(amap, (image.shape[1], image.shape[0]))
    return (image.astype(np.float32) * (1 - alpha) + heat.astype(np.float32) * alpha).astype(np.uint8)


def within(folder: str | Path, roots: list[Path]) -> bool:
    """Whether ``folder`` (symlinks and ``..`` resolved) lies inside one of ``roots``.

    The Images page serves files to whoever can open the dashboard (it has no login), so it reads result folders
    only under the configured directories, never an arbitrary path typed into it.
    """
    real = Path(folder).expanduser().resolve()
    return any(real == root.resolve() or root.resolve() in real.parents for root in roots)


def find_result_file(folder: str | Path) -> Path | None:
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for depth in ("", "*/", "*/*/"):
        for name in RESULT_FILE_NAMES:
            found = sorted(folder.glob(depth + name))
            if found:
                return found[0]
    return None


def load_results_folder(folder: str | Path) -> pd.DataFrame:
    """Image results from a bench output folder (see the module docstring); empty frame if none found.
    Raises ValueError with the file name when the file exists but cannot be parsed."""
    path = find_result_file(folder)
    if path is None:
        return pd.DataFrame(columns=list(IMAGE_COLUMNS))
    try:
        if path.suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif path.suffix == ".jsonl":
            frame = pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
        else:
            raw = json.loads(path.read_text())
            frame = pd.DataFrame(raw if isinstance(raw, list) else raw.get("images", raw.get("results", [])))
    except (ValueError, OSError, AttributeError) as exc:
        raise ValueError(f"{path}: cannot read image results: {exc}") from exc
    for name in IMAGE_COLUMNS:
        if name not in frame.columns:
            frame[name] = "" if name != "score" else np.nan
    frame = frame[list(IMAGE_COLUMNS)].copy()
    frame["score"] = pd.to_numeric(frame["score"], errors="coerce")
    frame["time_ns"] = 0
    for name in ("path", "map_path", "mask_path"):
        frame[name] = [str((path.parent / p).resolve()) if p and not Path(p).is_absolute() else str(p or "")
                       for p in frame[name].fillna("").astype(str)]
    for name in ("category", "defect", "model_version"):
        frame[name] = frame[name].fillna("").astype(str)
    return frame.sort_values(["category", "defect", "path"], kind="stable").reset_index(drop=True)
