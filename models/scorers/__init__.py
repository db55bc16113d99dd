"""Scorers selectable by name. Importing this package registers all of them."""
from models.scorers.base import Scorer, available_scorers, create_scorer, register, validate_batch

__all__ = ["Scorer", "available_scorers", "create_scorer", "register", "validate_batch"]
