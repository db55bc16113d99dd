"""One read interface over the two stores the monitor can write: InfluxDB (read with InfluxQL) and SQLite.

Why one interface: every dashboard page is written once against :class:`Store`; which backend sits behind it
is a deployment choice (`--store influx|sqlite`). Why InfluxQL over ``GET /query``: it is the one read API that
InfluxDB 1.x, 2.x (through a DBRP mapping) and 3.x Core all serve. Why downsampling happens here and not in the
browser: a page must stay responsive with 100 streams and 100,000 points in range, so the database reduces the
series to at most ``max_points`` buckets (InfluxQL ``GROUP BY time()``, SQL integer bucketing) before anything
crosses the wire.

The layout of what is read is docs/store-schema.md; measurement names come from :mod:`streamer.points`.
Tabular results are pandas DataFrames with the columns listed in the ``*_COLUMNS`` constants (times are int
nanoseconds since the epoch, UTC); single objects are dataclasses.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from streamer.point_builders import decode_snapshot as decode_payload
from streamer.points import (
    ALERT,
    ALERT_FEEDBACK,
    IMAGE_RESULT,
    LABEL_WINDOW,
    WINDOW_SCORE,
    WINDOW_SNAPSHOT,
    LabelWindow,
    Point,
)
from streamer.sinks.influx import to_line_protocol

log = logging.getLogger(__name__)

SCORE_COLUMNS = ("time_ns", "value", "raw_score", "score", "score_max", "threshold", "alert", "decided_by")
OVERVIEW_COLUMNS = ("stream", "time_ns", "score_max")
ALERT_COLUMNS = (
    "time_ns", "stream", "stream_class", "severity", "peak_raw_score", "end_ns", "duration_s", "state",
    "model_version", "decided_by",
)
FEEDBACK_COLUMNS = ("time_ns", "stream", "verdict", "note", "at_ns")
IMAGE_COLUMNS = ("time_ns", "category", "defect", "path", "score", "map_path", "mask_path", "model_version")

VERDICTS = ("ack", "false_positive")
SNAPSHOT_DIRECT_READ = 20  # InfluxDB: list up to this many snapshots by reading them (payloads included)
DEFAULT_MAX_POINTS = 1500


class StoreError(RuntimeError):
    """The store answered, but not with data: unknown database, refused credentials, malformed reply."""


class StoreUnavailable(StoreError):
    """The store cannot be reached at all (server down, SQLite file missing or locked)."""


@dataclass(frozen=True)
class StreamSummary:
    """A stream as the overview shows it: its extent and its latest state."""

    stream: str
    stream_class: str
    first_ns: int
    last_ns: int
    last_value: float
    last_score: float
    last_threshold: float
    in_alert: bool


@dataclass(frozen=True)
class AlertFeedback:
    """A person's verdict on one alert; keyed by (stream, alert start) so a new verdict replaces the old one."""

    stream: str
    alert_ns: int
    verdict: str
    note: str
    at_ns: int

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def to_point(self) -> Point:
        return Point(
            measurement=ALERT_FEEDBACK,
            tags={"stream": self.stream},
            fields={"verdict": self.verdict, "note": self.note, "at_ns": int(self.at_ns)},
            time_ns=int(self.alert_ns),
        )


@dataclass(frozen=True)
class WindowSnapshot:
    """The arrays the monitor kept for one alerting window (see `window_snapshot` in the schema)."""

    stream: str
    time_ns: int
    scalogram: np.ndarray
    reconstruction: np.ndarray
    anomaly_map: np.ndarray
    samples: np.ndarray
    sample_rate: float


def decode_snapshot(stream: str, time_ns: int, payload: str) -> WindowSnapshot:
    """Decode the payload with the monitor's own codec (streamer.point_builders); a damaged payload is a
    StoreError, not a crash."""
    try:
        arrays = decode_payload(payload)
    except Exception as exc:  # noqa: BLE001 - any decoding failure means the same thing to the reader
        raise StoreError(f"window snapshot of {stream} at {time_ns} cannot be decoded: {exc}") from exc
    empty = np.zeros((0, 0), dtype=np.float32)
    rate = arrays.get("sample_rate")
    return WindowSnapshot(
        stream=stream,
        time_ns=int(time_ns),
        scalogram=arrays.get("scalogram", empty),
        reconstruction=arrays.get("reconstruction", empty),
        anomaly_map=arrays.get("anomaly_map", empty),
        samples=np.ravel(arrays.get("samples", np.zeros(0, dtype=np.float32))),
        sample_rate=float(rate) if rate is not None and np.size(rate) == 1 else 0.0,
    )


@runtime_checkable
class Store(Protocol):
    """What every dashboard page reads through. ``key`` identifies the store for caching; ``description`` is
    safe to show (never contains a token)."""

    key: str
    description: str

    def streams(self) -> list[StreamSummary]: ...

    def window_scores(
        self, stream: str, start_ns: int, end_ns: int, max_points: int | None = DEFAULT_MAX_POINTS
    ) -> pd.DataFrame: ...

    def score_overview(
        self, start_ns: int, end_ns: int, buckets: int = 40, streams: Iterable[str] | None = None
    ) -> pd.DataFrame: ...

    def alerts(
        self, streams: Iterable[str] | None = None, classes: Iterable[str] | None = None,
        start_ns: int | None = None, end_ns: int | None = None, limit: int = 1000,
    ) -> pd.DataFrame: ...

    def labels(self, stream: str | None = None) -> list[LabelWindow]: ...

    def snapshot_times(self, stream: str, start_ns: int, end_ns: int, limit: int = 200) -> list[int]: ...

    def snapshot(self, stream: str, time_ns: int) -> WindowSnapshot | None: ...

    def feedback(self) -> pd.DataFrame: ...

    def write_feedback(self, feedback: AlertFeedback) -> None: ...

    def image_results(self) -> pd.DataFrame: ...


def bucket_ns(start_ns: int, end_ns: int, max_points: int) -> int:
    """Bucket width that cuts [start, end) into at most ``max_points`` buckets (epoch-aligned, like InfluxQL)."""
    span = max(int(end_ns) - int(start_ns), 1)
    # +1: epoch alignment can split the range into one more bucket than span / width.
    return max(1, math.ceil(span / max(int(max_points) - 1, 1)))


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    """Rows as a frame with exactly the documented columns (present even when there are no rows)."""
    return pd.DataFrame(rows, columns=list(columns))


def _finish_scores(frame: pd.DataFrame, bucket: int) -> pd.DataFrame:
    for name in ("value", "raw_score", "score", "score_max", "threshold", "alert"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    frame["time_ns"] = frame["time_ns"].astype("int64")
    frame["decided_by"] = frame["decided_by"].fillna("").astype(str)
    frame = frame.sort_values("time_ns", kind="stable").reset_index(drop=True)
    frame.attrs["bucket_ns"] = bucket
    return frame


def _finish_alerts(frame: pd.DataFrame) -> pd.DataFrame:
    for name in ("severity", "peak_raw_score", "duration_s"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    for name in ("time_ns", "end_ns"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").fillna(0).astype("int64")
    for name in ("stream", "stream_class", "state", "model_version", "decided_by"):
        frame[name] = frame[name].fillna("").astype(str)
    return frame.sort_values("time_ns", ascending=False, kind="stable").reset_index(drop=True)


def _finish_feedback(frame: pd.DataFrame) -> pd.DataFrame:
    for name in ("time_ns", "at_ns"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").fillna(0).astype("int64")
    for name in ("stream", "verdict", "note"):
        frame[name] = frame[name].fillna("").astype(str)
    return frame.sort_values("time_ns", ascending=False, kind="stable").reset_index(drop=True)


def _finish_images(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per image, its newest result: each ``scalowatch score --store`` run writes a full set (a point's
    time is its run's), and the page shows what the folder scores now, not every run mixed."""
    frame["score"] = pd.to_numeric(frame["score"], errors="coerce").astype(float)
    frame["time_ns"] = pd.to_numeric(frame["time_ns"], errors="coerce").fillna(0).astype("int64")
    for name in ("category", "defect", "path", "map_path", "mask_path", "model_version"):
        frame[name] = frame[name].fillna("").astype(str)
    frame = frame.sort_values("time_ns", kind="stable").drop_duplicates("path", keep="last")
    return frame.sort_values(["category", "defect", "path"], kind="stable").reset_index(drop=True)


def _summaries(rows: Iterable[dict[str, Any]]) -> list[StreamSummary]:
    """One summary per stream; if a stream appears under several tag sets, its newest one wins."""
    best: dict[str, StreamSummary] = {}
    firsts: dict[str, int] = {}
    for row in rows:
        stream = str(row.get("stream") or "")
        if not stream:
            continue
        summary = StreamSummary(
            stream=stream,
            stream_class=str(row.get("stream_class") or ""),
            first_ns=int(row["first_ns"]),
            last_ns=int(row["last_ns"]),
            last_value=_float(row.get("value")),
            last_score=_float(row.get("score")),
            last_threshold=_float(row.get("threshold")),
            in_alert=bool(_float(row.get("alert"), 0.0) >= 0.5),
        )
        firsts[stream] = min(firsts.get(stream, summary.first_ns), summary.first_ns)
        if stream not in best or summary.last_ns > best[stream].last_ns:
            best[stream] = summary
    out = []
    for stream in sorted(best):
        s = best[stream]
        out.append(StreamSummary(**{**s.__dict__, "first_ns": firsts[stream]}))
    return out


def _float(value: Any, default: float = float("nan")) -> float:
    try:
        return float(value) if value is not None else default
    except (TypeError, ValueError):
        return default


# --------------------------------------------------------------------------------------------- SQLite


class SQLiteStore:
    """Reads the embedded store (one table ``points``, see the schema). Reads open the file read-only so a
    dashboard pointed at a wrong path never creates an empty database there."""

    def __init__(self, path: str | os.PathLike[str], timeout_s: float = 5.0):
        self.path = Path(path).expanduser()
        self.timeout_s = timeout_s
        self.key = f"sqlite:{self.path.resolve()}"
        self.description = f"SQLite store {self.path.name}"

    # -- plumbing
    def _connect(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise StoreUnavailable(
                f"the SQLite store {self.path} does not exist yet: start the monitor or check --sqlite-path"
            )
        try:  # read-only: a wrong --sqlite-path must never create an empty store
            uri = f"file:{urllib.request.pathname2url(str(self.path.resolve()))}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=self.timeout_s)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open the SQLite store {self.path}: {exc}") from exc
        return conn

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        conn = self._connect()
        try:
            return conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []  # a fresh file the monitor has not written to yet: an empty store
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"SQLite store {self.path} is not a readable database: {exc}") from exc
        finally:
            conn.close()

    def _series(self, measurement: str, **tag_filter: Iterable[str] | None) -> list[tuple[str, dict[str, str]]]:
        """(series_key, tags) of a measurement, filtered on tag values. The series key is treated as opaque;
        meaning is read from the tags JSON."""
        rows = self._query(
            "SELECT k.series_key, (SELECT p.tags FROM points p WHERE p.measurement = ? "
            "AND p.series_key = k.series_key LIMIT 1) "
            "FROM (SELECT DISTINCT series_key FROM points WHERE measurement = ?) k",
            (measurement, measurement),
        )
        wanted = {name: set(values) for name, values in tag_filter.items() if values is not None}
        out = []
        for series_key, tags_json in rows:
            tags = _json_object(tags_json)
            if all(tags.get(name) in values for name, values in wanted.items()):
                out.append((series_key, tags))
        return out

    # -- reads
    def streams(self) -> list[StreamSummary]:
        rows = self._query(
            "WITH ext AS (SELECT series_key, MIN(time_ns) AS first_ns, MAX(time_ns) AS last_ns FROM points "
            "WHERE measurement = ? GROUP BY series_key) "
            "SELECT ext.first_ns, ext.last_ns, p.tags, p.fields FROM ext JOIN points p "
            "ON p.measurement = ? AND p.series_key = ext.series_key AND p.time_ns = ext.last_ns",
            (WINDOW_SCORE, WINDOW_SCORE),
        )
        return _summaries(
            {**_json_object(fields), **_json_object(tags), "first_ns": first, "last_ns": last}
            for first, last, tags, fields in rows
        )

    def window_scores(
        self, stream: str, start_ns: int, end_ns: int, max_points: int | None = DEFAULT_MAX_POINTS
    ) -> pd.DataFrame:
        keys = [key for key, _ in self._series(WINDOW_SCORE, stream=[stream])]
        if not keys:
            return _finish_scores(_frame([], SCORE_COLUMNS), 0)
        marks = ",".join("?" * len(keys))
        where = f"measurement = ? AND series_key IN ({marks}) AND time_ns >= ? AND time_ns < ?"
        params = [WINDOW_SCORE, *keys, int(start_ns), int(end_ns)]
        inner = (
            "SELECT time_ns, json_extract(fields, '$.value') AS v, json_extract(fields, '$.raw_score') AS r, "
            "json_extract(fields, '$.score') AS s, json_extract(fields, '$.threshold') AS th, "
            f"json_extract(fields, '$.alert') AS a, json_extract(fields, '$.decided_by') AS d FROM points WHERE {where}"
        )
        count = self._query(f"SELECT COUNT(*) FROM points WHERE {where}", params)[0][0]
        if max_points is None or count <= max_points:
            rows = self._query(f"SELECT time_ns, v, r, s, s, th, a, d FROM ({inner})", params)
            bucket = 0
        else:
            bucket = bucket_ns(start_ns, end_ns, max_points)
            rows = self._query(
                f"SELECT (time_ns / {bucket}) * {bucket} AS b, AVG(v), AVG(r), AVG(s), MAX(s), AVG(th), MAX(a) "
                f"FROM ({inner}) GROUP BY b",
                params,
            )
        return _finish_scores(_frame([dict(zip(SCORE_COLUMNS, row)) for row in rows], SCORE_COLUMNS), bucket)

    def score_overview(
        self, start_ns: int, end_ns: int, buckets: int = 40, streams: Iterable[str] | None = None
    ) -> pd.DataFrame:
        series = self._series(WINDOW_SCORE, stream=list(streams) if streams is not None else None)
        if not series:
            return _frame([], OVERVIEW_COLUMNS)
        stream_of = {key: tags.get("stream", "") for key, tags in series}
        bucket = bucket_ns(start_ns, end_ns, buckets)
        key_filter = ""
        params: list[Any] = [WINDOW_SCORE, int(start_ns), int(end_ns)]
        if streams is not None:
            key_filter = f" AND series_key IN ({','.join('?' * len(stream_of))})"
            params += list(stream_of)
        rows = self._query(
            f"SELECT series_key, (time_ns / {bucket}) * {bucket} AS b, MAX(json_extract(fields, '$.score')) "
            f"FROM points WHERE measurement = ? AND time_ns >= ? AND time_ns < ?{key_filter} "
            "GROUP BY series_key, b",
            params,
        )
        frame = _frame(
            [{"stream": stream_of.get(key, ""), "time_ns": b, "score_max": s} for key, b, s in rows],
            OVERVIEW_COLUMNS,
        )
        frame["score_max"] = pd.to_numeric(frame["score_max"], errors="coerce").astype(float)
        return frame.sort_values(["stream", "time_ns"]).reset_index(drop=True)

    def _tagged_rows(
        self, measurement: str, where: str = "", params: Iterable[Any] = (), order: str = "time_ns DESC",
        limit: int | None = None, **tag_filter: Iterable[str] | None,
    ) -> list[dict[str, Any]]:
        series = self._series(measurement, **tag_filter)
        if not series:
            return []
        keys = [key for key, _ in series]
        tags_of = dict(series)
        marks = ",".join("?" * len(keys))
        sql = (
            f"SELECT series_key, time_ns, fields FROM points WHERE measurement = ? AND series_key IN ({marks})"
            f"{' AND ' + where if where else ''} ORDER BY {order}{f' LIMIT {int(limit)}' if limit else ''}"
        )
        rows = self._query(sql, (measurement, *keys, *params))
        return [{**_json_object(fields), **tags_of[key], "time_ns": t} for key, t, fields in rows]

    def alerts(
        self, streams: Iterable[str] | None = None, classes: Iterable[str] | None = None,
        start_ns: int | None = None, end_ns: int | None = None, limit: int = 1000,
    ) -> pd.DataFrame:
        where, params = _time_where("time_ns", start_ns, end_ns)
        rows = self._tagged_rows(
            ALERT, where, params, limit=limit,
            stream=list(streams) if streams is not None else None,
            stream_class=list(classes) if classes is not None else None,
        )
        return _finish_alerts(_frame(rows, ALERT_COLUMNS))

    def labels(self, stream: str | None = None) -> list[LabelWindow]:
        rows = self._tagged_rows(LABEL_WINDOW, order="time_ns ASC", stream=[stream] if stream else None)
        return [_label(row) for row in rows]

    def snapshot_times(self, stream: str, start_ns: int, end_ns: int, limit: int = 200) -> list[int]:
        keys = [key for key, _ in self._series(WINDOW_SNAPSHOT, stream=[stream])]
        if not keys:
            return []
        marks = ",".join("?" * len(keys))
        rows = self._query(
            f"SELECT time_ns FROM points WHERE measurement = ? AND series_key IN ({marks}) "
            f"AND time_ns >= ? AND time_ns <= ? ORDER BY time_ns LIMIT {int(limit)}",
            (WINDOW_SNAPSHOT, *keys, int(start_ns), int(end_ns)),
        )
        return [int(t) for (t,) in rows]

    def snapshot(self, stream: str, time_ns: int) -> WindowSnapshot | None:
        rows = self._tagged_rows(
            WINDOW_SNAPSHOT, "time_ns >= ?", (int(time_ns),), order="time_ns ASC", limit=1, stream=[stream]
        )
        if not rows:
            return None
        return decode_snapshot(stream, rows[0]["time_ns"], str(rows[0].get("payload", "")))

    def feedback(self) -> pd.DataFrame:
        return _finish_feedback(_frame(self._tagged_rows(ALERT_FEEDBACK), FEEDBACK_COLUMNS))

    def image_results(self) -> pd.DataFrame:
        return _finish_images(_frame(self._tagged_rows(IMAGE_RESULT, order="time_ns ASC"), IMAGE_COLUMNS))

    # -- the one write
    def write_feedback(self, feedback: AlertFeedback) -> None:
        """Written with the monitor's own sink, so the table has one writer (and one upsert rule: fields merge)."""
        from streamer.sinks.sqlite import SQLiteSink  # noqa: PLC0415 - the dashboard imports the writer lazily

        if not self.path.is_file():
            raise StoreUnavailable(f"the SQLite store {self.path} does not exist: nothing to give feedback on")
        try:
            sink = SQLiteSink(self.path)
            try:
                sink.write([feedback.to_point()])
            finally:
                sink.close()
        except Exception as exc:  # noqa: BLE001 - the sink's SinkUnavailable / SinkRejected
            if type(exc).__name__ == "SinkUnavailable":
                raise StoreUnavailable(f"cannot write feedback to {self.path}: {exc}") from exc
            raise StoreError(f"feedback rejected by {self.path}: {exc}") from exc

def _time_where(column: str, start_ns: int | None, end_ns: int | None) -> tuple[str, list[int]]:
    parts, params = [], []
    if start_ns is not None:
        parts.append(f"{column} >= ?")
        params.append(int(start_ns))
    if end_ns is not None:
        parts.append(f"{column} < ?")
        params.append(int(end_ns))
    return " AND ".join(parts), params


def _json_object(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _label(row: dict[str, Any]) -> LabelWindow:
    start = int(row["time_ns"])
    end = row.get("end_ns")
    return LabelWindow(
        stream=str(row.get("stream", "")),
        start_ns=start,
        end_ns=int(end) if end not in (None, "") else start,
        source=str(row.get("source") or ""),
    )


# --------------------------------------------------------------------------------------------- InfluxQL
def influxql_string(value: str) -> str:
    """A single-quoted InfluxQL string literal."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def influxql_ident(name: str) -> str:
    return '"' + str(name).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tag_in(tag: str, values: Iterable[str] | None) -> str | None:
    """An InfluxQL condition matching any of ``values``; None = no filter. An empty list selects nothing,
    signalled as the sentinel "false" (InfluxQL has no false literal), which callers answer without a query."""
    if values is None:
        return None
    values = list(values)
    if not values:
        return "false"
    return "(" + " OR ".join(f"{influxql_ident(tag)} = {influxql_string(v)}" for v in values) + ")"


class InfluxQLStore:
    """Reads InfluxDB with InfluxQL over ``GET /query?db=..&q=..&epoch=ns``; writes feedback as line protocol
    to ``/api/v2/write`` (the endpoint influxdb-client uses; served by 1.8+, 2.x, 3.x)."""

    def __init__(
        self, query_url: str, database: str, *, token: Any = None, write_url: str | None = None,
        org: str = "", bucket: str | None = None, timeout_s: float = 10.0,
    ):
        self.query_url = query_url.rstrip("/")
        self.write_url = (write_url or query_url).rstrip("/")
        self.database = database
        self.bucket = bucket or database
        self.org = org
        self.timeout_s = timeout_s
        secret = token.get_secret_value() if hasattr(token, "get_secret_value") else token
        self._token: str | None = secret or None
        self.key = f"influx:{self.query_url}/{self.database}"
        self.description = f"InfluxDB {self.query_url} (database {self.database})"

    def __repr__(self) -> str:  # never shows the token
        return f"InfluxQLStore({self.query_url!r}, {self.database!r})"

    # -- plumbing
    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Token {self._token}"
        return headers

    def _request(self, req: urllib.request.Request, what: str) -> bytes:
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()[:300].decode(errors="replace")
            if exc.code in (401, 403):
                raise StoreError(f"InfluxDB refused the credentials for {what} (HTTP {exc.code})") from exc
            raise StoreError(f"InfluxDB {what} failed: HTTP {exc.code} {body}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StoreUnavailable(f"InfluxDB at {self.query_url} is unreachable: {reason}") from exc

    def query(self, q: str) -> list[dict[str, Any]]:
        """Run one InfluxQL statement; rows of all series, each with its series' tags merged in."""
        params = urllib.parse.urlencode({"db": self.database, "q": q, "epoch": "ns"})
        req = urllib.request.Request(f"{self.query_url}/query?{params}", headers=self._headers())
        raw = self._request(req, "query")
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            raise StoreError(f"InfluxDB sent a reply that is not JSON: {raw[:200]!r}") from exc
        if "error" in payload:
            raise StoreError(f"InfluxDB: {payload['error']}")
        rows: list[dict[str, Any]] = []
        for result in payload.get("results", []):
            if "error" in result:
                raise StoreError(f"InfluxDB: {result['error']}")
            for series in result.get("series", []):
                columns = series.get("columns", [])
                tags = series.get("tags", {}) or {}
                for values in series.get("values", []):
                    row = dict(zip(columns, values))
                    row.update(tags)
                    rows.append(row)
        return rows

    @staticmethod
    def _where(*conditions: str | None) -> str:
        parts = [c for c in conditions if c]
        return f" WHERE {' AND '.join(parts)}" if parts else ""

    # -- reads
    def streams(self) -> list[StreamSummary]:
        fields = '"value", "score", "threshold", "alert"'
        lasts = self.query(
            f"SELECT {fields} FROM {influxql_ident(WINDOW_SCORE)} GROUP BY * ORDER BY time DESC LIMIT 1"
        )
        firsts = self.query(f'SELECT "score" FROM {influxql_ident(WINDOW_SCORE)} GROUP BY * LIMIT 1')
        first_of: dict[tuple[str, str], int] = {
            (r.get("stream", ""), r.get("stream_class", "")): int(r["time"]) for r in firsts
        }
        return _summaries(
            {
                **row, "last_ns": int(row["time"]),
                "first_ns": first_of.get((row.get("stream", ""), row.get("stream_class", "")), int(row["time"])),
            }
            for row in lasts
        )

    def window_scores(
        self, stream: str, start_ns: int, end_ns: int, max_points: int | None = DEFAULT_MAX_POINTS
    ) -> pd.DataFrame:
        where = self._where(
            f'"stream" = {influxql_string(stream)}', f"time >= {int(start_ns)}", f"time < {int(end_ns)}"
        )
        measurement = influxql_ident(WINDOW_SCORE)
        counted = self.query(f'SELECT count("score") FROM {measurement}{where}')
        count = int(counted[0]["count"]) if counted else 0
        if max_points is None or count <= max_points:
            rows = self.query(
                f'SELECT "value", "raw_score", "score", "threshold", "alert", "decided_by" FROM {measurement}{where}'
            )
            bucket = 0
            data = [
                {"time_ns": r["time"], "value": r.get("value"), "raw_score": r.get("raw_score"),
                 "score": r.get("score"), "score_max": r.get("score"), "threshold": r.get("threshold"),
                 "alert": r.get("alert"), "decided_by": r.get("decided_by")}
                for r in rows
            ]
        else:
            bucket = bucket_ns(start_ns, end_ns, max_points)
            rows = self.query(
                'SELECT mean("value") AS "value", mean("raw_score") AS "raw_score", mean("score") AS "score", '
                'max("score") AS "score_max", mean("threshold") AS "threshold", max("alert") AS "alert" '
                f"FROM {measurement}{where} GROUP BY time({bucket}ns) fill(none)"
            )
            data = [{**r, "time_ns": r["time"]} for r in rows]
        return _finish_scores(_frame(data, SCORE_COLUMNS), bucket)

    def score_overview(
        self, start_ns: int, end_ns: int, buckets: int = 40, streams: Iterable[str] | None = None
    ) -> pd.DataFrame:
        stream_cond = _tag_in("stream", streams)
        if stream_cond == "false":
            return _frame([], OVERVIEW_COLUMNS)
        bucket = bucket_ns(start_ns, end_ns, buckets)
        rows = self.query(
            f'SELECT max("score") AS "score_max" FROM {influxql_ident(WINDOW_SCORE)}'
            f"{self._where(stream_cond, f'time >= {int(start_ns)}', f'time < {int(end_ns)}')} "
            f'GROUP BY time({bucket}ns), "stream" fill(none)'
        )
        frame = _frame(
            [{"stream": r.get("stream", ""), "time_ns": r["time"], "score_max": r.get("score_max")} for r in rows],
            OVERVIEW_COLUMNS,
        )
        frame["score_max"] = pd.to_numeric(frame["score_max"], errors="coerce").astype(float)
        return frame.sort_values(["stream", "time_ns"]).reset_index(drop=True)

    def alerts(
        self, streams: Iterable[str] | None = None, classes: Iterable[str] | None = None,
        start_ns: int | None = None, end_ns: int | None = None, limit: int = 1000,
    ) -> pd.DataFrame:
        stream_cond = _tag_in("stream", streams)
        class_cond = _tag_in("stream_class", classes)
        if "false" in (stream_cond, class_cond):
            return _finish_alerts(_frame([], ALERT_COLUMNS))
        where = self._where(
            stream_cond, class_cond,
            f"time >= {int(start_ns)}" if start_ns is not None else None,
            f"time < {int(end_ns)}" if end_ns is not None else None,
        )
        rows = self.query(f"SELECT * FROM {influxql_ident(ALERT)}{where} ORDER BY time DESC LIMIT {int(limit)}")
        return _finish_alerts(_frame([{**r, "time_ns": r["time"]} for r in rows], ALERT_COLUMNS))

    def labels(self, stream: str | None = None) -> list[LabelWindow]:
        where = self._where(f'"stream" = {influxql_string(stream)}' if stream else None)
        rows = self.query(f"SELECT * FROM {influxql_ident(LABEL_WINDOW)}{where}")
        return sorted((_label({**r, "time_ns": r["time"]}) for r in rows), key=lambda w: (w.stream, w.start_ns))

    def snapshot_times(self, stream: str, start_ns: int, end_ns: int, limit: int = 200) -> list[int]:
        # InfluxQL cannot select time alone and "payload" (tens of kB) is the only field. Few snapshots: read
        # them with their payloads. Many: count them per bucket and return each bucket's start, which
        # snapshot() (first snapshot at or after a time) turns back into a real snapshot.
        measurement = influxql_ident(WINDOW_SNAPSHOT)
        where = self._where(f'"stream" = {influxql_string(stream)}', f"time >= {int(start_ns)}",
                            f"time <= {int(end_ns)}")
        counted = self.query(f'SELECT count("payload") FROM {measurement}{where}')
        count = int(counted[0]["count"]) if counted else 0
        if count == 0:
            return []
        if count <= min(limit, SNAPSHOT_DIRECT_READ):
            rows = self.query(f'SELECT "payload" FROM {measurement}{where} LIMIT {int(limit)}')
            return [int(r["time"]) for r in rows]
        bucket = bucket_ns(start_ns, int(end_ns) + 1, limit)
        rows = self.query(f'SELECT count("payload") FROM {measurement}{where} GROUP BY time({bucket}ns) fill(none)')
        return [max(int(r["time"]), int(start_ns)) for r in rows][:limit]

    def snapshot(self, stream: str, time_ns: int) -> WindowSnapshot | None:
        where = self._where(f'"stream" = {influxql_string(stream)}', f"time >= {int(time_ns)}")
        rows = self.query(f'SELECT "payload" FROM {influxql_ident(WINDOW_SNAPSHOT)}{where} ORDER BY time ASC LIMIT 1')
        if not rows:
            return None
        return decode_snapshot(stream, int(rows[0]["time"]), str(rows[0].get("payload") or ""))

    def feedback(self) -> pd.DataFrame:
        rows = self.query(f"SELECT * FROM {influxql_ident(ALERT_FEEDBACK)}")
        return _finish_feedback(_frame([{**r, "time_ns": r["time"]} for r in rows], FEEDBACK_COLUMNS))

    def image_results(self) -> pd.DataFrame:
        rows = self.query(f"SELECT * FROM {influxql_ident(IMAGE_RESULT)}")
        return _finish_images(_frame([{**r, "time_ns": r["time"]} for r in rows], IMAGE_COLUMNS))

    # -- the one write
    def write_feedback(self, feedback: AlertFeedback) -> None:
        line = to_line_protocol(feedback.to_point())
        params = urllib.parse.urlencode({"org": self.org, "bucket": self.bucket, "precision": "ns"})
        headers = {**self._headers(), "Content-Type": "text/plain; charset=utf-8"}
        req = urllib.request.Request(
            f"{self.write_url}/api/v2/write?{params}", data=line.encode("utf-8"), headers=headers, method="POST"
        )
        self._request(req, "feedback write")


# --------------------------------------------------------------------------------------------- choosing one
STORE_ENV = "SCALOWATCH_DASHBOARD_STORE"
SQLITE_PATH_ENV = "SCALOWATCH_DASHBOARD_SQLITE_PATH"


def open_store(
    kind: str | None = None, sqlite_path: str | os.PathLike[str] | None = None, settings: Any = None
) -> Store:
    """The store the dashboard reads. ``kind``/``sqlite_path`` override the monitor's settings
    (:class:`streamer.config.Settings`: ``store.kind``, ``store.sqlite_path``, ``influx.*``), so that by default
    both processes look at the same store."""
    if settings is None:
        settings = load_settings()
    store_section = getattr(settings, "store", None)
    kind = (kind or getattr(store_section, "kind", None) or "sqlite").lower()
    if kind == "sqlite":
        path = sqlite_path or getattr(store_section, "sqlite_path", None) or "scalowatch.sqlite"
        return SQLiteStore(path)
    if kind == "influx":
        influx = getattr(settings, "influx", None)
        url = getattr(influx, "url", None) or "http://localhost:8086"
        bucket = getattr(influx, "bucket", None) or "scalowatch"
        timeout_ms = getattr(influx, "timeout_ms", None) or 10_000
        return InfluxQLStore(
            query_url=getattr(influx, "query_url", None) or url,
            database=getattr(influx, "database", None) or bucket,
            token=getattr(influx, "token", None),
            write_url=url,
            org=getattr(influx, "org", None) or "",
            bucket=bucket,
            timeout_s=timeout_ms / 1000.0,
        )
    raise ValueError(f"unknown store kind {kind!r}: use 'sqlite' or 'influx'")


def store_from_environment() -> Store:
    """What the Streamlit app calls: the CLI passes its choice through the environment."""
    return open_store(os.environ.get(STORE_ENV) or None, os.environ.get(SQLITE_PATH_ENV) or None)


def load_settings() -> Any:
    """The monitor's Settings, or None when they cannot be built (then defaults apply)."""
    try:
        from streamer.config import Settings  # noqa: PLC0415 - keeps this module importable without it
    except ImportError:
        return None
    try:
        return Settings()
    except Exception as exc:  # noqa: BLE001 - a broken config must not take the dashboard down
        log.warning("cannot read the monitor settings, using defaults: %s", exc)
        return None
