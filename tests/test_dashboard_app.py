"""Every dashboard page through Streamlit's AppTest, against a SQLite store filled with known contents:
content, filters, feedback writes, refresh ticks, and the empty / unknown / store-down states."""
from __future__ import annotations

import json
import socket
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboards.store import SQLiteStore
from dashboard_data import MINUTE, T0, image_points, scenario, write_sqlite
from streamer.points import ALERT, Point

APP = str(Path(__file__).resolve().parents[1] / "dashboards" / "app.py")
TIMEOUT = 60  # seconds per script run; generous because the 2 shared cores are busy


def run_page(page: str | None = None, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if query:
        at.query_params.update(query)
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


@pytest.fixture(autouse=True)
def fresh_cache():
    st.cache_data.clear()
    yield
    st.cache_data.clear()


@pytest.fixture
def store_env(tmp_path, monkeypatch):
    """A populated SQLite store, chosen through the same environment variables the CLI sets."""
    scen = scenario()
    path = tmp_path / "store.sqlite"
    write_sqlite(path, scen.points + image_points(tmp_path / "images"))
    monkeypatch.setenv("SCALOWATCH_DASHBOARD_STORE", "sqlite")
    monkeypatch.setenv("SCALOWATCH_DASHBOARD_SQLITE_PATH", str(path))
    monkeypatch.setenv("SCALOWATCH_DASHBOARD_RESULTS_DIR", str(tmp_path / "results"))
    return path, scen


@pytest.fixture
def empty_env(tmp_path, monkeypatch):
    path = tmp_path / "empty.sqlite"
    sqlite3.connect(path).close()
    monkeypatch.setenv("SCALOWATCH_DASHBOARD_STORE", "sqlite")
    monkeypatch.setenv("SCALOWATCH_DASHBOARD_SQLITE_PATH", str(path))
    monkeypatch.setenv("SCALOWATCH_DASHBOARD_RESULTS_DIR", str(tmp_path / "no-results"))
    return path


PAGES = ["views/live_alerts.py", "views/streams.py", "views/inspector.py", "views/replay_score.py",
         "views/images.py", "views/scoreboard.py"]


# --------------------------------------------------------------------------------------------- live alerts
def test_live_alerts_newest_first_with_metrics(store_env):
    _, scen = store_env
    at = run_page()
    assert at.title[0].value == "Live alerts"
    table = at.dataframe[0].value
    assert list(table["Stream"]) == ["fan-a", "pump-1"]
    assert list(table["State"]) == ["open", "closed"]
    assert table["Severity"].tolist() == pytest.approx([0.9, 0.95])
    assert table["Start (UTC)"].iloc[1] == pd.Timestamp(scen.pump_alert_ns, unit="ns", tz="UTC")
    assert table["Duration"].iloc[1] == "9.0 min"
    assert metrics(at)["Open alerts"] == "1" and metrics(at)["Alerts shown"] == "2"


def test_live_alerts_filters_by_stream_and_class(store_env):
    at = run_page()
    at.multiselect(key="alerts_streams").set_value(["pump-1"]).run()
    assert list(at.dataframe[0].value["Stream"]) == ["pump-1"]
    at.multiselect(key="alerts_streams").set_value([]).run()
    at.multiselect(key="alerts_classes").set_value(["audio"]).run()
    assert list(at.dataframe[0].value["Stream"]) == ["fan-a"]
    at.multiselect(key="alerts_streams").set_value(["pump-1"]).run()
    assert "No alerts match these filters" in texts(at.info)


def test_feedback_is_stored_shown_hidden_and_exported(store_env):
    path, scen = store_env
    at = run_page()
    at.selectbox(key="review_alert").set_value(("pump-1", scen.pump_alert_ns))
    at.radio(key="review_verdict").set_value("false_positive")
    at.text_input(key="review_note").input("valve test")
    at.button[0].click().run()
    assert not at.exception
    stored = SQLiteStore(path).feedback()
    assert list(zip(stored["stream"], stored["time_ns"], stored["verdict"], stored["note"])) == [
        ("pump-1", scen.pump_alert_ns, "false_positive", "valve test")]
    table = at.dataframe[0].value
    assert table.set_index("Stream").loc["pump-1", "Verdict"] == "False positive"
    assert "Verdict saved" in texts(at.success)
    at.toggle(key="alerts_hide_fp").set_value(True).run()
    assert list(at.dataframe[0].value["Stream"]) == ["fan-a"]


def test_feedback_csv_export():
    from dashboards.views.live_alerts import alerts_with_feedback, feedback_csv

    alerts = pd.DataFrame({"time_ns": [T0, T0 + MINUTE], "stream": ["a", "b"], "stream_class": ["sensor"] * 2,
                           "severity": [0.9, 0.8], "peak_raw_score": [1.0, 1.0], "end_ns": [0, 0],
                           "duration_s": [1.0, 1.0], "state": ["open"] * 2, "model_version": ["m"] * 2})
    fb = pd.DataFrame({"time_ns": [T0 + MINUTE], "stream": ["b"], "verdict": ["ack"], "note": ["ok, \"fine\""],
                       "at_ns": [T0 + 2 * MINUTE]})
    csv = feedback_csv(alerts_with_feedback(alerts, fb)).decode()
    back = pd.read_csv(__import__("io").StringIO(csv))
    assert list(back["stream"]) == ["b"] and back["note"][0] == 'ok, "fine"'
    assert back["alert_start_ns"][0] == T0 + MINUTE and back["verdict"][0] == "ack"


def test_a_new_alert_appears_on_the_next_refresh(store_env):
    path, _ = store_env
    at = run_page()
    assert len(at.dataframe[0].value) == 2
    write_sqlite(path, [Point(ALERT, {"stream": "boiler", "stream_class": "sensor"}, {
        "severity": 0.99, "peak_raw_score": 3.0, "end_ns": 0, "duration_s": 0.0, "state": "open",
        "model_version": "m1"}, T0 + 700 * MINUTE)])
    st.cache_data.clear()  # stands in for the cache TTL running out
    at.run()  # stands in for the fragment's refresh tick
    table = at.dataframe[0].value
    assert list(table["Stream"]) == ["boiler", "fan-a", "pump-1"]
    assert metrics(at)["Open alerts"] == "2"


# --------------------------------------------------------------------------------------------- streams
def test_streams_overview_and_default_chart(store_env):
    at = run_page("views/streams.py")
    overview = at.dataframe[0].value
    assert set(overview["Stream"]) == {"pump-1", "fan-a", "boiler"}
    assert overview["Stream"].iloc[0] == "fan-a"  # streams in alert come first
    assert list(overview["State"]) == ["ALERT", "normal", "normal"]
    assert all(len(spark) > 5 for spark in overview["Recent score"])
    assert metrics(at)["In alert now"] == "1"
    assert at.multiselect(key="streams_selected").value == ["fan-a"]
    assert len(at.get("vega_lite_chart")) == 2  # value and score of the alerting stream


def test_streams_side_by_side_with_alerts_and_labels(store_env):
    at = run_page("views/streams.py")
    at.multiselect(key="streams_selected").set_value(["pump-1", "boiler"]).run()
    from dashboards.charts import ALERT_COLOR, LABEL_COLOR

    specs = [c.proto.spec for c in at.get("vega_lite_chart")]
    assert len(specs) == 4  # (value, score) x 2 streams
    assert "pump-1" in specs[0] and "boiler" in specs[2]
    for spec in specs[:2]:  # label window and alert shaded on pump-1 ...
        assert LABEL_COLOR in spec and ALERT_COLOR in spec
    for spec in specs[2:]:  # ... and nothing on the quiet boiler
        assert LABEL_COLOR not in spec and ALERT_COLOR not in spec
    captions = texts(at.caption)
    assert "1 alert(s)" in captions and "1 known anomaly window(s)" in captions


def test_streams_time_range_downsamples(store_env):
    at = run_page("views/streams.py", query={"stream": "pump-1"})
    at.selectbox(key="streams_span").set_value("Last hour").run()
    assert "60 points" in texts(at.caption)
    at.selectbox(key="streams_span").set_value("Everything").run()
    assert "600 points" in texts(at.caption)


def test_streams_centred_on_an_alert_from_its_link(store_env):
    _, scen = store_env
    at = run_page()
    link = at.dataframe[0].value.set_index("Stream").loc["pump-1", "Chart"]
    query = dict(part.split("=", 1) for part in link.split("?", 1)[1].split("&"))
    assert query["t"] == str(scen.pump_alert_ns)
    at = run_page("views/streams.py", query={"stream": "pump-1", "t": query["t"], "range": "1h"})
    assert "Centred on 2024-01-01 05:00:00 UTC" in texts(at.caption)
    assert "60 points" in texts(at.caption) and "1 alert(s)" in texts(at.caption)  # minutes 270..329
    at.button(key="streams_follow").click().run()
    assert "Centred on" not in texts(at.caption) and "0 alert(s)" in texts(at.caption)  # the newest hour


def test_streams_unknown_stream_in_link(store_env):
    at = run_page("views/streams.py", query={"stream": "no-such-pump"})
    assert "Unknown stream" in texts(at.warning) and "no-such-pump" in texts(at.warning)


# --------------------------------------------------------------------------------------------- inspector
def test_inspector_shows_snapshot_and_audio(store_env):
    at = run_page("views/inspector.py")
    assert metrics(at)["Stream"] == "fan-a"
    titles = [str(json.loads(c.proto.spec).get("title")) for c in at.get("vega_lite_chart")]
    assert len(titles) == 4  # scalogram, reconstruction, anomaly map, samples
    assert "Input scalogram (32×48)" in titles and "Anomaly map (32×48)" in titles
    assert len(at.get("audio")) == 1


def test_inspector_sensor_alert_from_link_has_no_audio(store_env):
    _, scen = store_env
    at = run_page("views/inspector.py", query={"stream": "pump-1", "t": str(scen.pump_alert_ns)})
    assert metrics(at)["Stream"] == "pump-1"
    assert len(at.get("vega_lite_chart")) == 4 and len(at.get("audio")) == 0


def test_inspector_alert_without_snapshot(store_env):
    path, _ = store_env
    write_sqlite(path, [Point(ALERT, {"stream": "boiler", "stream_class": "sensor"}, {
        "severity": 0.99, "peak_raw_score": 3.0, "end_ns": T0 + 701 * MINUTE, "duration_s": 60.0,
        "state": "closed", "model_version": "m1"}, T0 + 700 * MINUTE)])
    at = run_page("views/inspector.py")
    assert metrics(at)["Stream"] == "boiler"
    assert "no window snapshot" in texts(at.info)


# --------------------------------------------------------------------------------------------- replay score
def test_replay_score_matches_the_nab_scorer(store_env):
    from dashboards.live_nab import live_nab_score

    path, _ = store_env
    store = SQLiteStore(path)
    expected = live_nab_score(store.window_scores("pump-1", T0, T0 + 600 * MINUTE, max_points=None),
                              store.labels("pump-1"))
    at = run_page("views/replay_score.py")
    shown = metrics(at)
    assert shown["NAB Standard"] == f"{expected.profiles['standard'].score:.1f}"
    assert shown["NAB Low FN"] == f"{expected.profiles['reward_low_FN_rate'].score:.1f}"
    assert shown["Label windows reached"] == "1 / 1"
    assert shown["Detected / missed / false"] == "1 / 0 / 0"
    assert len(at.get("vega_lite_chart")) == 1


def test_replay_score_without_nab_scorer(store_env, monkeypatch):
    import models.metrics

    monkeypatch.delattr(models.metrics, "nab", raising=False)
    monkeypatch.setitem(sys.modules, "models.metrics.nab", None)  # makes the import fail
    at = run_page("views/replay_score.py")
    assert "NAB scorer unavailable" in texts(at.warning)
    assert metrics(at)["Scored windows"] == "600"


# --------------------------------------------------------------------------------------------- images
def test_images_from_store(store_env):
    at = run_page("views/images.py")
    table = at.dataframe[0].value
    assert list(table["Defect"]) == ["broken_large", "good"]  # highest score first
    assert metrics(at)["Image AUROC (bottle)"] == "1.000"
    assert len(at.image) == 3  # image, overlay, mask of the top-scored (defect) image
    assert not at.warning
    at.selectbox(key="images_defect").set_value("good").run()
    assert list(at.dataframe[0].value["Defect"]) == ["good"]
    assert "No ground-truth mask" in texts(at.info)


def test_images_from_bench_folder(store_env, tmp_path, monkeypatch):
    monkeypatch.setenv("SCALOWATCH_DASHBOARD_IMAGE_DIR", str(tmp_path))
    folder = tmp_path / "bench"
    rows = [{"category": p.tags["category"], "defect": p.tags["defect"], **p.fields}
            for p in image_points(folder / "files")]
    for row in rows:  # relative paths are resolved against the results file
        for key in ("path", "map_path", "mask_path"):
            row[key] = str(Path(row[key]).relative_to(folder)) if row[key] else ""
        row["model_version"] = "m1"
    pd.DataFrame(rows).to_csv(folder / "image_results.csv", index=False)
    at = run_page("views/images.py")
    at.radio(key="images_source").set_value("Bench output folder").run()
    at.text_input(key="images_folder").input(str(folder)).run()
    assert not at.exception
    assert list(at.dataframe[0].value["Defect"]) == ["broken_large", "good"]
    assert list(at.dataframe[0].value["Model"]) == ["m1", "m1"]  # which saved detector scored each image
    assert not at.warning
    at.text_input(key="images_folder").input(str(tmp_path / "nope")).run()
    assert "No folder" in texts(at.warning)


def test_images_page_reads_no_folder_outside_the_configured_ones(store_env, tmp_path, monkeypatch):
    """Issue 9 #11: the dashboard has no login; typing /etc or a ../ path must not make it read that folder."""
    monkeypatch.setenv("SCALOWATCH_DASHBOARD_IMAGE_DIR", str(tmp_path / "served"))
    (tmp_path / "served").mkdir()
    secret = tmp_path / "private"
    secret.mkdir()
    pd.DataFrame([{"category": "c", "defect": "good", "path": "/etc/hostname", "score": 0.1, "map_path": "",
                   "mask_path": ""}]).to_csv(secret / "image_results.csv", index=False)
    at = run_page("views/images.py")
    at.radio(key="images_source").set_value("Bench output folder").run()
    for typed in (str(secret), str(tmp_path / "served" / ".." / "private"), "/etc"):
        at.text_input(key="images_folder").input(typed).run()
        assert not at.exception
        assert "outside the folders this dashboard serves" in texts(at.warning)
        assert not at.dataframe


def test_images_missing_file_is_a_warning(store_env, tmp_path):
    for png in (tmp_path / "images").glob("broken_large_*.png"):
        if not png.name.endswith("_mask.png"):
            png.unlink()
    at = run_page("views/images.py")
    assert "cannot read image" in texts(at.warning)


# --------------------------------------------------------------------------------------------- scoreboard
def test_scoreboard_renders_what_exists(store_env, tmp_path):
    from PIL import Image

    results = tmp_path / "results"
    (results / "nab").mkdir(parents=True)
    (results / "nab" / "scoreboard.json").write_text(json.dumps({
        "recon": {"standard": 61.2, "reward_low_FP_rate": 55.0, "reward_low_FN_rate": 66.1},
        "numenta": {"standard": 70.1, "reward_low_FP_rate": 63.1, "reward_low_FN_rate": 74.3}}))
    (results / "mvtec.json").write_text(json.dumps({
        "run": {"git_commit": "0123456789abcdef", "wall_seconds": 12.4, "started_utc": "2026-01-01T00:00:00+00:00"},
        "categories": [{"i_auroc": 0.99, "p_auroc": 0.97, "category": "bottle"}]}))
    (results / "broken.json").write_text("{not json")
    (results / "odd.json").write_text(json.dumps([1, 2, 3]))
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(results / "roc.png")
    at = run_page("views/scoreboard.py")
    frames = [df.value for df in at.dataframe]
    assert len(frames) == 2
    nab = next(f for f in frames if "name" in f.columns)
    assert list(nab["name"]) == ["recon", "numenta"] and nab["standard"].tolist() == [61.2, 70.1]
    mvtec = next(f for f in frames if "category" in f.columns)
    assert list(mvtec.columns)[0] == "category" and mvtec["i_auroc"].tolist() == [0.99]
    assert "commit 0123456789" in texts(at.caption) and "12 s" in texts(at.caption)
    assert "cannot read broken.json" in texts(at.warning)
    assert len(at.get("json")) == 3  # the odd file inline, the two tables' raw JSON in expanders
    assert "nab / scoreboard" in texts(at.subheader)


def test_streams_page_with_100_streams_and_100k_points(tmp_path, monkeypatch):
    """The volume the dashboard must stay responsive with: every query is downsampled by the store."""
    from dashboard_data import window_points
    from dashboards.views.streams import CHART_POINTS, SPARK_BUCKETS

    path = tmp_path / "big.sqlite"
    points = []
    for s in range(100):
        points += window_points(f"s{s:03d}", "sensor", n=1000, step=MINUTE // 4)
    write_sqlite(path, points)
    monkeypatch.setenv("SCALOWATCH_DASHBOARD_STORE", "sqlite")
    monkeypatch.setenv("SCALOWATCH_DASHBOARD_SQLITE_PATH", str(path))
    import time

    t = time.perf_counter()
    at = run_page("views/streams.py", query={"stream": ["s001", "s050"], "range": "all"})
    print(f"streams page, 100 streams x 1000 points: {time.perf_counter() - t:.2f} s incl. app start (noisy)")
    overview = at.dataframe[0].value
    assert len(overview) == 100
    assert max(len(x) for x in overview["Recent score"]) <= SPARK_BUCKETS
    assert len(at.get("vega_lite_chart")) == 4
    assert "1000 points" in texts(at.caption) and CHART_POINTS >= 1000


def test_result_files_with_several_tables_and_run_metadata():
    from dashboards.results import as_tables

    data = {"benchmark": "nab", "run": {"git_commit": "abc", "machine": {"cpu_count": 2}},
            "scores": {"numenta": {"standard": 70.1}, "gauss": {"standard": 39.6}},
            "cases": [{"kind": "sensor", "latency_s": {"p50": 0.5}}], "note": "noisy"}
    tables = dict(as_tables(data))
    assert set(tables) == {"scores", "cases"}  # the run block is metadata, not a table
    assert list(tables["scores"]["name"]) == ["numenta", "gauss"]
    assert tables["cases"].loc[0, "latency_s p50"] == 0.5
    assert as_tables({"a": 1, "b": "x"})[0][1].to_dict("records") == [{"a": 1, "b": "x"}]
    assert as_tables([1, 2]) == [] and as_tables("text") == []


# --------------------------------------------------------------------------------------------- empty / down
@pytest.mark.parametrize("page", PAGES)
def test_empty_store_says_so(empty_env, page):
    at = run_page(page)
    assert not at.error
    assert at.info, f"{page} shows no message for an empty store"


@pytest.mark.parametrize("page", PAGES[:5])
def test_missing_sqlite_store_is_a_clear_error(tmp_path, monkeypatch, page):
    monkeypatch.setenv("SCALOWATCH_DASHBOARD_STORE", "sqlite")
    monkeypatch.setenv("SCALOWATCH_DASHBOARD_SQLITE_PATH", str(tmp_path / "absent.sqlite"))
    at = run_page(page)
    assert "store is unavailable" in texts(at.error) and "does not exist" in texts(at.error)


def test_influx_down_is_a_clear_error_without_the_token(monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("SCALOWATCH_DASHBOARD_STORE", "influx")
    monkeypatch.setenv("SCALOWATCH_INFLUX__URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("SCALOWATCH_INFLUX__TOKEN", "very-secret-token")
    monkeypatch.setenv("SCALOWATCH_INFLUX__TIMEOUT_MS", "2000")
    for page in (None, "views/streams.py"):
        at = run_page(page)
        shown = texts(at.error) + texts(at.caption) + texts(at.markdown)
        assert "store is unavailable" in shown and "unreachable" in shown
        assert "very-secret-token" not in shown


# --------------------------------------------------------------------------------------------- real InfluxDB
@pytest.mark.integration
def test_pages_on_a_real_influxdb_with_feedback_and_an_outage(influx_server, monkeypatch):
    """The same pages through InfluxQL; a verdict goes in as line protocol; a stopped server is a message,
    and the page recovers when it is back."""
    from dashboards.store import InfluxQLStore
    from test_dashboard_store import new_influx_database, write_influx

    scen = scenario()
    database = new_influx_database(influx_server)
    write_influx(influx_server, database, scen.points)
    monkeypatch.setenv("SCALOWATCH_DASHBOARD_STORE", "influx")
    monkeypatch.setenv("SCALOWATCH_INFLUX__URL", influx_server.url)
    monkeypatch.setenv("SCALOWATCH_INFLUX__QUERY_URL", influx_server.query_url)
    monkeypatch.setenv("SCALOWATCH_INFLUX__DATABASE", database)
    monkeypatch.setenv("SCALOWATCH_INFLUX__BUCKET", database)
    monkeypatch.setenv("SCALOWATCH_INFLUX__TIMEOUT_MS", "3000")

    at = run_page()
    assert list(at.dataframe[0].value["Stream"]) == ["fan-a", "pump-1"]
    at.selectbox(key="review_alert").set_value(("fan-a", scen.fan_alert_ns))
    at.radio(key="review_verdict").set_value("ack")
    at.button[0].click().run()
    assert not at.exception and not at.error
    fb = InfluxQLStore(influx_server.query_url, database).feedback()
    assert list(zip(fb["stream"], fb["time_ns"], fb["verdict"])) == [("fan-a", scen.fan_alert_ns, "ack")]
    assert at.dataframe[0].value.set_index("Stream").loc["fan-a", "Verdict"] == "Acknowledged"

    streams_page = run_page("views/streams.py")
    assert len(streams_page.get("vega_lite_chart")) == 2

    influx_server.stop()
    try:
        st.cache_data.clear()
        at.run()
        assert not at.exception
        assert "store is unavailable" in texts(at.error)
    finally:
        influx_server.start()
    st.cache_data.clear()
    at.run()
    assert not at.error and list(at.dataframe[0].value["Stream"]) == ["fan-a", "pump-1"]
