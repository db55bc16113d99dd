"""The worker's /healthz and /metrics (streamer/health.py), over a real socket on 127.0.0.1."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from streamer.health import HEALTH_PATH, HealthServer, WorkerSnapshot


def snapshot(taken: float, **changes) -> WorkerSnapshot:
    base = dict(taken=taken, records=120, samples_scored=3000, points_written=2990, dead_letters=4, commits=7,
                checkpoints=2, sink_failures=1, live_streams=3, held_streams=0, backlog_samples=50,
                assigned_partitions=4, input_paused=False, sink_down=False)
    return WorkerSnapshot(**{**base, **changes})


def get(server: HealthServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def clock():
    now = [1000.0]
    return now


def test_health_is_starting_then_ok_then_stalled_when_the_loop_stops_reporting(clock):
    with HealthServer("127.0.0.1", 0, stall_s=30, clock=lambda: clock[0]) as server:
        status, body = get(server, HEALTH_PATH)
        assert status == 200 and json.loads(body)["status"] == "starting"  # loading models, waiting for a broker
        server.publish(snapshot(clock[0]))
        clock[0] += 29
        status, body = get(server, HEALTH_PATH)
        report = json.loads(body)
        assert status == 200 and report["status"] == "ok" and report["records"] == 120
        clock[0] += 2  # 31 s without a report from the loop
        status, body = get(server, HEALTH_PATH)
        assert status == 503 and json.loads(body)["status"] == "stalled"
        server.publish(snapshot(clock[0], held_streams=2, input_paused=True, sink_down=True))
        status, body = get(server, HEALTH_PATH)  # held streams, a paused input, a store that is down: reported,
        report = json.loads(body)              # not a reason to restart the worker
        assert status == 200 and report["held_streams"] == 2 and report["sink_down"] is True


def test_metrics_carry_the_loops_counters_in_the_prometheus_format(clock):
    from prometheus_client.parser import text_string_to_metric_families

    with HealthServer("127.0.0.1", 0, clock=lambda: clock[0]) as server:
        status, text = get(server, "/metrics")
        assert status == 200 and "scalowatch_records_total" not in text  # nothing to report before the loop runs
        server.publish(snapshot(clock[0] - 2.5, held_streams=1, input_paused=True, stream_cap=1252,
                                stream_cap_used=19, loop_seconds={"poll": 1.5, "score": 7.25}))
        status, text = get(server, "/metrics")
    families = list(text_string_to_metric_families(text))
    values = {s.name: s.value for family in families for s in family.samples}
    phases = {s.labels["phase"]: s.value for family in families for s in family.samples
              if s.name == "scalowatch_loop_seconds_total"}
    assert phases == {"poll": 1.5, "score": 7.25}
    assert values["scalowatch_records_total"] == 120 and values["scalowatch_samples_scored_total"] == 3000
    assert values["scalowatch_points_written_total"] == 2990 and values["scalowatch_dead_letters_total"] == 4
    assert values["scalowatch_held_streams"] == 1 and values["scalowatch_input_paused"] == 1
    assert values["scalowatch_sink_down"] == 0 and values["scalowatch_backlog_samples"] == 50
    assert values["scalowatch_loop_age_seconds"] == pytest.approx(2.5)
    assert values["scalowatch_stream_cap"] == 1252 and values["scalowatch_stream_cap_used"] == 19
    assert values["scalowatch_live_streams"] == 3  # a stream collecting a long training part counts as several
    assert "scalowatch_process_resident_memory_bytes" in values


def test_a_stopped_server_frees_its_port():
    server = HealthServer("127.0.0.1", 0).start()
    port = server.port
    server.stop()
    with HealthServer("127.0.0.1", port) as again:  # bindable again at once
        assert get(again, HEALTH_PATH)[0] == 200
