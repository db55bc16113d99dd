"""The store's data model: what the monitor writes and the dashboard reads (see docs/store-schema.md).

A :class:`Point` is one InfluxDB point (measurement, tags, fields, timestamp in ns). Idempotency comes
from the key (measurement, tags, time): writing the same point twice leaves one point, in InfluxDB and in the
embedded SQLite store alike, so a replay after a crash does not duplicate anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Measurement names — the contract between streamer/ (writer) and dashboards/ (reader).
WINDOW_SCORE = "window_score"
ALERT = "alert"
ALERT_FEEDBACK = "alert_feedback"
LABEL_WINDOW = "label_window"
WINDOW_SNAPSHOT = "window_snapshot"
IMAGE_RESULT = "image_result"

FieldValue = float | int | bool | str


@dataclass(frozen=True)
class Point:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ns: int

    def series_key(self) -> str:
        """measurement plus sorted tags: the identity InfluxDB uses for a series."""
        tags = ",".join(f"{k}={v}" for k, v in sorted(self.tags.items()))
        return f"{self.measurement},{tags}" if tags else self.measurement


@dataclass(frozen=True)
class LabelWindow:
    """A labelled anomaly window of a stream (NAB's windows, a UCR anomaly range): what replays write to the store
    and the dashboard shades."""

    stream: str
    start_ns: int
    end_ns: int
    source: str

    def to_point(self) -> Point:
        return Point(LABEL_WINDOW, {"stream": self.stream}, {"end_ns": self.end_ns, "source": self.source},
                     self.start_ns)


@dataclass
class PointBatch:
    points: list[Point] = field(default_factory=list)

    def add(self, point: Point) -> None:
        self.points.append(point)

    def __len__(self) -> int:
        return len(self.points)
