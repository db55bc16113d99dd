"""A two-file NAB corpus in NAB's layout (data/<category>/<file>.csv, labels/combined_windows.json) for tests
that run the NAB runner or rescore its output: one file with a level burst inside a label window, one without."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_tiny_nab_corpus(root: Path) -> None:
    rng = np.random.default_rng(0)
    windows = {}
    for key, start in {"catA/one.csv": 700, "catB/two.csv": None}.items():
        n = 1000
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
