"""The dashboard's query layer: one contract run over the SQLite store and (integration) a real InfluxDB."""
from __future__ import annotations

import time
import urllib.parse
import urllib.request
import uuid

import numpy as np
import pytest

from dashboards.store import (
    AlertFeedback, InfluxQLStore, SQLiteStore, StoreError, StoreUnavailable, bucket_ns, open_store,
)
from streamer.sinks.influx import to_line_protocol
from streamer.points import Point
from dashboard_data import MINUTE, N_POINTS, T0, THRESHOLD, image_points, scenario, score_of, window_points, write_sqlite


def write_influx(server, database: str, points) -> None:
    """Line protocol through the front's /api/v2/write, in chunks (the path the monitor's InfluxSink uses)."""
    lines = [to_line_protocol(p) for p in points]
    for i in range(0, len(lines), 5000):
        params = urllib.parse.urlencode({"bucket": database, "org": "scalowatch", "precision": "ns"})
        req = urllib.request.Request(f"{server.url}/api/v2/write?{params}",
                                     data="\n".join(lines[i:i + 5000]).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 204


def new_influx_database(server) -> str:
    """A database of its own, so other tests' points in the shared server do not leak in."""
    name = "dash_" + uuid.uuid4().hex[:10]
    server.query(f'CREATE DATABASE "{name}"', method="POST")
    return name


_SERVERS: dict[str, object] = {}


def store_server(store):
    """The test server behind an InfluxQLStore made by the `populated` fixture."""
    return _SERVERS[store.query_url]


@pytest.fixture(params=["sqlite", pytest.param("influx", marks=pytest.mark.integration)])
def populated(request, tmp_path):
    """(store, scenario) with the same synthetic contents in either backend."""
    scen = scenario()
    points = scen.points + image_points(tmp_path / "images")
    if request.param == "sqlite":
        path = tmp_path / "store.sqlite"
        write_sqlite(path, points)
        return SQLiteStore(path), scen
    server = request.getfixturevalue("influx_server")
    _SERVERS[server.query_url] = server
    database = new_influx_database(server)
    write_influx(server, database, points)
    return InfluxQLStore(server.query_url, database, write_url=server.url, org="scalowatch"), scen


def test_streams_summarise_extent_and_latest_state(populated):
    store, _ = populated
    streams = {s.stream: s for s in store.streams()}
    assert sorted(streams) == ["boiler", "fan-a", "pump-1"]
    assert streams["fan-a"].stream_class == "audio"
    assert streams["fan-a"].in_alert and not streams["pump-1"].in_alert
    assert streams["pump-1"].first_ns == T0
    assert streams["pump-1"].last_ns == T0 + (N_POINTS - 1) * MINUTE
    assert streams["boiler"].last_score == pytest.approx(score_of("boiler", N_POINTS - 1))
    assert streams["boiler"].last_threshold == pytest.approx(THRESHOLD)


def test_window_scores_raw_when_few_points(populated):
    store, _ = populated
    frame = store.window_scores("pump-1", T0 + 100 * MINUTE, T0 + 200 * MINUTE, max_points=1000)
    assert len(frame) == 100
    assert frame.attrs["bucket_ns"] == 0
    assert frame["time_ns"].is_monotonic_increasing
    assert frame["time_ns"].iloc[0] == T0 + 100 * MINUTE
    expected = [score_of("pump-1", i) for i in range(100, 200)]
    np.testing.assert_allclose(frame["score"].to_numpy(), expected)
    np.testing.assert_allclose(frame["value"].to_numpy(), [10 + i % 17 for i in range(100, 200)])


def test_window_scores_downsample_keeps_peaks(populated):
    store, _ = populated
    frame = store.window_scores("pump-1", T0, T0 + N_POINTS * MINUTE, max_points=50)
    assert 10 <= len(frame) <= 50
    assert frame.attrs["bucket_ns"] > MINUTE
    # the burst survives as a bucket maximum and as an alert flag even though the mean dilutes it
    assert frame["score_max"].max() == pytest.approx(0.95)
    assert frame["alert"].max() == 1.0
    assert frame["score"].max() < 0.95


def test_window_scores_unknown_stream_is_empty(populated):
    store, _ = populated
    frame = store.window_scores("no-such-stream", T0, T0 + N_POINTS * MINUTE)
    assert frame.empty and "score" in frame.columns


def test_score_overview_buckets_every_stream(populated):
    store, _ = populated
    frame = store.score_overview(T0, T0 + N_POINTS * MINUTE, buckets=20)
    assert set(frame["stream"]) == {"boiler", "fan-a", "pump-1"}
    assert frame.groupby("stream").size().max() <= 20
    assert frame.loc[frame["stream"] == "pump-1", "score_max"].max() == pytest.approx(0.95)


def test_alerts_newest_first_and_filters(populated):
    store, scen = populated
    frame = store.alerts()
    assert list(frame["stream"]) == ["fan-a", "pump-1"]
    assert list(frame["time_ns"]) == [scen.fan_alert_ns, scen.pump_alert_ns]
    assert frame.loc[1, "end_ns"] == scen.pump_alert_end_ns
    assert frame.loc[1, "state"] == "closed" and frame.loc[0, "state"] == "open"
    assert list(store.alerts(streams=["pump-1"])["stream"]) == ["pump-1"]
    assert list(store.alerts(classes=["audio"])["stream"]) == ["fan-a"]
    assert store.alerts(streams=[]).empty
    assert list(store.alerts(start_ns=scen.pump_alert_ns + 1)["stream"]) == ["fan-a"]


def test_labels(populated):
    store, scen = populated
    labels = store.labels("pump-1")
    assert [(w.start_ns, w.end_ns, w.source) for w in labels] == [
        (scen.label_start_ns, scen.label_end_ns, "nab:test/pump.csv")]
    assert store.labels("fan-a") == []


def test_snapshots_nearest_at_or_after(populated):
    store, scen = populated
    snap = store.snapshot("pump-1", scen.pump_alert_ns)  # stored one minute after the alert start
    assert snap is not None and snap.time_ns == scen.pump_alert_ns + MINUTE
    assert snap.scalogram.shape == (32, 48)
    np.testing.assert_allclose(snap.reconstruction, snap.scalogram * 0.5)
    assert snap.sample_rate == 16000.0 and snap.samples.shape == (4000,)
    assert store.snapshot_times("fan-a", scen.fan_alert_ns, scen.fan_alert_ns + MINUTE) == [scen.fan_alert_ns]
    assert store.snapshot("boiler", T0) is None


def test_feedback_round_trip_and_replace(populated):
    store, scen = populated
    assert store.feedback().empty
    store.write_feedback(AlertFeedback("pump-1", scen.pump_alert_ns, "ack", "checked, real", T0 + 1))
    store.write_feedback(AlertFeedback("fan-a", scen.fan_alert_ns, "ack", "", T0 + 2))
    store.write_feedback(AlertFeedback("fan-a", scen.fan_alert_ns, "false_positive", 'door "slam", ok', T0 + 3))
    frame = store.feedback()
    assert len(frame) == 2  # the second verdict on fan-a replaced the first (same key)
    rows = {r.stream: r for r in frame.itertuples()}
    assert rows["fan-a"].verdict == "false_positive" and rows["fan-a"].note == 'door "slam", ok'
    assert rows["fan-a"].at_ns == T0 + 3 and rows["fan-a"].time_ns == scen.fan_alert_ns
    assert rows["pump-1"].verdict == "ack"


def test_image_results(populated):
    store, _ = populated
    frame = store.image_results()
    assert list(frame["defect"]) == ["broken_large", "good"]
    assert frame.loc[0, "score"] == pytest.approx(0.87)
    assert frame.loc[0, "mask_path"].endswith("_mask.png") and frame.loc[1, "mask_path"] == ""


def test_bad_verdict_is_rejected():
    with pytest.raises(ValueError):
        AlertFeedback("s", 1, "maybe", "", 2)


def test_missing_sqlite_file_is_unavailable_and_not_created(tmp_path):
    path = tmp_path / "absent.sqlite"
    store = SQLiteStore(path)
    with pytest.raises(StoreUnavailable, match="does not exist"):
        store.streams()
    assert not path.exists()


def test_sqlite_file_without_table_reads_as_empty(tmp_path):
    path = tmp_path / "fresh.sqlite"
    import sqlite3
    sqlite3.connect(path).close()
    store = SQLiteStore(path)
    assert store.streams() == [] and store.alerts().empty and store.labels() == []
    assert store.window_scores("x", 0, 10).empty and store.image_results().empty


def test_not_a_database_is_a_store_error(tmp_path):
    path = tmp_path / "garbage.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        SQLiteStore(path).streams()


def test_unreachable_influx_is_unavailable():
    import socket
    with socket.socket() as sock:  # a port that was just free: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = InfluxQLStore(f"http://127.0.0.1:{port}", "scalowatch", token="s3cret-token", timeout_s=2)
    with pytest.raises(StoreUnavailable) as info:
        store.streams()
    assert "s3cret-token" not in str(info.value) and "s3cret-token" not in repr(store)
    with pytest.raises(StoreUnavailable):
        store.write_feedback(AlertFeedback("s", 1, "ack", "", 2))


def test_bucket_width_bounds_the_bucket_count():
    for span, n in ((10**12, 100), (7, 3), (10**9 + 7, 1000)):
        width = bucket_ns(0, span, n)
        assert span // width + 1 <= n


def test_open_store_choices(tmp_path):
    from streamer.config import Settings

    assert isinstance(open_store("sqlite", tmp_path / "x.sqlite"), SQLiteStore)
    settings = Settings(store={"kind": "sqlite", "sqlite_path": str(tmp_path / "m.sqlite")})
    store = open_store(settings=settings)
    assert isinstance(store, SQLiteStore) and store.path == tmp_path / "m.sqlite"
    settings = Settings(store={"kind": "influx"}, influx={
        "url": "http://127.0.0.1:9", "query_url": "http://127.0.0.1:8", "database": "db1", "token": "tok-123"})
    store = open_store(settings=settings)
    assert isinstance(store, InfluxQLStore)
    assert store.query_url == "http://127.0.0.1:8" and store.write_url == "http://127.0.0.1:9"
    assert store.database == "db1" and "tok-123" not in store.description + repr(store)
    with pytest.raises(ValueError):
        open_store("mongo", settings=object())


def test_store_layer_at_volume(tmp_path):
    """100 streams x 1,000 points = 100,000 points in range: every query comes back downsampled."""
    path = tmp_path / "big.sqlite"
    points = []
    for s in range(100):
        points += window_points(f"s{s:03d}", "sensor", n=1000, step=MINUTE // 4)
    write_sqlite(path, points)
    store = SQLiteStore(path)
    end = T0 + 1000 * MINUTE // 4
    timings = {}
    t = time.perf_counter()
    streams = store.streams()
    timings["streams"] = time.perf_counter() - t
    t = time.perf_counter()
    frame = store.window_scores("s042", T0, end, max_points=300)
    timings["window_scores"] = time.perf_counter() - t
    t = time.perf_counter()
    overview = store.score_overview(T0, end, buckets=30)
    timings["score_overview"] = time.perf_counter() - t
    print("store timings at 100k points (noisy, shared CPU):", {k: round(v, 3) for k, v in timings.items()})
    assert len(streams) == 100
    assert 0 < len(frame) <= 300
    assert overview.groupby("stream").size().max() <= 30 and overview["stream"].nunique() == 100


def test_score_overview_for_chosen_streams(populated):
    store, _ = populated
    frame = store.score_overview(T0, T0 + N_POINTS * MINUTE, buckets=10, streams=("pump-1", "boiler"))
    assert set(frame["stream"]) == {"pump-1", "boiler"}
    assert store.score_overview(T0, T0 + N_POINTS * MINUTE, buckets=10, streams=()).empty


@pytest.mark.integration
def test_influx_store_layer_at_volume(influx_server):
    """The same 100 x 1,000 points in a real InfluxDB: downsampled by GROUP BY time() on the server."""
    database = new_influx_database(influx_server)
    points = []
    for s in range(100):
        points += window_points(f"s{s:03d}", "sensor", n=1000, step=MINUTE // 4)
    write_influx(influx_server, database, points)
    store = InfluxQLStore(influx_server.query_url, database)
    end = T0 + 1000 * MINUTE // 4
    t = time.perf_counter()
    streams = store.streams()
    frame = store.window_scores("s042", T0, end, max_points=300)
    overview = store.score_overview(T0, end, buckets=30)
    print(f"influx store queries at 100k points: {time.perf_counter() - t:.3f} s (noisy, shared CPU)")
    assert len(streams) == 100
    assert 0 < len(frame) <= 300 and frame.attrs["bucket_ns"] > 0
    assert frame["score_max"].max() == pytest.approx(max(score_of("s042", i) for i in range(1000)))
    assert overview.groupby("stream").size().max() <= 30 and overview["stream"].nunique() == 100


def test_decodes_the_monitors_snapshot_payload():
    """Contract with the writer: streamer.point_builders.snapshot_payload → dashboards.store.decode_snapshot."""
    from dashboards.store import decode_snapshot
    from streamer.point_builders import snapshot_payload

    scal = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    payload = snapshot_payload(scal, scal * 2, scal[0] + 1, np.linspace(-1, 1, 100), 8000.0)
    snap = decode_snapshot("fan", 5, payload)
    np.testing.assert_allclose(snap.scalogram, scal[0])
    np.testing.assert_allclose(snap.reconstruction, scal[0] * 2)
    np.testing.assert_allclose(snap.anomaly_map, scal[0] + 1)
    assert snap.samples.shape == (100,) and snap.sample_rate > 0
    with pytest.raises(StoreError, match="cannot be decoded"):
        decode_snapshot("fan", 5, "bm90IGFuIG5weg==")


def test_influx_token_goes_in_the_authorization_header_only():
    from pydantic import SecretStr

    store = InfluxQLStore("http://127.0.0.1:1", "db", token=SecretStr("tok-xyz"))
    assert store._headers()["Authorization"] == "Token tok-xyz"
    assert "tok-xyz" not in store.key + store.description + repr(store)
    assert "Authorization" not in InfluxQLStore("http://127.0.0.1:1", "db", token=SecretStr(""))._headers()


def test_sqlite_path_with_uri_special_characters(tmp_path):
    folder = tmp_path / "odd #1? 50%"
    folder.mkdir()
    path = folder / "store.sqlite"
    write_sqlite(path, window_points("a", "sensor", n=5))
    store = SQLiteStore(path)
    assert [s.stream for s in store.streams()] == ["a"]
    store.write_feedback(AlertFeedback("a", T0, "ack", "", T0))
    assert list(store.feedback()["verdict"]) == ["ack"]


def test_many_snapshots_are_listed_without_reading_every_payload(populated):
    """Both stores list 60 snapshots of an alert; each listed time leads to a real snapshot."""
    store, _ = populated
    from streamer.point_builders import snapshot_payload
    from streamer.points import WINDOW_SNAPSHOT

    payload = snapshot_payload(np.ones((4, 4)), np.ones((4, 4)), np.ones((4, 4)), np.ones(8), 100.0)
    start = T0 + 1000 * MINUTE
    points = [Point(WINDOW_SNAPSHOT, {"stream": "boiler"}, {"payload": payload}, start + i * MINUTE)
              for i in range(60)]
    if isinstance(store, SQLiteStore):
        write_sqlite(store.path, points)
    else:
        write_influx(store_server(store), store.database, points)
    times = store.snapshot_times("boiler", start, start + 59 * MINUTE, limit=200)
    assert len(times) == 60 and times[0] == start
    limited = store.snapshot_times("boiler", start, start + 59 * MINUTE, limit=10)
    assert 1 <= len(limited) <= 10
    found = {store.snapshot("boiler", t).time_ns for t in limited}
    assert found <= {start + i * MINUTE for i in range(60)} and start in found
