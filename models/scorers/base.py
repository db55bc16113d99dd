"""One protocol for every anomaly scorer (the five paper methods and the simple baselines).

``fit`` sees normal data only; ``score`` returns a :class:`~models.types.ScoreBatch` (one score per sample,
higher = more anomalous, plus an anomaly map at input resolution). Thresholds and alerting live elsewhere
(river's split between scoring and deciding), so a scorer never says "anomaly", only "how much".

Inputs are float tensors or arrays shaped (N, C, H, W): scalograms (C=1), RGB images (C=3) or feature maps.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np
import torch

from models.errors import InputError
from models.types import ScoreBatch


@runtime_checkable
class Scorer(Protocol):
    name: str

    def fit(self, normal: torch.Tensor | np.ndarray) -> "Scorer": ...

    def score(self, batch: torch.Tensor | np.ndarray) -> ScoreBatch: ...

    def save(self, directory: str | Path) -> None: ...


def validate_batch(
    batch: torch.Tensor | np.ndarray,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Turn a batch into a float32 tensor, or raise :class:`InputError` saying exactly what is wrong."""
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(np.ascontiguousarray(batch))
    if not torch.is_tensor(batch):
        raise InputError(f"expected a tensor or ndarray of shape (N, C, H, W), got {type(batch).__name__}")
    if batch.ndim != 4:
        raise InputError(f"expected shape (N, C, H, W), got {tuple(batch.shape)}")
    if batch.shape[0] == 0:
        raise InputError("empty batch: nothing to score")
    if 0 in batch.shape[1:]:
        raise InputError(f"empty window/image: shape {tuple(batch.shape)}")
    if channels is not None and batch.shape[1] != channels:
        raise InputError(f"expected {channels} channel(s), got {batch.shape[1]} (shape {tuple(batch.shape)})")
    if size is not None and tuple(batch.shape[-2:]) != tuple(size):
        raise InputError(f"expected spatial size {tuple(size)}, got {tuple(batch.shape[-2:])}")
    batch = batch.float()
    if not torch.isfinite(batch).all():
        bad = int((~torch.isfinite(batch)).sum())
        raise InputError(f"input contains {bad} NaN/inf value(s); clean or drop them before scoring")
    return batch


_REGISTRY: dict[str, Callable[..., Scorer]] = {}


def register(name: str):
    """Class decorator: make a scorer selectable by name (``--scorer NAME``)."""

    def deco(cls):
        if name in _REGISTRY:
            raise ValueError(f"scorer {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_scorers() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def _factory(name: str) -> Callable[..., Scorer]:
    _import_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None


def create_scorer(name: str, **kwargs) -> Scorer:
    return _factory(name)(**kwargs)


def scorer_params(name: str, **options: Any) -> Any:
    """The scoring parameters ``create_scorer(name, **options)`` would use, checked the same way (unknown keys,
    bad values: ``ValueError``) without building the scorer — for configurations that name a scorer's options
    long before anything is fitted."""
    return _factory(name).Params.from_dict(options)  # type: ignore[attr-defined]


def reads_input_with_cnn(name: str, **options: Any) -> bool:
    """Whether scorer ``name`` with ``options`` runs the ImageNet CNN on its input image (see
    :meth:`models.scorers.diffusion.DiffusionScorer.reads_input_with_cnn`)."""
    cls = _factory(name)
    return bool(cls.reads_input_with_cnn(cls.Params.from_dict(options)))  # type: ignore[attr-defined]


def _import_all() -> None:
    # Importing the package registers every scorer module it lists.
    import models.scorers  # noqa: F401
