"""Sinks: validation, line protocol, SQLite upserts/concurrency, and InfluxSink against a real InfluxDB."""
from __future__ import annotations

import sqlite3
import threading
import uuid

import numpy as np
import pytest

from streamer.config import Settings
from streamer.points import ALERT, WINDOW_SCORE, Point
from streamer.sinks.base import Sink, SinkRejected, SinkUnavailable, validate_point
from streamer.sinks.factory import make_sink
from streamer.sinks.influx import InfluxSink, to_line_protocol
from streamer.sinks import sqlite as sqlite_module
from streamer.sinks.sqlite import SQLiteSink

T0 = 1_700_000_000_000_000_000


def score_point(stream: str, i: int, **extra) -> Point:
    fields = {"value": float(i) / 7, "raw_score": 0.5 + i, "score": 0.25, "threshold": 0.99, "alert": 0,
              "scorer": "recon", "model_version": "abc123", "window_start_ns": T0 + (i - 10) * 1_000_000}
    fields.update(extra)
    return Point(WINDOW_SCORE, {"stream": stream, "stream_class": "sensor"}, fields, T0 + i * 1_000_000)


# ------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("point", [
    Point("", {"stream": "a"}, {"v": 1.0}, 1),
    Point("m\nx", {"stream": "a"}, {"v": 1.0}, 1),
    Point("m", {"stream": ""}, {"v": 1.0}, 1),
    Point("m", {"stream": "a\nb"}, {"v": 1.0}, 1),
    Point("m", {"time": "a"}, {"v": 1.0}, 1),
    Point("m", {"stream": "a"}, {}, 1),
    Point("m", {"stream": "a"}, {"v": float("nan")}, 1),
    Point("m", {"stream": "a"}, {"v": np.float32("inf")}, 1),
    Point("m", {"stream": "a"}, {"v": 2**64}, 1),
    Point("m", {"stream": "a"}, {"v": None}, 1),
    Point("m", {"stream": "a"}, {"v": [1, 2]}, 1),
    Point("m", {"stream": "a"}, {"stream": 1.0}, 1),  # field name clashes with a tag
    Point("m", {"stream": "a"}, {"v": 1.0}, -1),
    Point("m", {"stream": "a"}, {"v": 1.0}, 2**63),
    Point("m", {"stream": "a"}, {"v": 1.0}, 1.5),
])
def test_invalid_points_are_rejected_before_any_write(point, tmp_path):
    with pytest.raises(SinkRejected) as err:
        validate_point(point)
    assert err.value.point is point
    sink = SQLiteSink(tmp_path / "s.db")
    with pytest.raises(SinkRejected):
        sink.write([score_point("ok", 1), point])
    assert sink.read(WINDOW_SCORE) == []  # the good point in the same batch was not written either
    sink.close()


def test_line_protocol_escapes_and_types():
    """influxdb-client's encoder (fields in its order), fed numpy scalars converted by the sink."""
    point = Point("window score", {"stream": "pump 1,a=b", "stream_class": "sensor"},
                  {"value": np.float32(1.5), "alert": np.int64(1), "open": True, "note": 'say "hi" \\ ok'},
                  np.int64(T0))
    assert to_line_protocol(point) == (
        'window\\ score,stream=pump\\ 1\\,a\\=b,stream_class=sensor '
        f'alert=1i,note="say \\"hi\\" \\\\ ok",open=true,value=1.5 {T0}')


def test_sinks_satisfy_protocol_and_factory_picks_by_kind(tmp_path):
    sqlite_settings = Settings(store={"kind": "sqlite", "sqlite_path": str(tmp_path / "f.db")})
    sink = make_sink(sqlite_settings)
    assert isinstance(sink, SQLiteSink) and isinstance(sink, Sink)
    sink.close()
    influx = make_sink(Settings(influx={"url": "http://127.0.0.1:9", "bucket": "b"}))
    assert isinstance(influx, InfluxSink) and isinstance(influx, Sink)
    influx.close()


# ------------------------------------------------------------------------------------------ SQLite
def test_sqlite_round_trip_and_upsert_merges_fields(tmp_path):
    path = tmp_path / "nested" / "store.sqlite"
    with SQLiteSink(path) as sink:
        points = [score_point("a", i) for i in range(20)] + [score_point("b", 3)]
        sink.write(points)
        sink.write(points[:5])  # at-least-once replay: no duplicates
        got = sink.read(WINDOW_SCORE, tags={"stream": "a"})
        assert got == points[:20]
        assert [p.time_ns for p in sink.read(WINDOW_SCORE, start_ns=T0 + 5_000_000, end_ns=T0 + 8_000_000,
                                             tags={"stream": "a"})] == [T0 + 5_000_000, T0 + 6_000_000, T0 + 7_000_000]
        opened = Point(ALERT, {"stream": "a", "stream_class": "sensor"},
                       {"severity": 0.991, "end_ns": 0, "state": "open", "duration_s": 0.0}, T0)
        closed = Point(ALERT, {"stream": "a", "stream_class": "sensor"},
                       {"end_ns": T0 + 9, "state": "closed", "duration_s": 12.5}, T0)
        sink.write([opened])
        sink.write([closed])
        assert sink.read(ALERT) == [Point(ALERT, opened.tags, {"severity": 0.991, "end_ns": T0 + 9,
                                                               "state": "closed", "duration_s": 12.5}, T0)]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT COUNT(*) FROM points").fetchone()[0] == 22
    types = conn.execute("SELECT json_type(fields, '$.alert'), json_type(fields, '$.value'), "
                         "json_type(fields, '$.scorer') FROM points LIMIT 1").fetchone()
    assert types == ("integer", "real", "text")
    conn.close()


def test_sqlite_iter_points_walks_the_store_in_batches(tmp_path, monkeypatch):
    """A replayed benchmark reads millions of points back one at a time: across fetch batches they come in time
    order, filtered as ``read`` filters them."""
    monkeypatch.setattr(sqlite_module, "READ_BATCH", 3)
    with SQLiteSink(tmp_path / "store.sqlite") as sink:
        points = [score_point("a" if i % 2 else "b", i) for i in range(11)]
        sink.write(points)
        walked = sink.iter_points(WINDOW_SCORE, tags={"stream": "a"})
        assert next(walked) == points[1]
        assert list(walked) == points[3::2]
        assert list(sink.iter_points(WINDOW_SCORE, start_ns=T0 + 9_000_000)) == points[9:]
        assert sink.read(WINDOW_SCORE) == points


def test_sqlite_concurrent_writers_and_reader(tmp_path):
    path = tmp_path / "c.sqlite"
    sink = SQLiteSink(path)
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(stream: str) -> None:
        try:
            for start in range(0, 200, 20):
                sink.write([score_point(stream, i) for i in range(start, start + 20)])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def reader() -> None:  # a dashboard in another connection, reading while the monitor writes
        conn = sqlite3.connect(path, timeout=30)
        try:
            while not stop.is_set():
                conn.execute("SELECT COUNT(*), MAX(time_ns) FROM points").fetchone()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=writer, args=(f"s{k}",)) for k in range(3)]
    read_thread = threading.Thread(target=reader)
    read_thread.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    read_thread.join()
    assert errors == []
    assert {p.tags["stream"] for p in sink.read(WINDOW_SCORE)} == {"s0", "s1", "s2"}
    assert len(sink.read(WINDOW_SCORE)) == 600
    sink.close()
    with pytest.raises(SinkUnavailable):
        sink.write([score_point("late", 1)])


def test_sqlite_unwritable_location_is_unavailable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SinkUnavailable):
        SQLiteSink(blocker / "store.sqlite")


# ------------------------------------------------------------------------------------------ InfluxDB
@pytest.fixture
def influx_sink(influx_server):
    sink = InfluxSink(url=influx_server.url, bucket=influx_server.database, org="scalowatch", token="t")
    yield sink
    sink.close()


def _measurement() -> str:
    return f"ws_{uuid.uuid4().hex[:8]}"


@pytest.mark.integration
def test_influx_points_read_back_through_influxql(influx_sink, influx_server):
    name = _measurement()
    points = [Point(name, p.tags, p.fields, p.time_ns) for p in (score_point("a", i) for i in range(50))]
    points.append(Point(name, {"stream": "b c,d", "stream_class": "audio"}, {"value": 1.0, "scorer": 'q"x'}, T0))
    influx_sink.write(points)
    rows = influx_server.rows(f'SELECT * FROM "{name}" WHERE "stream" = \'a\'')
    assert len(rows) == 50
    assert [r["time"] for r in rows] == [p.time_ns for p in points[:50]]
    assert [r["value"] for r in rows] == pytest.approx([p.fields["value"] for p in points[:50]])
    assert rows[3]["alert"] == 0 and rows[3]["scorer"] == "recon" and rows[3]["window_start_ns"] == T0 - 7_000_000
    odd = influx_server.rows(f'SELECT * FROM "{name}" WHERE "stream" = \'b c,d\'')
    assert [(r["stream_class"], r["scorer"]) for r in odd] == [("audio", 'q"x')]


@pytest.mark.integration
def test_influx_large_batch_is_split_into_requests(influx_server):
    name = _measurement()
    sink = InfluxSink(url=influx_server.url, bucket=influx_server.database, token="t", max_points_per_request=7)
    before = influx_server.write_requests()
    try:
        sink.write([Point(name, {"stream": "a"}, {"v": float(i)}, T0 + i) for i in range(50)])
    finally:
        sink.close()
    assert influx_server.write_requests() - before == 8  # ceil(50 / 7)
    assert [r["v"] for r in influx_server.rows(f'SELECT v FROM "{name}"')] == [float(i) for i in range(50)]


@pytest.mark.integration
def test_influx_rewrite_is_idempotent_and_merges_fields(influx_sink, influx_server):
    name = _measurement()
    point = Point(name, {"stream": "a"}, {"severity": 0.995, "state": "open", "end_ns": 0}, T0)
    influx_sink.write([point])
    influx_sink.write([point])
    influx_sink.write([Point(name, {"stream": "a"}, {"state": "closed", "end_ns": T0 + 5}, T0)])
    rows = influx_server.rows(f'SELECT COUNT("state") AS n FROM "{name}"')
    assert rows[0]["n"] == 1
    (row,) = influx_server.rows(f'SELECT * FROM "{name}"')
    assert (row["severity"], row["state"], row["end_ns"]) == (0.995, "closed", T0 + 5)


@pytest.mark.integration
def test_influx_outage_raises_unavailable_then_recovers(influx_sink, influx_server):
    name = _measurement()
    influx_sink.write([Point(name, {"stream": "a"}, {"v": 1.0}, T0)])
    influx_server.stop()
    try:
        with pytest.raises(SinkUnavailable, match="unreachable"):
            influx_sink.write([Point(name, {"stream": "a"}, {"v": 2.0}, T0 + 1)])
    finally:
        influx_server.start()
    influx_sink.write([Point(name, {"stream": "a"}, {"v": 2.0}, T0 + 1)])  # same client, server back
    assert [r["v"] for r in influx_server.rows(f'SELECT v FROM "{name}"')] == [1.0, 2.0]


@pytest.mark.integration
def test_influx_server_side_rejections_and_missing_bucket(influx_sink, influx_server):
    name = _measurement()
    influx_sink.write([Point(name, {"stream": "a"}, {"v": 1.0}, T0)])
    with pytest.raises(SinkRejected) as err:  # field type conflict: v was a float
        influx_sink.write([Point(name, {"stream": "a"}, {"v": "text"}, T0 + 1)])
    assert err.value.status == 400
    wrong_bucket = InfluxSink(url=influx_server.url, bucket="no_such_database", token="t")
    try:
        with pytest.raises(SinkUnavailable, match="404"):
            wrong_bucket.write([Point(name, {"stream": "a"}, {"v": 1.0}, T0)])
    finally:
        wrong_bucket.close()


def test_sqlite_writes_are_durable_across_a_power_loss(tmp_path):
    """Issue 9 item 11: synchronous=NORMAL let a commit outrun a power loss; the sink promises durability."""
    sink = SQLiteSink(tmp_path / "s.db")
    sink.write([score_point("ok", 1)])
    assert sink._connection().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    sink.close()
