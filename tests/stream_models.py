"""A small real window model for streamer tests (no diffusion training: these tests are about the plumbing).

It scores a window by how far its simple statistics (mean, std, largest step) are from the warm-up windows',
so an injected spike or level shift really scores high. It follows the same protocol as
models.pipeline.ScalogramPipeline: fit_windows / score_windows -> ScoreBatch / save / load / version.
"""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np

from models.types import ScoreBatch


def _features(windows: np.ndarray) -> np.ndarray:
    w = np.asarray(windows, dtype=np.float64)
    step = np.abs(np.diff(w, axis=1)).max(axis=1)
    return np.stack([w.mean(axis=1), w.std(axis=1), step], axis=1)


class WindowStatsModel:
    scorer_name = "stats"

    def __init__(self, fit_gate: threading.Event | None = None):
        self.fit_gate = fit_gate
        self.mu: np.ndarray | None = None
        self.sd: np.ndarray | None = None
        self.fit_calls = 0

    @property
    def version(self) -> str:
        if self.mu is None:
            return "unfitted"
        return hashlib.sha1(np.concatenate([self.mu, self.sd]).tobytes()).hexdigest()[:8]

    def fit_windows(self, windows: np.ndarray) -> "WindowStatsModel":
        if self.fit_gate is not None:
            assert self.fit_gate.wait(30), "test never released training"
        f = _features(windows)
        self.mu, self.sd = f.mean(axis=0), f.std(axis=0) + 1e-3
        self.fit_calls += 1
        return self

    def score_windows(self, windows: np.ndarray) -> ScoreBatch:
        z = np.abs(_features(windows) - self.mu) / self.sd
        scores = z.max(axis=1).astype(np.float32)
        n = len(scores)
        maps = np.repeat(scores[:, None, None], 16, axis=1).reshape(n, 4, 4)
        return ScoreBatch(scores=scores, maps=maps, reconstructions=np.zeros((n, 1, 4, 4), np.float32),
                          extras={"scalogram": np.ones((n, 1, 4, 4), np.float32)})

    def save(self, directory) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps({"mu": self.mu.tolist(), "sd": self.sd.tolist()}))

    @classmethod
    def load(cls, directory) -> "WindowStatsModel":
        cfg = json.loads((Path(directory) / "config.json").read_text())
        m = cls()
        m.mu, m.sd = np.asarray(cfg["mu"]), np.asarray(cfg["sd"])
        return m
