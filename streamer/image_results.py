"""The file of scored images that the dashboard's Images page opens: ``image_results.csv``, one row per image with
the ``image_result`` columns of docs/store-schema.md (category, defect, path, score, map_path, mask_path,
model_version).

Why a file and one writer: ``bench mvtec`` and ``scalowatch score`` on an image folder both produce it, and the
page (``dashboards/imaging.py``) reads it from any folder it is pointed at. ``scalowatch score --store`` also
writes the same results as ``image_result`` points (:func:`image_result_points`), which the page reads from the
store. Paths below the file's folder are
written relative to it (the folder can move), others absolute; the csv module quotes what needs quoting (a comma
in a file name).
"""
from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from streamer.points import IMAGE_RESULT, Point

IMAGE_RESULTS_FILE = "image_results.csv"
IMAGE_RESULT_COLUMNS = ("category", "defect", "path", "score", "map_path", "mask_path", "model_version")


@dataclass(frozen=True)
class ImageResult:
    category: str
    defect: str
    path: Path
    score: float
    map_path: Path | None = None
    mask_path: Path | None = None
    model_version: str = ""
    """The saved detector's version (a hash of its files; empty if unknown): which model gave the score."""


def write_image_results(folder: Path, results: Sequence[ImageResult]) -> Path:
    """``folder/image_results.csv`` with one row per result; returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = Path(os.path.abspath(folder))

    def where(p: Path | None) -> str:  # abspath, not resolve: a linked image keeps its own name
        if p is None:
            return ""
        full = Path(os.path.abspath(p))
        return full.relative_to(base).as_posix() if full.is_relative_to(base) else os.fspath(full)

    target = folder / IMAGE_RESULTS_FILE
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(IMAGE_RESULT_COLUMNS)
        for r in results:
            writer.writerow([r.category, r.defect, where(r.path), f"{r.score:.6g}", where(r.map_path),
                             where(r.mask_path), r.model_version])
    return target


def image_result_points(results: Sequence[ImageResult], time_ns: int) -> list[Point]:
    """One ``image_result`` point per result (docs/store-schema.md), at ``time_ns + i``.

    Why consecutive times: a point's identity is (measurement, tags, time) and the tags are the category and the
    defect, so a run's images of one defect written at one instant would overwrite each other. An empty category or
    defect (a plain folder of images) is left out: InfluxDB drops empty tags. Paths are absolute: the dashboard that
    reads the store opens them from wherever it runs."""
    def where(p: Path | None) -> str:
        return "" if p is None else os.path.abspath(p)

    return [Point(IMAGE_RESULT, {k: v for k, v in (("category", r.category), ("defect", r.defect)) if v},
                  {"path": where(r.path), "score": float(r.score), "map_path": where(r.map_path),
                   "mask_path": where(r.mask_path), "model_version": r.model_version}, int(time_ns) + i)
            for i, r in enumerate(results)]
