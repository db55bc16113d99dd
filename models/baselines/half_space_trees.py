"""River's Half-Space Trees on a short shingle of recent values (a streaming isolation-style baseline).

HST needs feature ranges up front; they come from the training part (with a margin), so nothing after
training leaks in. ``adapt=True`` follows river's test-then-train contract (score a point, then learn
it); ``adapt=False`` learns the training part only and then just scores.
"""
from __future__ import annotations

import numpy as np

from models.baselines import as_series, register_series_detector
from models.errors import NotFittedError


class HalfSpaceTreesDetector:
    output_is_probability = False

    def __init__(self, shingle: int = 8, n_trees: int = 10, height: int = 8, window_size: int = 250,
                 adapt: bool = True, margin: float = 0.1, seed: int = 42) -> None:
        if shingle < 1:
            raise ValueError("shingle must be >= 1")
        self.shingle, self.n_trees, self.height, self.window_size = shingle, n_trees, height, window_size
        self.adapt, self.margin, self.seed = adapt, margin, seed
        self.name = "half_space_trees" if adapt else "half_space_trees_train"
        self._limits: tuple[float, float] | None = None
        self._train_len = 0

    @property
    def lag(self) -> int:
        return self.shingle // 2

    def fit(self, train: np.ndarray) -> "HalfSpaceTreesDetector":
        x = as_series(train, "training series", min_length=2)
        lo, hi = float(x.min()), float(x.max())
        span = hi - lo if hi > lo else max(abs(lo), 1.0)
        self._limits = (lo - self.margin * span, hi + self.margin * span)
        self._train_len = x.size
        return self

    def score(self, values: np.ndarray) -> np.ndarray:
        from river import anomaly

        if self._limits is None:
            raise NotFittedError(f"{self.name}: call fit(train) before score()")
        x = as_series(values)
        k = self.shingle
        # HST scores against the mass profile of the last *completed* window; with a short training
        # part a frozen model would never complete one, so the window is capped at half of it.
        window = max(2, min(self.window_size, self._train_len // 2))
        model = anomaly.HalfSpaceTrees(
            n_trees=self.n_trees, height=self.height, window_size=window,
            limits={j: self._limits for j in range(k)}, seed=self.seed,
        )
        padded = np.r_[np.full(k - 1, x[0]), x]
        out = np.empty(x.size)
        # The training prefix is replayed here (not in fit) so every point is seen exactly once.
        learn_until = x.size if self.adapt else min(self._train_len, x.size)
        for t in range(x.size):
            feats = dict(enumerate(padded[t : t + k].tolist()))
            out[t] = model.score_one(feats)
            if t < learn_until:
                model.learn_one(feats)
        return out


register_series_detector("half_space_trees", lambda **kw: HalfSpaceTreesDetector(**kw))
register_series_detector("half_space_trees_train", lambda **kw: HalfSpaceTreesDetector(**{"adapt": False, **kw}))
