"""What every store writer promises the monitor: a synchronous ``write`` that is durable when it returns.

Why synchronous: the monitor commits Kafka offsets only after the sink has taken the points (at-least-once).
A buffering writer that reports failures later (influxdb-client's batching mode) would let offsets be committed
for data that never arrived. Retries are NOT done here: the monitor owns back-off and pausing partitions.

Two failure kinds, because the monitor must treat them differently:
- :class:`SinkUnavailable`: the store is down, unreachable, overloaded or misconfigured. Nothing is lost by
  retrying the same points later (writes are idempotent).
- :class:`SinkRejected`: the points themselves are invalid; retrying the same batch can never succeed.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from streamer.points import Point

MAX_TIME_NS = 2**63 - 1


class SinkError(RuntimeError):
    """Base class of sink failures."""


class SinkUnavailable(SinkError):
    """The store cannot take writes right now; retry the same points later."""


class SinkRejected(SinkError):
    """The store refused the points as invalid (``point`` is the offending one when known)."""

    def __init__(self, message: str, point: Point | None = None, status: int | None = None):
        super().__init__(message)
        self.point = point
        self.status = status


@runtime_checkable
class Sink(Protocol):
    def write(self, points: Sequence[Point]) -> None:
        """Store the points; returns only when they are durable. Raises SinkUnavailable or SinkRejected."""
        ...

    def close(self) -> None:
        ...


def field_value(value: object, point: Point | None = None, key: str = "") -> bool | int | float | str:
    """A field value as a plain Python scalar (numpy scalars from the scorers are converted), or SinkRejected.

    The plain types come first and the error text is built only on failure: every stored point passes here for
    each of its fields, thousands of times a second in the live monitor."""
    kind = type(value)
    if kind is float:
        if math.isfinite(value):  # type: ignore[arg-type]
            return value  # type: ignore[return-value]
        raise SinkRejected(f"{_where(point, key)} is {value} (not finite)", point)
    if kind is str or kind is bool:
        return value  # type: ignore[return-value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        number = int(value)
        if not -(2**63) <= number < 2**63:
            raise SinkRejected(f"{_where(point, key)} overflows int64", point)
        return number
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise SinkRejected(f"{_where(point, key)} is {number} (not finite)", point)
        return number
    if isinstance(value, str):  # a str subclass
        return str(value)
    raise SinkRejected(f"{_where(point, key)} has unsupported type {type(value).__name__}", point)


def _where(point: Point | None, key: str) -> str:
    return f"{point.measurement if point else '?'}: field {key}"


def _bad_name(name: object) -> bool:
    return not isinstance(name, str) or not name or "\n" in name or "\r" in name


def validate_point(point: Point) -> None:
    """Reject what InfluxDB would reject (or store ambiguously), identically for every sink.

    Names and tag values must be non-empty strings without line breaks (InfluxDB drops empty tags, which would
    change the point's identity); there must be at least one field; floats must be finite; time must fit int64 ns.
    """
    if _bad_name(point.measurement):
        raise SinkRejected(f"bad measurement name {point.measurement!r}", point)
    if (not isinstance(point.time_ns, numbers.Integral) or isinstance(point.time_ns, bool | np.bool_)
            or not 0 <= int(point.time_ns) <= MAX_TIME_NS):
        raise SinkRejected(f"{point.measurement}: time_ns {point.time_ns!r} is not an int64 ns timestamp", point)
    for key, value in point.tags.items():
        if _bad_name(key) or _bad_name(value):
            raise SinkRejected(f"{point.measurement}: bad tag {key!r}={value!r}", point)
        if key == "time" or key.startswith("_"):
            raise SinkRejected(f"{point.measurement}: reserved tag name {key!r}", point)
    if not point.fields:
        raise SinkRejected(f"{point.measurement}: a point needs at least one field", point)
    for key, value in point.fields.items():
        if _bad_name(key) or key == "time" or key.startswith("_") or key in point.tags:
            raise SinkRejected(f"{point.measurement}: bad or reserved field name {key!r}", point)
        field_value(value, point, key)


def validate_points(points: Sequence[Point]) -> None:
    for point in points:
        validate_point(point)
