"""A small synthetic test bed in SKAB's layout, for the ``bench testbed`` tests: ``<rig>/<run>.csv`` with a
``datetime`` column, four sensors, ``anomaly`` / ``changepoint`` label columns, ``;``-delimited."""
from __future__ import annotations

from pathlib import Path

import numpy as np

SENSORS = ("Accelerometer1RMS", "Current", "Pressure", "Temperature")


def make_testbed(root: Path, runs: int = 2, rows: int = 900, fault: tuple[int, int] = (600, 680),
                 seed: int = 0) -> Path:
    """``runs`` logs, each with one fault (rows ``fault``): vibration and current jump, the others stay normal."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2020-03-09T10:00:00")
    for run in range(runs):
        t = np.arange(rows)
        base = {
            "Accelerometer1RMS": 0.2 + 0.02 * np.sin(2 * np.pi * t / 40),
            "Current": 1.5 + 0.1 * np.sin(2 * np.pi * t / 40 + 1.0),
            "Pressure": 0.8 + 0.05 * np.sin(2 * np.pi * t / 90),
            "Temperature": 70 + 0.002 * t,
        }
        data = {k: v + 0.01 * rng.standard_normal(rows) for k, v in base.items()}
        a, b = fault
        data["Accelerometer1RMS"][a:b] += 0.3
        data["Current"][a:b] *= 1.4
        anomaly = np.zeros(rows, dtype=int)
        anomaly[a:b] = 1
        lines = [";".join(["datetime", *SENSORS, "anomaly", "changepoint"])]
        for i in range(rows):
            stamp = str(start + np.timedelta64(run * rows + i, "s")).replace("T", " ")
            lines.append(";".join([stamp, *(f"{data[k][i]:.6f}" for k in SENSORS), f"{anomaly[i]}.0",
                                   "1.0" if i == a else "0.0"]))
        path = root / "valve1" / f"{run}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    return root
