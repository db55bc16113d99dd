"""The embedded store: one SQLite file, table ``points`` (docs/store-schema.md), for running without InfluxDB.

Upserts follow InfluxDB's semantics so both stores agree: a point's identity is (measurement, series key, time);
rewriting it merges the new fields over the old ones (``json_patch``) and never adds a row. WAL mode lets the
dashboard read while the monitor writes. Each thread gets its own connection (sqlite3 connections must not be
shared across threads); a transaction per ``write`` makes a batch all-or-nothing and durable on return.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from streamer.points import Point
from streamer.sinks.base import SinkRejected, SinkUnavailable, field_value, validate_point

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    measurement TEXT NOT NULL,
    series_key TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    tags TEXT NOT NULL,
    fields TEXT NOT NULL,
    PRIMARY KEY (measurement, series_key, time_ns)
);
CREATE INDEX IF NOT EXISTS points_by_time ON points (measurement, time_ns);
"""

UPSERT = (
    "INSERT INTO points (measurement, series_key, time_ns, tags, fields) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (measurement, series_key, time_ns) DO UPDATE SET "
    "tags = excluded.tags, fields = json_patch(points.fields, excluded.fields)"
)
READ_BATCH = 10_000
"""Rows fetched from SQLite at a time by :meth:`SQLiteSink.iter_points`."""


def _row(point: Point) -> tuple[str, str, int, str, str]:
    validate_point(point)
    fields = {key: field_value(value, point, key) for key, value in point.fields.items()}
    tags = dict(sorted(point.tags.items()))
    return (point.measurement, point.series_key(), int(point.time_ns), json.dumps(tags),
            json.dumps(fields, allow_nan=False))


class SQLiteSink:
    """Writes points into ``path`` (created with its parent directory if missing)."""

    def __init__(self, path: str | Path, timeout_s: float = 30.0):
        self.path = Path(path).expanduser()
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connection()
            conn.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise SinkUnavailable(f"cannot open SQLite store {self.path}: {exc}") from exc

    @classmethod
    def from_settings(cls, store) -> "SQLiteSink":
        """From ``Settings().store``."""
        return cls(store.sqlite_path)

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise SinkUnavailable(f"SQLite store {self.path} is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a write that returned is on disk even after a power loss, so offsets committed after it are safe
            # (WAL + NORMAL survives a process crash but may lose the last commits to a power cut).
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def write(self, points: Sequence[Point]) -> None:
        if not points:
            return
        rows = [_row(p) for p in points]  # SinkRejected before anything is written
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(UPSERT, rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            raise SinkRejected(f"SQLite refused the batch: {exc}") from exc
        except sqlite3.Error as exc:  # locked for longer than the timeout, disk full, I/O error, ...
            raise SinkUnavailable(f"SQLite store {self.path}: {exc}") from exc

    def read(self, measurement: str, *, start_ns: int | None = None, end_ns: int | None = None,
             tags: dict[str, str] | None = None) -> list[Point]:
        """Points of one measurement in time order, optionally in [start_ns, end_ns) and matching ``tags``."""
        return list(self.iter_points(measurement, start_ns=start_ns, end_ns=end_ns, tags=tags))

    def iter_points(self, measurement: str, *, start_ns: int | None = None, end_ns: int | None = None,
                    tags: dict[str, str] | None = None) -> Iterator[Point]:
        """:meth:`read`, one point at a time: a store of millions of points (a replayed benchmark) is walked
        without holding them all as Python objects at once (about 2 KB a point: 7 GB for UCR's 3.5 M)."""
        query = "SELECT tags, fields, time_ns FROM points WHERE measurement = ?"
        params: list[object] = [measurement]
        if start_ns is not None:
            query += " AND time_ns >= ?"
            params.append(int(start_ns))
        if end_ns is not None:
            query += " AND time_ns < ?"
            params.append(int(end_ns))
        try:
            cursor = self._connection().execute(query + " ORDER BY time_ns", params)
            while batch := cursor.fetchmany(READ_BATCH):
                for tags_json, fields_json, time_ns in batch:
                    point_tags = json.loads(tags_json)
                    if tags and any(point_tags.get(k) != v for k, v in tags.items()):
                        continue
                    yield Point(measurement, point_tags, json.loads(fields_json), time_ns)
        except sqlite3.Error as exc:
            raise SinkUnavailable(f"SQLite store {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except sqlite3.Error:
                log.debug("closing a SQLite connection failed", exc_info=True)

    def __enter__(self) -> "SQLiteSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteSink({str(self.path)!r})"
