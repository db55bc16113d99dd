"""Synthetic sensor windows for scorer tests: noisy sinusoids (normal) and three kinds of injected anomaly.

Normal: a sinusoid of period 14–18 samples with random phase plus 10 % noise. Anomalies (cycled): a 3-sample
spike of ±4, a 40-sample burst at period 4 (frequency change), a 40-sample dropout to noise (missing signal).
Each is a different pattern in the scalogram: a vertical stripe, energy in the wrong rows, a hole.
"""
from __future__ import annotations

import numpy as np


def sensor_windows(n: int, length: int = 128, seed: int = 0, anomalous: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    out = np.empty((n, length))
    for i in range(n):
        period, phase = rng.uniform(14, 18), rng.uniform(0, 2 * np.pi)
        x = np.sin(2 * np.pi * t / period + phase) + 0.1 * rng.standard_normal(length)
        if anomalous:
            kind = i % 3
            if kind == 0:
                c = rng.integers(20, length - 20)
                x[c : c + 3] += rng.choice([-1.0, 1.0]) * 4.0
            elif kind == 1:
                s = rng.integers(30, length - 40)
                x[s : s + 40] = np.sin(2 * np.pi * t[s : s + 40] / 4.0)
            else:
                s = rng.integers(30, length - 40)
                x[s : s + 40] = 0.1 * rng.standard_normal(40)
        out[i] = x
    return out
