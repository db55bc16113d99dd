"""UCR Time Series Anomaly Archive (2021) conventions: file names, the hit rule, accuracy.

Each series has exactly one labelled anomaly and a detector predicts exactly one location, so the
archive's metric is simply the fraction of series where the prediction lands on (or near) the anomaly.
All indices here are absolute 0-based positions in the full series; the anomaly is ``[begin, end)``
(end exclusive), which is how the shared copy's README documents the labels.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from models.errors import InputError

_NAME = re.compile(r"^(?P<num>\d+)_UCR_Anomaly_(?P<name>.+)_(?P<train>\d+)_(?P<begin>\d+)_(?P<end>\d+)$")
MIN_TOLERANCE = 100


@dataclass(frozen=True)
class UcrSpec:
    """What a UCR file name encodes."""

    stem: str  # file name without .txt / .txt.gz
    number: int
    name: str
    train_end: int  # rows [0, train_end) are the anomaly-free training prefix
    begin: int  # first anomalous row (0-based)
    end: int  # one past the last anomalous row

    @property
    def length(self) -> int:
        return self.end - self.begin


def ucr_stem(filename: str) -> str:
    base = filename.rsplit("/", 1)[-1]
    for suffix in (".txt.gz", ".txt"):  # any case: a copy from a case-insensitive file system may say .TXT
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def parse_ucr_name(filename: str) -> UcrSpec:
    """``NNN_UCR_Anomaly_<name>_<trainEnd>_<begin>_<end>.txt[.gz]`` -> UcrSpec."""
    stem = ucr_stem(filename)
    m = _NAME.match(stem)
    if not m:
        raise InputError(f"not a UCR anomaly file name: {filename!r} (expected NNN_UCR_Anomaly_<name>_<trainEnd>_<begin>_<end>.txt)")
    spec = UcrSpec(stem, int(m["num"]), m["name"], int(m["train"]), int(m["begin"]), int(m["end"]))
    if spec.end < spec.begin or spec.train_end <= 0:
        raise InputError(f"{filename}: inconsistent indices (trainEnd={spec.train_end}, begin={spec.begin}, end={spec.end})")
    return spec


def tolerance(spec: UcrSpec, min_tolerance: int = MIN_TOLERANCE) -> int:
    """UCR slack around the anomaly: max(anomaly length, 100)."""
    return max(spec.length, min_tolerance)


def is_hit(spec: UcrSpec, prediction: int, slack: int | None = None) -> bool:
    """``begin - slack <= prediction <= end + slack``; default slack is ``max(L, 100)``."""
    s = tolerance(spec) if slack is None else int(slack)
    return spec.begin - s <= int(prediction) <= spec.end + s


@dataclass(frozen=True)
class UcrAccuracy:
    n_series: int
    hits: int  # with slack max(L, 100)
    hits_100: int  # with slack 100 only

    @property
    def accuracy(self) -> float:
        return self.hits / self.n_series if self.n_series else float("nan")

    @property
    def accuracy_100(self) -> float:
        return self.hits_100 / self.n_series if self.n_series else float("nan")

    def to_dict(self) -> dict:
        return {
            "n_series": self.n_series,
            "hits": self.hits,
            "accuracy": self.accuracy,
            "hits_pm100": self.hits_100,
            "accuracy_pm100": self.accuracy_100,
        }


def ucr_accuracy(predictions: Iterable[tuple[UcrSpec, int]]) -> UcrAccuracy:
    """Accuracy over (spec, predicted absolute index) pairs."""
    n = hits = hits_100 = 0
    for spec, pred in predictions:
        n += 1
        hits += is_hit(spec, pred)
        hits_100 += is_hit(spec, pred, MIN_TOLERANCE)
    return UcrAccuracy(n, hits, hits_100)
