"""End-to-end: real Kafka-protocol broker (Tansu) and real InfluxDB, the real monitor and a tiny real model.

Expected window times are computed here with plain arithmetic (absolute grid, windows end at multiples of the
hop), independently of streamer/windowing.py, and compared with what InfluxDB returns over InfluxQL.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from streamer.config import InfluxSettings, KafkaSettings, MonitorSettings, Settings, StoreSettings
from streamer.replay import SeriesSource, read_nab_csv, read_wav, replay

pytestmark = pytest.mark.integration
pytest.importorskip("models.pipeline", reason="needs the ScalogramPipeline (models/pipeline.py)")

REPO = Path(__file__).resolve().parents[1]
NAB = REPO / "streamer" / "demo_data" / "nab"
JUMPSUP = NAB / "data" / "artificialWithAnomaly" / "art_daily_jumpsup.csv"
WAV = REPO / "streamer" / "demo_data" / "fan_id00_normal2s_abnormal1s.wav"

WINDOW, HOP, WARMUP = 32, 8, 12


# ---------------------------------------------------------------------------------------------------- helpers
def make_settings(kafka_broker: str, influx, tmp_path: Path, **monitor) -> Settings:
    uid = uuid.uuid4().hex[:8]
    base = dict(
        model_dir=tmp_path / "models", scorer="recon", sensor_preset="tiny", audio_preset="tiny", train_steps=15,
        train_batch_size=8, sensor_window=WINDOW, sensor_hop=HOP, audio_window=1024, audio_hop=512,
        warmup_windows=WARMUP, warmup_samples=80, likelihood_history_windows=200, batch_max_wait_ms=50,
        commit_interval_ms=200, poll_timeout_ms=100, sink_retry_initial_s=0.2, sink_retry_max_s=1.0,
        alert_cooldown_s=0, scorer_options={"lam": 1.0, "calibration_samples": 32},
    )
    base.update(monitor)
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=kafka_broker, sensor_topic=f"t{uid}.sensors",
                            audio_topic=f"t{uid}.audio", alerts_topic=f"t{uid}.alerts",
                            dead_letter_topic=f"t{uid}.dlq", group_id=f"g{uid}", session_timeout_ms=6000,
                            heartbeat_interval_ms=1000, max_poll_records=200, max_message_bytes=4096),
        influx=InfluxSettings(url=influx.url, bucket=influx.database, org="scalowatch"),
        store=StoreSettings(kind="influx"),
        monitor=MonitorSettings(**base),
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as SCALOWATCH_* variables, for a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALOWATCH_")}
    for section, values in settings.model_dump().items():
        for name, value in values.items():
            if value is None:
                continue
            if hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            if isinstance(value, bool):
                value = str(value).lower()
            elif isinstance(value, (dict, list)):
                value = json.dumps(value)
            env[f"SCALOWATCH_{section.upper()}__{name.upper()}"] = str(value)
    return env


def create_topics(settings: Settings, partitions: int = 4) -> None:
    from streamer.kafka_io import ensure_topics

    k = settings.kafka
    ensure_topics(settings, {k.sensor_topic: partitions, k.audio_topic: partitions, k.dead_letter_topic: 1,
                             k.alerts_topic: 1})


def nab_source(stream: str, n: int, path: Path = JUMPSUP) -> SeriesSource:
    full = read_nab_csv(path)
    return SeriesSource(path, stream, full.times_ns[:n], full.values[:n])


def send(settings: Settings, sources) -> None:
    from streamer.kafka_io import make_producer

    producer = make_producer(settings)
    try:
        replay(sources, producer, sensor_topic=settings.kafka.sensor_topic, audio_topic=settings.kafka.audio_topic,
               progress=False)
    finally:
        producer.close()


def expected_ends(times_ns: np.ndarray, window: int, hop: int, warmup: int) -> list[int]:
    """Window end times for a regular series on the absolute grid, minus the warm-up windows."""
    period = int(np.median(np.diff(times_ns)))
    k0, k1 = int(times_ns[0] // period), int(times_ns[-1] // period)
    first_end = -(-(k0 + window - 1) // hop) * hop
    ends = [k * period for k in range(first_end, k1 + 1, hop)]
    return ends[warmup:]


def scores(influx, stream: str) -> list[dict]:
    return influx.rows(f"SELECT * FROM window_score WHERE stream = '{stream}'")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def count(influx, stream: str) -> int:
    try:
        return len(scores(influx, stream))
    except Exception:  # store down while we look
        return -1


class MonitorThread:
    """The real monitor (built exactly as by `scalowatch monitor`) in a thread of this process."""

    def __init__(self, settings: Settings):
        from streamer.cli_stream import build_monitor

        self.stop = threading.Event()
        self.monitor = build_monitor(settings)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.monitor.run(self.stop)
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def start(self) -> "MonitorThread":
        self.thread.start()
        return self

    def join(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "monitor did not stop"
        if self.error is not None:
            raise self.error


def assert_scores_match(influx, stream: str, source: SeriesSource, ends: list[int]) -> None:
    rows = scores(influx, stream)
    times = [r["time"] for r in rows]
    assert len(times) == len(set(times)) == len(ends)
    assert times == ends
    value_at = dict(zip(source.times_ns.tolist(), source.values.tolist()))
    for r in rows:
        assert r["value"] == pytest.approx(value_at[r["time"]], rel=1e-6)
        assert np.isfinite(r["raw_score"]) and 0.0 <= r["score"] <= 1.0
        assert r["window_start_ns"] == r["time"] - (WINDOW - 1) * 300 * 10**9
        assert r["model_version"] and r["scorer"] == "recon"


# ---------------------------------------------------------------------------------------------------- tests
def test_nab_replay_every_window_scored_in_influx(kafka_broker, influx_server, tmp_path):
    settings = make_settings(kafka_broker, influx_server, tmp_path)
    create_topics(settings)
    stream = f"nab-{uuid.uuid4().hex[:6]}"
    source = nab_source(stream, 400)
    ends = expected_ends(source.times_ns, WINDOW, HOP, WARMUP)
    mon = MonitorThread(settings).start()
    try:
        send(settings, [source])
        wait_for(lambda: count(influx_server, stream) >= len(ends), 120, f"{len(ends)} scores")
    finally:
        mon.join()
    assert_scores_match(influx_server, stream, source, ends)
    # the stream's model was saved where a restart finds it, and it is the model that wrote the scores
    from models.pipeline import ScalogramPipeline

    saved = ScalogramPipeline.load(tmp_path / "models" / "sensor" / stream)
    assert {r["model_version"] for r in scores(influx_server, stream)} == {saved.version}


def test_kill_mid_stream_and_restart_loses_and_duplicates_nothing(kafka_broker, influx_server, tmp_path):
    settings = make_settings(kafka_broker, influx_server, tmp_path, state_checkpoint_s=0.2)
    create_topics(settings)
    stream = f"kill-{uuid.uuid4().hex[:6]}"
    source = nab_source(stream, 1000)
    ends = expected_ends(source.times_ns, WINDOW, HOP, WARMUP)
    # The first half is in the broker before the monitor starts; the rest only after it was killed, so the kill
    # always lands mid-stream (with the stream's open window buffered and uncommitted).
    send(settings, [SeriesSource(JUMPSUP, stream, source.times_ns[:500], source.values[:500])])
    env = settings_env(settings)
    runner = [sys.executable, str(REPO / "tests" / "monitor_runner.py")]
    log1, log2 = tmp_path / "first.log", tmp_path / "second.log"
    with open(log1, "wb") as out:
        first = subprocess.Popen(runner, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            wait_for(lambda: count(influx_server, stream) >= len(ends) // 4, 120, "the first scores")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(30)
    partial = count(influx_server, stream)
    assert 0 < partial < len(ends), log1.read_text()[-3000:]
    send(settings, [SeriesSource(JUMPSUP, stream, source.times_ns[500:], source.values[500:])])
    with open(log2, "wb") as out:
        second = subprocess.run([*runner, "--idle-exit-s", "8"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=REPO, timeout=240)
    assert second.returncode == 0, log2.read_text()[-3000:]
    assert_scores_match(influx_server, stream, source, ends)
    # the restart resumed from a commit, it did not start over (offsets were committed before the kill)
    assert "loaded model" in log2.read_text() or "training" in log2.read_text()
    # and the calibration resumed from the last checkpoint instead of re-learning (no alerts while learning)
    assert "calibration and alert state restored" in log2.read_text(), log2.read_text()[-3000:]


def test_influx_outage_no_commit_then_catch_up(kafka_broker, influx_server, tmp_path):
    settings = make_settings(kafka_broker, influx_server, tmp_path)
    create_topics(settings)
    stream = f"outage-{uuid.uuid4().hex[:6]}"
    source = nab_source(stream, 700)
    ends = expected_ends(source.times_ns, WINDOW, HOP, WARMUP)
    first_part = SeriesSource(JUMPSUP, stream, source.times_ns[:300], source.values[:300])
    second_part = SeriesSource(JUMPSUP, stream, source.times_ns[300:], source.values[300:])
    mon = MonitorThread(settings).start()
    try:
        send(settings, [first_part])
        n_before = len([e for e in ends if e <= source.times_ns[299]])
        wait_for(lambda: count(influx_server, stream) >= n_before, 120, "scores of the first part")
        influx_server.stop()
        try:
            send(settings, [second_part])
            wait_for(lambda: mon.monitor.stats.sink_failures >= 2, 60, "failed writes while InfluxDB is down")
            # Nothing past the first unwritten window may be committed while the store is down.
            first_unwritten = ends[n_before]
            first_sample_offset = int(np.searchsorted(source.times_ns, first_unwritten - (WINDOW - 1) * 300 * 10**9))
            committed = [pos for (topic, _), pos in mon.monitor.tracker.committed_positions().items()
                         if topic == settings.kafka.sensor_topic]
            assert committed and max(committed) <= first_sample_offset
            # input is paused (while poll keeps the group membership alive) until the store is back
            wait_for(lambda: mon.monitor.stats.paused_polls > 0, 30, "paused polling")
            assert count(influx_server, stream) == -1
        finally:
            influx_server.start()
        wait_for(lambda: count(influx_server, stream) >= len(ends), 120, "catch-up after the outage")
    finally:
        mon.join()
    assert_scores_match(influx_server, stream, source, ends)


def test_bad_messages_go_to_dead_letter_good_ones_scored(kafka_broker, influx_server, tmp_path):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka_read import read_topic

    from streamer.messages import encode_audio

    settings = make_settings(kafka_broker, influx_server, tmp_path)
    create_topics(settings)
    k = settings.kafka
    stream = f"good-{uuid.uuid4().hex[:6]}"
    source = nab_source(stream, 300)
    ends = expected_ends(source.times_ns, WINDOW, HOP, WARMUP)
    send(settings, [source])
    pcm, headers = encode_audio("mic", 10**18, np.zeros(800, np.float32), 16000)
    bad_rate = [(n, b"8000" if n == "sample_rate" else v) for n, v in headers]
    bad_dtype = [(n, b"int8" if n == "dtype" else v) for n, v in headers]
    late_ts = int(source.times_ns[10]) // 10**6
    bad = [
        (k.sensor_topic, b"b1", b'{"stream": "b1", "ts": 1, "value": ', None, "malformed_json"),
        (k.sensor_topic, b"b2", b'{"stream": "b2", "value": 1.0}', None, "missing_field"),
        (k.sensor_topic, b"b3", b'{"stream": "b3", "ts": 1, "value": NaN}', None, "non_finite"),
        (k.sensor_topic, b"b4", b'{"stream": "b4", "ts": 1, "value": "high"}', None, "bad_type"),
        (k.sensor_topic, b"b5", b'{"stream": "b5", "ts": 1, "value": 1, "pad": "' + b"x" * 5000 + b'"}', None,
         "too_large"),
        (k.sensor_topic, stream.encode(), f'{{"stream": "{stream}", "ts": {late_ts}, "value": 1}}'.encode(), None,
         "late"),
        (k.audio_topic, b"mic", pcm, bad_rate, "bad_sample_rate"),
        (k.audio_topic, b"mic", pcm, bad_dtype, "bad_dtype"),
        (k.audio_topic, b"mic", pcm[:-1], headers, "bad_length"),
    ]
    producer = KafkaProducer(bootstrap_servers=kafka_broker)
    for topic, key, value, hdrs, _ in bad:
        producer.send(topic, key=key, value=value, headers=hdrs)
    producer.flush()
    producer.close()
    mon = MonitorThread(settings).start()
    try:
        wait_for(lambda: count(influx_server, stream) >= len(ends), 120, "the good stream's scores")
        wait_for(lambda: mon.monitor.stats.dead_letters >= len(bad), 30, "all bad records rejected")
    finally:
        mon.join()
    assert_scores_match(influx_server, stream, source, ends)
    records = read_topic(KafkaConsumer(bootstrap_servers=kafka_broker, group_id=None), k.dead_letter_topic,
                         len(bad))
    letters = []
    for rec in records:
        h = dict(rec.headers)
        letters.append((rec.value, h["dlq.reason"].decode(), h["dlq.topic"].decode()))
    assert len(letters) == len(bad)
    for topic, _, value, _, reason in bad:
        assert (value, reason, topic) in letters


def test_audio_stream_end_to_end(kafka_broker, influx_server, tmp_path):
    settings = make_settings(kafka_broker, influx_server, tmp_path)
    create_topics(settings)
    stream = f"fan-{uuid.uuid4().hex[:6]}"
    source = read_wav(WAV, stream=stream, chunk_samples=1600)
    n = len(source.data)
    period = 10**9 // 16000
    k0 = source.start_ns // period
    first_end = -(-(k0 + 1023) // 512) * 512
    ends = [k * period for k in range(first_end, k0 + n, 512)][WARMUP:]
    mon = MonitorThread(settings).start()
    try:
        send(settings, [source])
        wait_for(lambda: count(influx_server, stream) >= len(ends), 120, "audio scores")
    finally:
        mon.join()
    rows = scores(influx_server, stream)
    assert [r["time"] for r in rows] == ends
    assert all(r["stream_class"] == "audio" and np.isfinite(r["raw_score"]) for r in rows)
    # value = RMS of the window's last hop, checked against the WAV itself
    samples = source.data.astype(np.float64) / 32768.0
    r = rows[5]
    last = int(r["time"] // period - k0)
    assert r["value"] == pytest.approx(np.sqrt(np.mean(samples[last - 511:last + 1] ** 2)), rel=1e-4)


def streams_covering_partitions(prefix: str, partitions: int) -> list[str]:
    """One stream id per partition (the producer's murmur2 key hashing), so every member gets work."""
    from kafka.partitioner.default import murmur2

    chosen: dict[int, str] = {}
    i = 0
    while len(chosen) < partitions:
        name = f"{prefix}-{i}"
        chosen.setdefault((murmur2(name.encode()) & 0x7FFFFFFF) % partitions, name)
        i += 1
    return [chosen[p] for p in range(partitions)]


def test_two_consumers_in_one_group_share_partitions(kafka_broker, influx_server, tmp_path):
    settings = make_settings(kafka_broker, influx_server, tmp_path)
    create_topics(settings, partitions=4)
    names = streams_covering_partitions(f"pair-{uuid.uuid4().hex[:6]}", 4)
    sources = [nab_source(name, 250) for name in names]
    ends = expected_ends(sources[0].times_ns, WINDOW, HOP, WARMUP)
    a = MonitorThread(settings).start()
    b = MonitorThread(settings).start()
    try:
        sensor = settings.kafka.sensor_topic

        def split():
            pa = {tp.partition for tp in a.monitor.consumer.assignment() if tp.topic == sensor}
            pb = {tp.partition for tp in b.monitor.consumer.assignment() if tp.topic == sensor}
            return (pa, pb) if pa and pb and len(pa | pb) == 4 else None

        parts_a, parts_b = wait_for(split, 60, "both members to share the 4 partitions")
        assert not parts_a & parts_b
        send(settings, sources)
        for s in sources:
            wait_for(lambda s=s: count(influx_server, s.stream) >= len(ends), 180, f"scores of {s.stream}")
    finally:
        a.join()
        b.join()
    for s in sources:
        assert_scores_match(influx_server, s.stream, s, ends)
    assert a.monitor.stats.records > 0 and b.monitor.stats.records > 0


def test_sigterm_finishes_writes_and_commits(kafka_broker, influx_server, tmp_path):
    """SIGTERM: the monitor writes and commits what it has and exits 0; a restart re-reads only the open window."""
    import re

    settings = make_settings(kafka_broker, influx_server, tmp_path)
    create_topics(settings)
    stream = f"term-{uuid.uuid4().hex[:6]}"
    source = nab_source(stream, 300)
    ends = expected_ends(source.times_ns, WINDOW, HOP, WARMUP)
    send(settings, [source])
    env = settings_env(settings)
    runner = [sys.executable, str(REPO / "tests" / "monitor_runner.py")]
    log1, log2 = tmp_path / "first.log", tmp_path / "second.log"
    with open(log1, "wb") as out:
        first = subprocess.Popen(runner, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            wait_for(lambda: count(influx_server, stream) >= len(ends), 120, "all scores")
            first.send_signal(signal.SIGTERM)
            assert first.wait(60) == 0, log1.read_text()[-3000:]
        finally:
            if first.poll() is None:
                first.kill()
    text = log1.read_text()
    assert "shutting down" in text and "monitor stopped" in text
    with open(log2, "wb") as out:
        second = subprocess.run([*runner, "--idle-exit-s", "5"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=REPO, timeout=120)
    assert second.returncode == 0
    records = int(re.search(r"MonitorStats\(records=(\d+)", log2.read_text()).group(1))
    # only the samples of the window still open at the end (< one window + one hop) are read again
    assert records <= WINDOW + HOP
    assert_scores_match(influx_server, stream, source, ends)


def test_alerts_reach_store_snapshots_and_alerts_topic(kafka_broker, influx_server, tmp_path):
    from kafka import KafkaConsumer

    from streamer.point_builders import decode_snapshot

    settings = make_settings(kafka_broker, influx_server, tmp_path, alert_threshold=0.99, alert_close_after=2)
    create_topics(settings)
    stream = f"jump-{uuid.uuid4().hex[:6]}"
    period = 60 * 10**9
    t = (1_700_000_000 * 10**9 // period) * period + np.arange(600) * period
    rng = np.random.default_rng(5)
    v = np.sin(np.arange(600) / 7.0) + 0.05 * rng.standard_normal(600)
    v[450:480] += 20.0  # a 30-sample excursion far outside anything seen before
    source = SeriesSource(Path("synthetic"), stream, t, v)
    mon = MonitorThread(settings).start()
    try:
        send(settings, [source])
        wait_for(lambda: count(influx_server, stream) >= len(expected_ends(t, WINDOW, HOP, WARMUP)), 120, "scores")
    finally:
        mon.join()
    alerts = influx_server.rows(f"SELECT * FROM alert WHERE stream = '{stream}'")
    assert alerts, "the excursion raised no alert"
    assert any(t[450] <= a["time"] <= t[480] + WINDOW * period for a in alerts)
    assert all(a["state"] in ("open", "closed") for a in alerts)
    flagged = [r["time"] for r in scores(influx_server, stream) if r["alert"] == 1]
    snaps = influx_server.rows(f"SELECT * FROM window_snapshot WHERE stream = '{stream}'")
    assert flagged and {r["time"] for r in snaps} >= set(flagged)
    arrays = decode_snapshot(snaps[0]["payload"])
    assert arrays["samples"].shape == (WINDOW,) and arrays["scalogram"].ndim == 2
    assert arrays["anomaly_map"].shape == arrays["scalogram"].shape
    consumer = KafkaConsumer(settings.kafka.alerts_topic, bootstrap_servers=kafka_broker,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000, group_id=None)
    published = [json.loads(rec.value) for rec in consumer]
    consumer.close()
    starts = {a["time"] for a in alerts}
    assert published and {p["start_ns"] for p in published} == starts
    assert {p["stream"] for p in published} == {stream}


def test_input_pauses_while_windows_queue_behind_a_training_model(kafka_broker, influx_server, tmp_path):
    """Back-pressure: more queued windows than max_backlog_windows pause the partitions until the model is
    trained; then everything is scored (no loss, no stall)."""
    settings = make_settings(kafka_broker, influx_server, tmp_path, max_backlog_windows=3, train_steps=40)
    create_topics(settings)
    stream = f"backlog-{uuid.uuid4().hex[:6]}"
    source = nab_source(stream, 500)
    ends = expected_ends(source.times_ns, WINDOW, HOP, WARMUP)
    mon = MonitorThread(settings).start()
    try:
        send(settings, [source])
        wait_for(lambda: count(influx_server, stream) >= len(ends), 120, "all scores")
    finally:
        mon.join()
    assert mon.monitor.stats.paused_polls > 0
    assert_scores_match(influx_server, stream, source, ends)
