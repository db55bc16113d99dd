"""A folder of short UCR-layout series (``NNN_UCR_Anomaly_<name>_<trainEnd>_<begin>_<end>.txt``) for tests that run
the UCR runner: a noisy sine with a level burst after its training part."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_ucr_folder(root: Path, begins: tuple[int, ...] = (1500, 1700), seed: int = 0) -> Path:
    """One series of 2,400 points per anomaly start in ``begins`` (training part 800 points, anomaly 30 points)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for number, begin in enumerate(begins, start=1):
        x = np.sin(np.arange(2400) * 2 * np.pi / 40) + 0.05 * rng.standard_normal(2400)
        x[begin:begin + 30] += 1.5
        np.savetxt(root / f"{number:03d}_UCR_Anomaly_test{number}_800_{begin}_{begin + 30}.txt", x)
    return root
