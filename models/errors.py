"""Exceptions raised by the model core, so callers can tell bad input from bugs."""


class InputError(ValueError):
    """The input batch cannot be scored (wrong shape, NaN/inf, empty, wrong channel count)."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint was written for a different model or scorer configuration."""


class NotFittedError(RuntimeError):
    """A scorer was asked to score before ``fit`` (or ``load``) gave it a model."""
