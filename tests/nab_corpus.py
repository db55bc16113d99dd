"""A two-file NAB corpus in NAB's layout (data/<category>/<file>.csv, labels/combined_windows.json) for tests
that run the NAB runner or rescore its output: one file with a level burst inside a label window, one without."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_tiny_nab_corpus(root: Path, short_file: bool = False) -> None:
    """``short_file`` adds ``catC/short.csv`` (500 rows, no window): a probationary part of 75 rows, too short for
    the longest NAB value discord, so one file of the corpus has fewer channels than the others."""
    rng = np.random.default_rng(0)
    windows = {}
    files = {"catA/one.csv": (700, 1000), "catB/two.csv": (None, 1000)}
    if short_file:
        files["catC/short.csv"] = (None, 500)
    for key, (start, n) in files.items():
        ts = np.datetime64("2021-03-01T00:00:00") + np.arange(n) * np.timedelta64(5, "m")
        x = np.sin(np.arange(n) * 2 * np.pi / 40) + 0.1 * rng.standard_normal(n)
        spans = []
        if start is not None:
            x[start : start + 20] += 4.0
            spans = [[f"{str(ts[start - 20]).replace('T', ' ')}.000000", f"{str(ts[start + 40]).replace('T', ' ')}.000000"]]
        path = root / "data" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(["timestamp,value"] + [f"{str(t).replace('T', ' ')},{float(v)!r}" for t, v in zip(ts, x)]) + "\n")
        windows[key] = spans
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))
