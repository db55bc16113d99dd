"""Scorers selectable by name. Importing this package registers all of them."""
from __future__ import annotations

from pathlib import Path

from models.scorers.base import (Scorer, available_scorers, create_scorer, reads_input_with_cnn, register,
                                 scorer_params, validate_batch)

# Registration happens on import; the order here is the order of ``available_scorers`` only by name.
from models.scorers import recon as _recon  # noqa: E402,F401  (registers "recon")
from models.scorers import adversarial as _adversarial  # noqa: E402,F401  (registers "adversarial")
from models.scorers import trend as _trend  # noqa: E402,F401  (registers "trend")
from models.scorers import kl as _kl  # noqa: E402,F401  (registers "kl")
from models.scorers import dynamic as _dynamic  # noqa: E402,F401  (registers "dynamic")
from models.scorers.base import _REGISTRY  # noqa: E402
from models.scorers.diffusion import DiffusionScorer, ScorerParams, read_scorer_name  # noqa: E402


def load_scorer(directory: str | Path, device: str = "auto") -> Scorer:
    """Rebuild whatever scorer a checkpoint directory holds (its name is in ``config.json``)."""
    name = read_scorer_name(directory)
    if name not in _REGISTRY:
        raise ValueError(f"{directory} holds unknown scorer {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name].load(directory, device=device)  # type: ignore[attr-defined]


__all__ = [
    "DiffusionScorer",
    "Scorer",
    "ScorerParams",
    "available_scorers",
    "create_scorer",
    "load_scorer",
    "register",
    "reads_input_with_cnn",
    "scorer_params",
    "validate_batch",
]
