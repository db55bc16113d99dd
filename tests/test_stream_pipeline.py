"""StreamProcessor: warm-up → training → scoring → alerts → points, offsets held until written, restart replay."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pytest

from models.calibration import LikelihoodConfig
from streamer.alerts import AlertPolicy
from streamer.model_registry import ModelRegistry, ModelStatus
from streamer.offsets import OffsetTracker
from streamer.pipeline import StreamClassConfig, StreamProcessor
from streamer.point_builders import decode_snapshot
from streamer.points import ALERT, WINDOW_SCORE, WINDOW_SNAPSHOT
from streamer.windowing import WindowSpec
from stream_models import WindowStatsModel

S = 1_000_000_000
P = 60 * S


@dataclass(frozen=True)
class Sample:
    stream: str
    ts_ns: int
    value: float


class StoreDown(RuntimeError):
    pass


class DictStore:
    """An idempotent in-memory store keyed like InfluxDB (measurement, tags, time); can be 'down'."""

    def __init__(self):
        self.points = {}
        self.down = False
        self.writes = 0

    def write(self, points):
        if self.down:
            raise StoreDown("store down")
        self.writes += 1
        for p in points:
            self.points[(p.measurement, p.series_key(), p.time_ns)] = p

    def measurement(self, name):
        return [p for (m, _, _), p in sorted(self.points.items(), key=lambda kv: kv[0][2]) if m == name]


CLASSES = {"sensor": StreamClassConfig("sensor", "sensor", WindowSpec(length=16, hop=4, period_ns=P))}


def series(n=600, spike_at=450, seed=0):
    rng = np.random.default_rng(seed)
    v = np.sin(np.arange(n) / 6.0) + 0.05 * rng.standard_normal(n)
    v[spike_at:spike_at + 3] += 8.0
    return [(1_000_001 * P + k * P, float(x)) for k, x in enumerate(v)]


def make(tmp_path, background=False, gate=None, warmup=20, shared=False):
    registry = ModelRegistry(tmp_path / "models", lambda cls: WindowStatsModel(gate), WindowStatsModel.load,
                             warmup_windows=warmup, background=background, shared=shared)
    proc = StreamProcessor(CLASSES, registry, policy=AlertPolicy(threshold=0.99, hysteresis=0.1, close_after=2),
                           likelihood=LikelihoodConfig(learning_period=20, historic_window=200, short_window=1),
                           max_batch=8, max_wait_s=0.0)
    return registry, proc


def feed(proc, stream, samples, part=0, start=0, store=None, tracker=None, every=25):
    for off, (t, v) in enumerate(samples[start:], start=start):
        if tracker is not None:
            tracker.seen(part, off)
        assert proc.add_sensor("sensor", [Sample(stream, t, v)], (part, off)) is None
        if off % every == 0:
            proc.step()
            if store is not None:
                proc.flush(store)
                if tracker is not None:
                    tracker.committed(tracker.positions(proc.holds()))


def test_warmup_then_scores_and_alert_on_spike(tmp_path):
    registry, proc = make(tmp_path)
    store = DictStore()
    data = series()
    feed(proc, "m1", data, store=store)
    proc.step(force=True)
    proc.flush(store)
    scores = store.measurement(WINDOW_SCORE)
    n_windows = (len(data) - 16) // 4 + 1
    assert proc.stats.windows == n_windows
    assert len(scores) == n_windows - 20  # the 20 warm-up windows trained the model
    assert registry.status(("sensor", "m1")) is ModelStatus.READY
    assert (tmp_path / "models" / "sensor" / "m1" / "config.json").exists()
    # the spike raises an alert whose window covers it; every flagged window lies inside some alert
    alerts = store.measurement(ALERT)
    spike_ns = data[450][0]
    spike_alerts = [a for a in alerts if spike_ns <= a.time_ns <= spike_ns + 16 * P]
    assert len(spike_alerts) == 1
    a = spike_alerts[0]
    assert a.fields["state"] == "closed" and a.fields["end_ns"] > a.time_ns
    assert a.fields["peak_raw_score"] == max(p.fields["raw_score"] for p in scores)
    flagged = [p for p in scores if p.fields["alert"] == 1]
    assert flagged and all(any(x.time_ns <= p.time_ns < x.fields["end_ns"] for x in alerts) for p in flagged)
    snaps = store.measurement(WINDOW_SNAPSHOT)
    assert {p.time_ns for p in snaps} >= {p.time_ns for p in flagged}
    arrays = decode_snapshot(snaps[0].fields["payload"])
    assert arrays["samples"].shape == (16,) and arrays["anomaly_map"].shape == (4, 4)
    fields = scores[-1].fields
    assert 0.0 <= fields["score"] <= 1.0 and fields["threshold"] == 0.99 and fields["scorer"] == "stats"


def test_offsets_held_until_the_store_accepts_then_released(tmp_path):
    registry, proc = make(tmp_path)
    store = DictStore()
    tracker = OffsetTracker()
    data = series(300)
    feed(proc, "m1", data[:200], tracker=tracker)
    proc.step(force=True)
    assert proc.outbox_points > 0
    store.down = True
    with pytest.raises(StoreDown):
        proc.flush(store)
    held = tracker.positions(proc.holds())[0]
    # window j covers offsets 4j..4j+15; the first scored one (j = 20, after 20 warm-up windows) holds 80
    assert held == 80
    store.down = False
    proc.flush(store)
    released = tracker.positions(proc.holds())[0]
    assert released > held
    # after writing, only the stream's open window remains held
    assert released >= 200 - 16


def test_restart_from_commit_loses_and_duplicates_nothing(tmp_path):
    data = series(600)
    store = DictStore()
    tracker = OffsetTracker()
    _, proc = make(tmp_path)
    feed(proc, "m1", data[:370], store=store, tracker=tracker)
    resume = tracker.committed_position(0)
    assert resume is not None and 0 < resume < 370
    # crash: nothing beyond the last commit survives; a fresh processor reloads the saved model
    registry2, proc2 = make(tmp_path)
    feed(proc2, "m1", data, start=resume, store=store, tracker=tracker)
    proc2.step(force=True)
    proc2.flush(store)
    assert registry2.status(("sensor", "m1")) is ModelStatus.READY
    ends = [p.time_ns for p in store.measurement(WINDOW_SCORE)]
    n_windows = (len(data) - 16) // 4 + 1
    assert len(ends) == len(set(ends)) == n_windows - 20
    expected = [data[0][0] + (16 - 1 + 4 * i) * P for i in range(20, n_windows)]
    assert ends == expected


def test_late_sample_rejected_with_reason(tmp_path):
    _, proc = make(tmp_path)
    data = series(100)
    feed(proc, "m1", data)
    rej = proc.add_sensor("sensor", [Sample("m1", data[10][0], 0.0)], (0, 999))
    assert rej is not None and rej.reason == "late"


def test_background_training_does_not_stall_other_streams(tmp_path):
    gate = threading.Event()
    registry, proc = make(tmp_path, background=True, gate=gate)
    store = DictStore()
    # stream "ready" has a model on disk already
    ready = WindowStatsModel().fit_windows(np.random.default_rng(1).standard_normal((30, 16)))
    ready.save(tmp_path / "models" / "sensor" / "ready")
    data = series(200)
    feed(proc, "slow", data[:150])  # reaches warm-up, training blocks on the gate
    feed(proc, "ready", data[:150], store=store)
    proc.step(force=True)
    proc.flush(store)
    assert registry.status(("sensor", "slow")) is ModelStatus.TRAINING
    by_stream = {p.tags["stream"] for p in store.measurement(WINDOW_SCORE)}
    assert by_stream == {"ready"}
    gate.set()
    registry.wait(10)
    proc.step(force=True)
    proc.flush(store)
    slow_scores = [p for p in store.measurement(WINDOW_SCORE) if p.tags["stream"] == "slow"]
    n_windows = (150 - 16) // 4 + 1
    assert len(slow_scores) == n_windows - 20  # windows queued during training were scored afterwards
    registry.close()


def test_shared_model_batches_streams_together(tmp_path):
    registry, proc = make(tmp_path, shared=True, warmup=10)
    store = DictStore()
    for name in ("a", "b", "c"):
        feed(proc, name, series(120, spike_at=1000))
    proc.step(force=True)
    proc.flush(store)
    assert registry.status(("sensor", "_shared")) is ModelStatus.READY
    assert (tmp_path / "models" / "sensor" / "_shared" / "config.json").exists()
    per_stream = {}
    for p in store.measurement(WINDOW_SCORE):
        per_stream[p.tags["stream"]] = per_stream.get(p.tags["stream"], 0) + 1
    n_windows = (120 - 16) // 4 + 1
    assert sum(per_stream.values()) == 3 * n_windows - 10
    assert len({p.fields["model_version"] for p in store.measurement(WINDOW_SCORE)}) == 1


def test_drop_partitions_forgets_streams_and_their_holds(tmp_path):
    _, proc = make(tmp_path)
    tracker = OffsetTracker()
    feed(proc, "x", series(100), part=0, tracker=tracker)
    feed(proc, "y", series(100), part=1, tracker=tracker)
    assert proc.drop_partitions([1]) == 1
    assert all(1 not in h for h in proc.holds())
    assert proc.stream_count() == 1


class BlindToLevelModel(WindowStatsModel):
    """Scores every window the same (like a per-window-normalised scalogram model facing a pure level shift) but
    reports level_z/scale_z the way ScalogramPipeline does."""

    def score_windows(self, windows):
        batch = super().score_windows(windows)
        level = np.asarray(windows, dtype=np.float64).mean(axis=1)
        extras = dict(batch.extras, level_z=(level - self.mu[0]) / self.sd[0], scale_z=np.zeros(len(level)))
        return type(batch)(scores=np.ones_like(batch.scores), maps=batch.maps,
                           reconstructions=batch.reconstructions, extras=extras)


@pytest.mark.parametrize("level_shift", [True, False])
def test_level_shift_alerts_come_from_level_z(tmp_path, level_shift):
    registry = ModelRegistry(tmp_path / "models", lambda cls: BlindToLevelModel(), BlindToLevelModel.load,
                             warmup_windows=20, background=False)
    proc = StreamProcessor(CLASSES, registry, policy=AlertPolicy(threshold=0.99, hysteresis=0.1),
                           likelihood=LikelihoodConfig(learning_period=10, historic_window=200, short_window=1),
                           max_batch=8, max_wait_s=0.0, level_shift=level_shift)
    store = DictStore()
    rng = np.random.default_rng(3)
    v = np.sin(np.arange(500) / 6.0) + 0.05 * rng.standard_normal(500)
    v[400:] += 5.0  # the level jumps and stays
    feed(proc, "m", [(1_000_001 * P + k * P, float(x)) for k, x in enumerate(v)], store=store)
    proc.step(force=True)
    proc.flush(store)
    alerts = store.measurement(ALERT)
    if level_shift:
        assert alerts and all(a.time_ns >= 1_000_001 * P + 400 * P for a in alerts)
    else:
        assert not alerts


def test_shared_model_is_the_starting_point_until_the_own_model_is_trained(tmp_path):
    shared = WindowStatsModel().fit_windows(np.random.default_rng(2).standard_normal((40, 16)))
    shared.save(tmp_path / "models" / "sensor" / "_shared")
    registry = ModelRegistry(tmp_path / "models", lambda cls: WindowStatsModel(), WindowStatsModel.load,
                             warmup_windows=20, background=False, shared_start=True)
    proc = StreamProcessor(CLASSES, registry, likelihood=LikelihoodConfig(learning_period=5), max_batch=8,
                           max_wait_s=0.0)
    store = DictStore()
    feed(proc, "m1", series(300, spike_at=1000), store=store)
    proc.step(force=True)
    proc.flush(store)
    points = store.measurement(WINDOW_SCORE)
    n_windows = (300 - 16) // 4 + 1
    assert len(points) == n_windows  # no warm-up gap: the shared model scored the first windows
    versions = [p.fields["model_version"] for p in points]
    own = registry.model(("sensor", "m1")).version
    assert versions[0] == shared.version and versions[-1] == own != shared.version
    switch = versions.index(own)
    assert set(versions[:switch]) == {shared.version} and set(versions[switch:]) == {own}
    assert (tmp_path / "models" / "sensor" / "m1" / "config.json").exists()


def test_graceful_restart_keeps_calibration_and_open_alert(tmp_path):
    """save_states after the last write; a new processor restores them: the open alert closes later with the
    same start (one alert, not a stale open one plus a new one) and calibration does not start over."""
    data = series(600, spike_at=450)
    policy = AlertPolicy(threshold=0.99, hysteresis=0.1, close_after=2)
    lik = LikelihoodConfig(learning_period=20, historic_window=200, short_window=1)

    def make_proc():
        registry = ModelRegistry(tmp_path / "models", lambda cls: WindowStatsModel(), WindowStatsModel.load,
                                 warmup_windows=20, background=False)
        return StreamProcessor(CLASSES, registry, policy=policy, likelihood=lik, max_batch=8, max_wait_s=0.0,
                               state_dir=tmp_path / "models" / "_state")

    store = DictStore()
    tracker = OffsetTracker()
    first = make_proc()
    cut = 456  # just after the spike: the alert is open
    feed(first, "m1", data[:cut], store=store, tracker=tracker, every=1)
    assert first._streams[("sensor", "m1")].alerts.current is not None
    assert first.outbox_points == 0 and first.save_states() == 1
    state_file = tmp_path / "models" / "_state" / "sensor" / "m1.json"
    assert state_file.exists()
    second = make_proc()
    feed(second, "m1", data, start=tracker.committed_position(0), store=store, tracker=tracker)
    second.step(force=True)
    second.flush(store)
    assert state_file.exists()  # kept: until the next checkpoint it is the state a crash would resume from
    alerts = store.measurement(ALERT)
    spike_alerts = [a for a in alerts if data[450][0] <= a.time_ns <= data[450][0] + 16 * P]
    assert len(spike_alerts) == 1 and spike_alerts[0].fields["state"] == "closed"
    st = second._streams[("sensor", "m1")]
    assert st.calibrator.count > 100  # history carried over, not a fresh learning period
    ends = [p.time_ns for p in store.measurement(WINDOW_SCORE)]
    n_windows = (len(data) - 16) // 4 + 1
    assert len(ends) == len(set(ends)) == n_windows - 20
