"""End-to-end: real Kafka-protocol broker (Tansu) and real InfluxDB, the real monitor and the real detector
(its model barely trained).

Every sample a sensor stream sends must come back from InfluxDB over InfluxQL, scored exactly as the detector
scores the same samples offline (issue 11: what users run is what the benchmarks measure).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from models.detector import PRESETS
from streamer.config import InfluxSettings, KafkaSettings, MonitorSettings, Settings, StoreSettings
from streamer.replay import SeriesSource, read_nab_csv, read_wav, replay

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
NAB = REPO / "streamer" / "demo_data" / "nab"
JUMPSUP = NAB / "data" / "artificialWithAnomaly" / "art_daily_jumpsup.csv"
WAV = REPO / "streamer" / "demo_data" / "fan_id00_normal2s_abnormal1s.wav"

TRAIN = 200  # each sensor stream's training part (samples)


# ---------------------------------------------------------------------------------------------------- helpers
def make_settings(kafka_broker: str, influx, tmp_path: Path, **monitor) -> Settings:
    uid = uuid.uuid4().hex[:8]
    base = dict(
        model_dir=tmp_path / "models",
        sensor_detector_options={"steps": 10, "max_train_windows": 64, "train_samples": TRAIN},
        # three windows of the audio preset: a shorter training part would shrink the window (a third of it)
        audio_detector_options={"steps": 5, "max_train_windows": 32,
                                "train_samples": 3 * PRESETS["audio"].config.window},
        commit_interval_ms=200, poll_timeout_ms=100, sink_retry_initial_s=0.2, sink_retry_max_s=1.0,
        state_checkpoint_s=0.2,
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


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metric(base_url: str, name: str) -> float:
    """One sample of a worker's /metrics (-1 while it cannot be read)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(base_url + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return -1
    return next((s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name), -1)


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as SCALOWATCH_* variables, for a child process."""
    from streamer.config import as_env

    return as_env(settings, os.environ)


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


def expected_times(source: SeriesSource) -> list[int]:
    """Every sample of a sensor stream is scored (its training part too): one point per timestamp."""
    return sorted(set(source.times_ns.tolist()))


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


def committed(settings: Settings, topic: str) -> int:
    """The monitor's group's committed offsets on ``topic``, summed (read without joining the group)."""
    from kafka import TopicPartition

    from streamer.kafka_io import make_consumer

    consumer = make_consumer(settings)
    try:
        consumer.topics()  # fetches the metadata partitions_for_topic answers from
        return sum(consumer.committed(TopicPartition(topic, p)) or 0
                   for p in consumer.partitions_for_topic(topic) or ())
    finally:
        consumer.close()


def count(influx, stream: str) -> int:
    try:
        return len(scores(influx, stream))
    except Exception:  # store down while we look
        return -1


class MonitorThread:
    """The real monitor (built exactly as by `scalowatch monitor`) in a thread of this process."""

    def __init__(self, settings: Settings):
        from scalowatch.cli_stream import build_monitor

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


def assert_scores_match(influx, stream: str, source: SeriesSource, model_dir: Path) -> None:
    """Every sample stored once, with its value, scored as the stream's detector scores it offline (1e-6)."""
    from models.detector import FittedDetector, score_series
    from streamer.model_registry import safe_name

    rows = scores(influx, stream)
    times = [r["time"] for r in rows]
    assert times == expected_times(source)
    value_at = dict(zip(source.times_ns.tolist(), source.values.tolist()))
    fitted = FittedDetector.load(model_dir / "sensor" / safe_name(stream), device="cpu")
    offline = score_series(fitted, source.values)["product"]
    for r, want, why in zip(rows, offline.scores, offline.decided_by):
        assert r["value"] == pytest.approx(value_at[r["time"]], rel=1e-6)
        assert r["score"] == pytest.approx(want, rel=0, abs=1e-6)
        assert r["decided_by"] == why
        assert r["model_version"] == fitted.version and r["scorer"] == "recon"


# ---------------------------------------------------------------------------------------------------- tests
def test_nab_replay_every_sample_scored_in_influx_as_the_detector_scores_it(kafka_broker, influx_server, tmp_path):
    """Issue 11: NAB files through the real broker → monitor → InfluxDB; read back with InfluxQL, every point equals
    the detector's offline score of the same sample."""
    settings = make_settings(kafka_broker, influx_server, tmp_path)
    create_topics(settings)
    uid = uuid.uuid4().hex[:6]
    sources = [nab_source(f"nab-{uid}-jumpsup", 400),
               nab_source(f"nab-{uid}-ec2", 400, NAB / "data" / "realKnownCause" /
                          "ec2_request_latency_system_failure.csv")]
    mon = MonitorThread(settings).start()
    try:
        send(settings, sources)
        for s in sources:
            wait_for(lambda s=s: count(influx_server, s.stream) >= 400, 120, f"400 scores of {s.stream}")
    finally:
        mon.join()
    for s in sources:
        assert_scores_match(influx_server, s.stream, s, tmp_path / "models")


def test_kill_mid_stream_and_restart_loses_and_duplicates_nothing(kafka_broker, influx_server, tmp_path):
    settings = make_settings(kafka_broker, influx_server, tmp_path)
    create_topics(settings)
    stream = f"kill-{uuid.uuid4().hex[:6]}"
    source = nab_source(stream, 1000)
    ends = expected_times(source)
    # The first half is in the broker before the monitor starts; the rest only after it was killed, so the kill
    # always lands mid-stream (with the stream's open window buffered and uncommitted).
    send(settings, [SeriesSource(JUMPSUP, stream, source.times_ns[:500], source.values[:500])])
    env = settings_env(settings)
    runner = [sys.executable, str(REPO / "tests" / "monitor_runner.py")]
    log1, log2 = tmp_path / "first.log", tmp_path / "second.log"
    with open(log1, "wb") as out:
        first = subprocess.Popen(runner, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            # Scores are written before the round's checkpoint and commit: wait for a commit past the training part
            # too, so that the kill lands after a saved detector state (else the restart rightly starts over).
            wait_for(lambda: count(influx_server, stream) >= len(ends) // 4
                     and committed(settings, settings.kafka.sensor_topic) > TRAIN, 120,
                     "the first scores and a commit past the training part")
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
    assert_scores_match(influx_server, stream, source, tmp_path / "models")
    # the restart resumed from a commit with the stream's saved state, it did not start over
    assert "detector and alert state restored" in log2.read_text(), log2.read_text()[-3000:]


def test_influx_outage_no_commit_then_catch_up(kafka_broker, influx_server, tmp_path):
    settings = make_settings(kafka_broker, influx_server, tmp_path)
    create_topics(settings)
    stream = f"outage-{uuid.uuid4().hex[:6]}"
    source = nab_source(stream, 700)
    ends = expected_times(source)
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
            # Nothing past the first unwritten sample may be committed while the store is down.
            first_sample_offset = n_before
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
    assert_scores_match(influx_server, stream, source, tmp_path / "models")


def test_bad_messages_go_to_dead_letter_good_ones_scored(kafka_broker, influx_server, tmp_path):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka_read import read_topic

    from streamer.messages import encode_audio

    settings = make_settings(kafka_broker, influx_server, tmp_path)
    create_topics(settings)
    k = settings.kafka
    stream = f"good-{uuid.uuid4().hex[:6]}"
    source = nab_source(stream, 300)
    ends = expected_times(source)
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
    assert_scores_match(influx_server, stream, source, tmp_path / "models")
    records = read_topic(KafkaConsumer(bootstrap_servers=kafka_broker, group_id=None), k.dead_letter_topic,
                         len(bad))
    letters = []
    for rec in records:
        h = dict(rec.headers)
        letters.append((rec.value, h["dlq.reason"].decode(), h["dlq.topic"].decode()))
    assert len(letters) == len(bad)
    for topic, _, value, _, reason in bad:
        assert (value, reason, topic) in letters


def test_a_record_whose_scoring_raises_is_dead_lettered_and_the_stream_goes_on(kafka_broker, influx_server, tmp_path,
                                                                             monkeypatch):
    """A sample the scoring cannot take (a bug, an input no check foresaw) held its stream, and its partition's
    commit, until a restart that re-read the partition and failed again. On the real servers: the batch is scored
    again record by record, the record that fails again reaches the dead-letter topic (``scoring_failed``,
    re-encoded so that it decodes as it was sent), every other sample is scored into InfluxDB, and everything read
    is committed."""
    from kafka import KafkaConsumer
    from kafka_read import read_topic

    from models.detector.online import DetectorState
    from streamer.messages import decode_sensor

    poison = 7777.0
    real_update = DetectorState.update

    def update(self, samples, scores):
        if np.any(samples == poison):
            raise RuntimeError("the state cannot take this sample")
        return real_update(self, samples, scores)

    monkeypatch.setattr(DetectorState, "update", update)
    settings = make_settings(kafka_broker, influx_server, tmp_path)
    create_topics(settings)
    stream = f"poison-{uuid.uuid4().hex[:6]}"
    source = nab_source(stream, 450)
    values = source.values.copy()
    values[330] = poison
    source = SeriesSource(source.path, stream, source.times_ns, values)
    send(settings, [SeriesSource(JUMPSUP, stream, source.times_ns[:300], values[:300])])
    mon = MonitorThread(settings).start()
    last = int(source.times_ns[-1])
    try:
        wait_for(lambda: count(influx_server, stream) >= 300, 120, "the first 300 scores")
        send(settings, [SeriesSource(JUMPSUP, stream, source.times_ns[300:400], values[300:400])])
        wait_for(lambda: mon.monitor.stats.dead_letters >= 1, 120, "the failed record dead-lettered")
        send(settings, [SeriesSource(JUMPSUP, stream, source.times_ns[400:], values[400:])])
        wait_for(lambda: any(r["time"] == last for r in scores(influx_server, stream)), 120, "the last sample scored")
    finally:
        mon.join()
    tracker = mon.monitor.tracker
    read = [p for p in tracker.committed_positions() if p[0] == settings.kafka.sensor_topic]
    assert read and all(tracker.committed_position(p) == tracker.highest_read(p) + 1 for p in read)
    letters = read_topic(KafkaConsumer(bootstrap_servers=kafka_broker, group_id=None),
                         settings.kafka.dead_letter_topic, mon.monitor.stats.dead_letters)
    assert {dict(r.headers)["dlq.reason"] for r in letters} == {b"scoring_failed"}
    given_up = sorted(x.ts_ns for r in letters for x in decode_sensor(r.value, r.key))
    stored = sorted(r["time"] for r in scores(influx_server, stream))
    assert int(source.times_ns[330]) in given_up and not set(given_up) & set(stored)
    assert sorted(given_up + stored) == expected_times(source)  # nothing lost, nothing twice


class _NotUtf8(str):
    """A header key whose wire bytes are not UTF-8 (kafka-python's producer encodes keys with ``str.encode``):
    the record the broker stores is what a non-Python client could send."""

    def encode(self, *args, **kwargs):
        return b"\xff\xfe-key"


def test_a_record_the_client_cannot_parse_is_dead_lettered_and_the_stream_goes_on(kafka_broker, influx_server,
                                                                                   tmp_path):
    """Issue 9 #11: a non-UTF-8 header key makes kafka-python raise inside poll(), at every poll and after every
    restart. The monitor must dead-letter that record (reason unreadable_record, with where it was) and score
    every other record of the partition."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka_read import read_topic

    from streamer.messages import encode_sensor

    settings = make_settings(kafka_broker, influx_server, tmp_path)
    create_topics(settings)
    stream = f"hdr-{uuid.uuid4().hex[:6]}"
    source = nab_source(stream, 300)
    producer = KafkaProducer(bootstrap_servers=kafka_broker, linger_ms=0)
    topic = settings.kafka.sensor_topic
    for i, (t, v) in enumerate(zip(source.times_ns.tolist(), source.values.tolist())):
        producer.send(topic, key=stream.encode(), value=encode_sensor(stream, t, v)).get(10)
        if i == 250:
            bad = producer.send(topic, key=stream.encode(), value=b'{"stream": "x", "ts": 1, "value": 1}',
                                headers=[(_NotUtf8("k"), b"v")]).get(10)
    producer.close()
    mon = MonitorThread(settings).start()
    try:
        wait_for(lambda: count(influx_server, stream) >= 300, 120, "all 300 scores")
        wait_for(lambda: mon.monitor.stats.dead_letters >= 1, 30, "the unreadable record dead-lettered")
        assert mon.thread.is_alive() and mon.error is None
    finally:
        mon.join()
    assert_scores_match(influx_server, stream, source, tmp_path / "models")
    (letter,) = read_topic(KafkaConsumer(bootstrap_servers=kafka_broker, group_id=None),
                           settings.kafka.dead_letter_topic, 1)
    headers = dict(letter.headers)
    assert headers["dlq.reason"] == b"unreadable_record"
    assert (headers["dlq.partition"], headers["dlq.offset"]) == (str(bad.partition).encode(),
                                                                 str(bad.offset).encode())


def test_audio_stream_end_to_end(kafka_broker, influx_server, tmp_path):
    settings = make_settings(kafka_broker, influx_server, tmp_path)
    create_topics(settings)
    stream = f"fan-{uuid.uuid4().hex[:6]}"
    source = read_wav(WAV, stream=stream, chunk_samples=1600)
    n, rate = len(source.data), 16_000
    window, hop = PRESETS["audio"].config.window, PRESETS["audio"].config.hop
    ends = [source.start_ns + (k * 10**9) // rate for k in range(window - 1, n, hop)]  # indexed by sample count
    mon = MonitorThread(settings).start()
    try:
        send(settings, [source])
        wait_for(lambda: count(influx_server, stream) >= len(ends), 120, "audio scores")
    finally:
        mon.join()
    rows = scores(influx_server, stream)
    assert [r["time"] for r in rows] == ends
    assert all(r["stream_class"] == "audio" and np.isfinite(r["score"]) for r in rows)
    # value = RMS of the window's last hop, checked against the WAV itself
    samples = source.data.astype(np.float64) / 32768.0
    last = window - 1 + 5 * hop
    assert rows[5]["value"] == pytest.approx(np.sqrt(np.mean(samples[last - hop + 1:last + 1] ** 2)), rel=1e-4)


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
    ends = expected_times(sources[0])
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
        assert_scores_match(influx_server, s.stream, s, tmp_path / "models")
    assert a.monitor.stats.records > 0 and b.monitor.stats.records > 0


def test_a_member_joining_mid_stream_takes_over_without_killing_the_first(kafka_broker, influx_server, tmp_path):
    """Issue 9 #1: kafka-python 3 calls the rebalance listener on its IO thread, where a blocking commit raises.
    Member A holds uncommitted progress (its stream states are never checkpointed here, so every commit is
    pinned) when B joins: A must survive, B must take over its share from the last commit, and every sample
    must end up stored once, scored exactly as offline."""
    settings = make_settings(kafka_broker, influx_server, tmp_path, state_checkpoint_s=3600.0)
    create_topics(settings, partitions=4)
    names = streams_covering_partitions(f"join-{uuid.uuid4().hex[:6]}", 4)
    sources = [nab_source(name, 300) for name in names]
    ends = expected_times(sources[0])
    send(settings, sources)
    a = MonitorThread(settings).start()
    b = None
    try:
        wait_for(lambda: a.monitor.stats.records >= 40 and a.monitor.stats.points_written > 0, 120,
                 "A to read and score records")
        b = MonitorThread(settings).start()
        wait_for(lambda: b.monitor.stats.records > 0, 120, "B to get a share of the partitions")
        for s in sources:
            wait_for(lambda s=s: count(influx_server, s.stream) >= len(ends), 180, f"scores of {s.stream}")
        assert a.thread.is_alive() and a.error is None, "the first member died in the rebalance"
        # The client's default assignors are eager: A is told that *all* its partitions are revoked before it
        # rejoins. Those that went to B must be dropped by A once the join completes — not kept because a poll
        # returned while the client still listed them (A would go on scoring, alerting and checkpointing B's
        # streams beside B).
        sensor = settings.kafka.sensor_topic

        def a_holds_only_its_own():
            mine = {(tp.topic, tp.partition) for tp in a.monitor.consumer.assignment() if tp.topic == sensor}
            held = {p for p in a.monitor.processor.partitions() if p[0] == sensor}
            return held if mine and held and held <= mine and len(mine) < 4 else None

        wait_for(a_holds_only_its_own, 60, "A to drop the streams of the partitions that went to B")
    finally:
        a.join()
        if b is not None:
            b.join()
    for s in sources:
        assert_scores_match(influx_server, s.stream, s, tmp_path / "models")


def test_one_round_takes_in_a_bounded_number_of_samples_and_reads_the_rest_again(kafka_broker, influx_server,
                                                                              tmp_path):
    """Issue 9 #10: max_poll_records bounds records, not samples. Records of 300 samples each with a budget of
    700 samples a round: each round takes three records and seeks back to the fourth, so no round outlasts
    max.poll.interval.ms however big the records are; nothing is skipped or scored twice."""
    from kafka import KafkaProducer

    from streamer.messages import encode_sensor_batch

    settings = make_settings(kafka_broker, influx_server, tmp_path, max_samples_per_round=700)
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"max_message_bytes": 100_000})})
    create_topics(settings)
    stream = f"big-{uuid.uuid4().hex[:6]}"
    source = nab_source(stream, 1800)
    producer = KafkaProducer(bootstrap_servers=kafka_broker)
    for lo in range(0, 1800, 300):
        pairs = zip(source.times_ns[lo:lo + 300].tolist(), source.values[lo:lo + 300].tolist())
        producer.send(settings.kafka.sensor_topic, key=stream.encode(), value=encode_sensor_batch(stream, pairs))
    producer.flush()
    producer.close()
    mon = MonitorThread(settings).start()
    try:
        wait_for(lambda: count(influx_server, stream) >= 1800, 120, "all 1,800 scores")
    finally:
        mon.join()
    assert mon.monitor.stats.deferred_records >= 1
    assert mon.monitor.stats.records == 6  # each record handled once: deferred ones were not counted as read
    assert_scores_match(influx_server, stream, source, tmp_path / "models")


def test_sigterm_finishes_writes_and_commits(kafka_broker, influx_server, tmp_path):
    """SIGTERM: the monitor writes and commits what it has and exits 0; a restart re-reads only the open window."""
    import re

    settings = make_settings(kafka_broker, influx_server, tmp_path, health_port=free_port())
    create_topics(settings)
    stream = f"term-{uuid.uuid4().hex[:6]}"
    source = nab_source(stream, 300)
    ends = expected_times(source)
    send(settings, [source])
    env = settings_env(settings)
    runner = [sys.executable, str(REPO / "tests" / "monitor_runner.py")]
    log1, log2 = tmp_path / "first.log", tmp_path / "second.log"
    with open(log1, "wb") as out:
        first = subprocess.Popen(runner, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            wait_for(lambda: count(influx_server, stream) >= len(ends), 120, "all scores")
            # the worker's own account over HTTP (streamer/health.py): alive, and every point counted
            health = f"http://127.0.0.1:{settings.monitor.health_port}"
            wait_for(lambda: metric(health, "scalowatch_points_written_total") >= len(ends), 30, "metrics")
            with urllib.request.urlopen(health + "/healthz", timeout=5) as resp:
                report = json.loads(resp.read())
            assert resp.status == 200 and report["status"] == "ok" and report["assigned_partitions"] >= 1
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
    # every sample was scored, written, its state saved and committed: nothing is read again
    assert records == 0
    assert_scores_match(influx_server, stream, source, tmp_path / "models")


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
        wait_for(lambda: count(influx_server, stream) >= len(t), 120, "scores")
    finally:
        mon.join()
    alerts = influx_server.rows(f"SELECT * FROM alert WHERE stream = '{stream}'")
    assert alerts, "the excursion raised no alert"
    assert any(t[450] <= a["time"] <= t[480] for a in alerts)
    assert all(a["state"] in ("open", "closed") and a["decided_by"] for a in alerts)
    snaps = influx_server.rows(f"SELECT * FROM window_snapshot WHERE stream = '{stream}'")
    assert {r["time"] for r in snaps} == {a["time"] for a in alerts}  # a picture of every alert's opening
    from models.detector import FittedDetector
    from streamer.model_registry import safe_name

    window = FittedDetector.load(tmp_path / "models" / "sensor" / safe_name(stream), device="cpu").window
    arrays = decode_snapshot(snaps[0]["payload"])
    assert arrays["samples"].shape == (window,) and arrays["scalogram"].ndim == 2
    assert arrays["anomaly_map"].shape == arrays["scalogram"].shape
    consumer = KafkaConsumer(settings.kafka.alerts_topic, bootstrap_servers=kafka_broker,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000, group_id=None)
    published = [json.loads(rec.value) for rec in consumer]
    consumer.close()
    starts = {a["time"] for a in alerts}
    assert published and {p["start_ns"] for p in published} == starts
    assert {p["stream"] for p in published} == {stream}


def test_input_pauses_while_samples_queue_behind_a_fitting_detector(kafka_broker, influx_server, tmp_path):
    """Back-pressure: more waiting samples than max_backlog_samples pause the partitions until the detector is
    fitted; then everything is scored (no loss, no stall)."""
    settings = make_settings(kafka_broker, influx_server, tmp_path, max_backlog_samples=3,
                             sensor_detector_options={"steps": 60, "max_train_windows": 64, "train_samples": TRAIN})
    create_topics(settings)
    stream = f"backlog-{uuid.uuid4().hex[:6]}"
    source = nab_source(stream, 500)
    ends = expected_times(source)
    mon = MonitorThread(settings).start()
    try:
        send(settings, [source])
        wait_for(lambda: count(influx_server, stream) >= len(ends), 120, "all scores")
    finally:
        mon.join()
    assert mon.monitor.stats.paused_polls > 0
    assert_scores_match(influx_server, stream, source, tmp_path / "models")
