"""StreamProcessor: training part → fit → every sample scored by the detector → alerts → points; offsets held until
written; restarts lose and duplicate nothing; the monitor's scores are the detector's."""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass

import numpy as np
import pytest

from models.detector import PRESETS, FittedDetector, score_series
from streamer import memory
from streamer.assemble import build_processor
from streamer.config import MonitorSettings
from streamer.messages import AudioChunk
from streamer.offsets import OffsetTracker
from streamer.points import ALERT, WINDOW_SCORE, WINDOW_SNAPSHOT

S = 1_000_000_000
P = 60 * S
TRAIN = 240
FAST = {"steps": 3, "max_train_windows": 32, "train_samples": TRAIN}


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

    def measurement(self, name, stream=None):
        rows = [p for (m, _, _), p in sorted(self.points.items(), key=lambda kv: kv[0][2]) if m == name]
        return [p for p in rows if stream is None or p.tags.get("stream") == stream]


def values(n=600, spike_at=450, seed=0):
    rng = np.random.default_rng(seed)
    v = 5 + np.sin(np.arange(n) * 2 * np.pi / 24) + 0.05 * rng.standard_normal(n)
    v[spike_at:spike_at + 3] += 8.0
    return v


def stamped(v, start=1_000_001 * P):
    return [(start + k * P, float(x)) for k, x in enumerate(v)]


def settings(tmp_path, **kw):
    return MonitorSettings(model_dir=tmp_path / "models", sensor_detector_options=dict(FAST), **kw)


def make(tmp_path, background=False, **kw):
    return build_processor(settings(tmp_path, **kw), background=background)


def feed(proc, stream, samples, part=0, start=0, store=None, tracker=None, every=25):
    """Feed samples one record each; every ``every`` records score, write, save states and commit (the monitor's
    round with a checkpoint each time)."""
    for off, (t, v) in enumerate(samples[start:], start=start):
        if tracker is not None:
            tracker.seen(part, off)
        assert proc.add_sensor("sensor", [Sample(stream, t, v)], (part, off)) is None
        if off % every == 0:
            proc.step()
            if store is not None:
                proc.flush(store)
                if tracker is not None:
                    proc.save_states()
                    tracker.committed(tracker.positions(proc.holds()))


def drain(proc, store):
    """Score everything (the tests' rounds stay within the default budget): a step may only start the fit of a
    training part completed since the last one."""
    for _ in range(2):
        proc.registry.wait()
        proc.step()
    proc.flush(store)


def test_every_sample_is_scored_with_the_detectors_own_scores(tmp_path):
    """Issue 11: the monitor's points are the detector's offline scores; the training part is scored too."""
    proc, store = make(tmp_path), DictStore()
    v = values()
    feed(proc, "a", stamped(v), store=store)
    drain(proc, store)
    points = store.measurement(WINDOW_SCORE)
    assert [p.time_ns for p in points] == [t for t, _ in stamped(v)]  # nothing unscored, warm-up included
    fitted = FittedDetector.load(tmp_path / "models" / "sensor" / "a", device="cpu")
    offline = score_series(fitted, v)["product"]
    np.testing.assert_allclose([p.fields["score"] for p in points], offline.scores, rtol=0, atol=1e-9)
    assert [p.fields["decided_by"] for p in points] == list(offline.decided_by)
    alerts = store.measurement(ALERT)
    assert alerts and any(450 * P <= a.time_ns - stamped(v)[0][0] <= 460 * P for a in alerts)
    assert store.measurement(WINDOW_SNAPSHOT)  # the inspector's picture of the opening alert
    assert points[0].fields["threshold"] == pytest.approx(PRESETS["nab"].alert_threshold)


def test_a_streams_windows_go_through_the_model_once_its_training_part_too(tmp_path, monkeypatch):
    """The fit scores the training part's windows for the detector's reference state; the monitor then scores the
    stream from its first sample. The training part's windows come from the fit's pass, not the model again."""
    counted = []
    score_windows = FittedDetector.score_windows

    def counting(self, windows):
        counted.append(len(windows))
        return score_windows(self, windows)

    monkeypatch.setattr(FittedDetector, "score_windows", counting)
    proc, store = make(tmp_path), DictStore()
    v = values()
    feed(proc, "a", stamped(v), store=store)
    drain(proc, store)
    assert len(store.measurement(WINDOW_SCORE)) == v.size
    fitted = FittedDetector.load(tmp_path / "models" / "sensor" / "a", device="cpu")
    assert sum(counted) == (v.size - fitted.window) // fitted.hop + 1


def test_offsets_are_held_until_the_store_accepts_then_released(tmp_path):
    proc, store, tracker = make(tmp_path), DictStore(), OffsetTracker()
    samples = stamped(values(400))
    feed(proc, "a", samples[:100], tracker=tracker, store=store)
    # training part collecting: each checkpoint saves the samples collected so far (the last one after sample 75),
    # so only the samples since then hold the commit
    assert tracker.committed_position(0) == 76
    feed(proc, "a", samples, start=100, tracker=tracker)
    proc.step()
    store.down = True
    with pytest.raises(StoreDown):
        proc.flush(store)
    assert min(h.get(0, 10**9) for h in proc.holds()) == 76
    store.down = False
    proc.flush(store)
    assert tracker.positions(proc.holds()).get(0, 0) < 400  # scored and written, but not yet in a saved stream state
    proc.save_states()
    assert tracker.positions(proc.holds()) == {0: 400}
    assert len(store.measurement(WINDOW_SCORE)) == 400


def test_restart_from_the_commit_with_a_checkpoint_loses_and_duplicates_nothing(tmp_path):
    samples = stamped(values())
    ref_store = DictStore()
    ref = make(tmp_path / "ref")
    feed(ref, "a", samples, store=ref_store)
    drain(ref, ref_store)

    store, tracker = DictStore(), OffsetTracker()
    proc = make(tmp_path / "run")
    feed(proc, "a", samples[:380], store=store, tracker=tracker)
    proc.flush(store)
    assert proc.outbox_points == 0
    proc.save_states()  # a no-op when the last round's checkpoint already holds everything scored
    folder = tmp_path / "run" / "models" / "_state" / "sensor"
    # the histories went to one journal, appended at each checkpoint; the JSON keeps the rest (0.9 MB before)
    assert len(list(folder.glob("a.*.journal"))) == 1 and (folder / "a.json").stat().st_size < 20_000
    assert tracker.committed_position(0) == 376  # the samples after the last step are still held
    resume = 300  # the last *successful* commit was older than the checkpoint (e.g. a commit failed)
    # crash: a new processor re-reads from the commit; what it already scored is skipped, the rest scored again
    again = make(tmp_path / "run")
    feed(again, "a", samples, start=resume, store=store)
    drain(again, store)
    got = {p.time_ns: p.fields["score"] for p in store.measurement(WINDOW_SCORE)}
    want = {p.time_ns: p.fields["score"] for p in ref_store.measurement(WINDOW_SCORE)}
    assert got.keys() == want.keys()
    np.testing.assert_allclose([got[t] for t in want], list(want.values()), rtol=0, atol=1e-9)
    assert again.stats.replayed > 0


@pytest.mark.parametrize("lost", ["unreadable", "gone"])
def test_a_stream_whose_state_is_lost_resumes_from_its_detectors_training_reference(tmp_path, lost):
    """Its history is lost (a state file that cannot be read, or none at all), its training part long behind it: it
    must not take its next samples for a new training part (with the audio preset's fixed reference, a fault under
    way would become the machine's normal), but continue as a state that has just seen the training part."""
    samples = stamped(values())
    store, tracker = DictStore(), OffsetTracker()
    proc = make(tmp_path)
    feed(proc, "a", samples[:380], store=store, tracker=tracker)
    proc.save_states()
    state_file = tmp_path / "models" / "_state" / "sensor" / "a.json"
    if lost == "unreadable":
        state_file.write_text("{ torn")
    else:
        state_file.unlink()
    store = DictStore()
    again = make(tmp_path)
    resume = tracker.committed_position(0)
    feed(again, "a", samples, start=resume, store=store)
    drain(again, store)
    fitted = FittedDetector.load(tmp_path / "models" / "sensor" / "a", device="cpu")
    state = fitted.resumed_state()
    rest = np.array([v for _, v in samples[resume:]])
    ends, windows = state.windows_for(rest)
    want = state.update(rest, fitted.score_windows(windows))
    points = store.measurement(WINDOW_SCORE)
    assert [p.time_ns for p in points] == [t for t, _ in samples[resume:]]  # nothing lost, nothing skipped
    np.testing.assert_allclose([p.fields["score"] for p in points], want.scores, rtol=0, atol=1e-9)
    # judged at once: a fresh state (what the stream got before) learns for a training part first, deciding nothing
    fresh = fitted.new_state()
    relearnt = fresh.update(rest, fitted.score_windows(fresh.windows_for(rest)[1]))
    assert set(relearnt.decided_by[:TRAIN]) == {"none"} != {p.fields["decided_by"] for p in points[:TRAIN]}


def test_a_late_sample_is_rejected_with_its_reason_and_a_repeated_timestamp_is_scored(tmp_path):
    proc = make(tmp_path)
    t0 = 1_000_000 * P
    assert proc.add_sensor("sensor", [Sample("a", t0, 1.0), Sample("a", t0 + P, 2.0)], (0, 0)) is None
    r = proc.add_sensor("sensor", [Sample("a", t0 + P, 3.0), Sample("a", t0 - P, 3.0), Sample("a", t0 + 2 * P, 3.0)],
                        (0, 1))
    assert r is not None and r.reason == "late" and "[1]" in r.detail
    assert proc.stats.samples == 5 and proc.stats.rejected == 1
    assert proc._streams[("sensor", "a")].pending() == 4  # the repeated timestamp is a reading too


def gated_fits(tmp_path):
    """A processor whose background fits wait until the returned event is set."""
    gate = threading.Event()

    def slow_fit(train, config):
        assert gate.wait(60)
        return FittedDetector.fit(train, config)

    return build_processor(settings(tmp_path), background=True, fitter=slow_fit), gate


def test_background_fitting_does_not_stall_other_streams(tmp_path):
    proc, gate = gated_fits(tmp_path)
    store = DictStore()
    # Stream b already has a fitted detector on disk: it scores while a's fit waits.
    FittedDetector.fit(values(TRAIN, spike_at=10**6), proc.classes["sensor"].detector).save(
        tmp_path / "models" / "sensor" / "b")
    feed(proc, "a", stamped(values(300)), store=store)
    feed(proc, "b", stamped(values(300)), part=1, store=store)
    proc.step()
    proc.flush(store)
    assert proc.registry.training()
    assert len(store.measurement(WINDOW_SCORE, "b")) == 300 and not store.measurement(WINDOW_SCORE, "a")
    gate.set()
    drain(proc, store)
    assert len(store.measurement(WINDOW_SCORE, "a")) == 300


def test_shared_mode_fits_once_and_scores_every_stream(tmp_path):
    proc, store = make(tmp_path, model_mode="shared"), DictStore()
    feed(proc, "a", stamped(values(300)), store=store)
    feed(proc, "b", stamped(values(300, seed=1)), part=1, store=store)
    drain(proc, store)
    assert (tmp_path / "models" / "sensor" / "_shared" / "detector.json").is_file()
    assert not (tmp_path / "models" / "sensor" / "a").exists()
    assert len(store.measurement(WINDOW_SCORE, "a")) == len(store.measurement(WINDOW_SCORE, "b")) == 300


def test_drop_partitions_forgets_streams_and_their_holds(tmp_path):
    proc = make(tmp_path)
    feed(proc, "a", stamped(values(100)), part=0)
    feed(proc, "b", stamped(values(100)), part=1)
    assert proc.drop_partitions([0]).count == 1
    assert proc.stream_count() == 1
    assert all(0 not in h for h in proc.holds())


def test_a_stream_with_records_in_a_kept_partition_says_what_to_read_again_when_dropped(tmp_path):
    """One stream id in two partitions (producers with different partitioners): when one partition is revoked the
    whole stream is forgotten, and what it still needed from the partition kept here was lost — nothing held its
    commit. The drop now says from where to read the kept partition again, and for which stream."""
    store, tracker = DictStore(), OffsetTracker()
    proc = make(tmp_path)
    x = stamped(values(400))
    for off in range(300):  # the training part, from partitions 0 and 1 alternately; fitted, scored, written
        proc.add_sensor("sensor", [Sample("s", *x[off])], (off % 2, off))
        proc.add_sensor("sensor", [Sample("b", *stamped(values(400, seed=1))[off])], (1, 1000 + off))
    drain(proc, store)
    proc.save_states()
    for off in range(300, 320):  # scored and written but not saved (unsaved), then pending
        proc.add_sensor("sensor", [Sample("s", *x[off])], (off % 2, off))
    drain(proc, store)
    for off in range(320, 330):
        proc.add_sensor("sensor", [Sample("s", *x[off])], (off % 2, off))
    dropped = proc.drop_partitions([0])
    assert dropped.count == 1 and proc.stream_count() == 1  # b stays
    assert dropped.rewind == {1: {("sensor", "s"): 301}}
    assert all(0 not in h for h in proc.holds())
    assert min(h.get(1, 10**9) for h in proc.holds()) >= 1000  # the processor no longer holds s's records ...
    # ... so the caller must (the monitor holds and re-reads partition 1 from 301)


def test_graceful_restart_keeps_an_open_alert(tmp_path):
    v = values(600)
    v[450:] += 50.0  # a level shift: the spatial rule fires and the alert stays open while it stays high
    samples = stamped(v)
    proc, store = make(tmp_path, alert_threshold=0.5, alert_hysteresis=0.1, alert_close_after=1000), DictStore()
    feed(proc, "a", samples[:470], store=store)
    drain(proc, store)
    assert store.measurement(ALERT)[-1].fields["state"] == "open"
    proc.save_states()
    again = make(tmp_path, alert_threshold=0.5, alert_hysteresis=0.1, alert_close_after=1000)
    feed(again, "a", samples, start=470, store=store)
    drain(again, store)
    assert len({a.time_ns for a in store.measurement(ALERT)}) == 1  # the same alert, not a new one


def test_audio_is_indexed_by_sample_count_so_44k1_does_not_drift(tmp_path):
    """Issue 9 item 8: 44.1 kHz chunks of 4,096 frames lose nothing and raise no late dead letter."""
    rate, n = 44_100, 44_100 * 3
    x = (0.1 * np.sin(np.arange(n) * 2 * np.pi * 440 / rate)).astype(np.float32)
    m = MonitorSettings(model_dir=tmp_path / "models", audio_sample_rate=rate,
                        audio_detector_options={"steps": 2, "max_train_windows": 16, "train_samples": rate})
    proc, store = build_processor(m, background=False), DictStore()
    t0 = 1_700_000_000 * S
    for i, start in enumerate(range(0, n, 4096)):
        chunk = AudioChunk("fan", t0 + (start * S) // rate, rate, x[start:start + 4096])
        assert proc.add_audio("audio", chunk, (0, i)) is None
        proc.step()
        proc.flush(store)
    drain(proc, store)
    fitted = proc.registry.detector(("audio", "fan"))
    expected = np.arange(fitted.window - 1, n, fitted.hop)
    points = store.measurement(WINDOW_SCORE)
    assert len(points) == expected.size
    assert [p.time_ns for p in points] == [t0 + (int(e) * S) // rate for e in expected]
    late = proc.add_audio("audio", AudioChunk("fan", t0, rate, x[:100]), (0, 999))
    assert late is not None and late.reason == "late"


AUDIO_RATE = 44_100


def audio_processor(tmp_path):
    m = MonitorSettings(model_dir=tmp_path / "models", audio_sample_rate=AUDIO_RATE,
                        audio_detector_options={"steps": 2, "max_train_windows": 16, "train_samples": AUDIO_RATE})
    return build_processor(m, background=False)


def fan(n, seed=0):
    rng = np.random.default_rng(seed)
    return (0.1 * np.sin(np.arange(n) * 2 * np.pi * 440 / AUDIO_RATE) + 0.01 * rng.standard_normal(n)).astype(
        np.float32)


def test_audio_stamped_in_milliseconds_at_44k1_loses_no_chunk(tmp_path):
    """A producer that stamps chunks in whole milliseconds (Kafka's own resolution) puts each chunk up to 22
    samples off at 44.1 kHz. Such a chunk overlapped the previous one by a sample or two and was dead-lettered
    whole as late, and the next one then counted as a gap."""
    proc, store = audio_processor(tmp_path), DictStore()
    n, size = AUDIO_RATE * 2, 1000
    x = fan(n)
    t0 = 1_700_000_000 * S
    for i, start in enumerate(range(0, n, size)):
        ts_ms = round((t0 + start * S / AUDIO_RATE) / 1e6)
        assert proc.add_audio("audio", AudioChunk("fan", ts_ms * 1_000_000, AUDIO_RATE, x[start:start + size]),
                              (0, i)) is None
    st = proc._streams[("audio", "fan")]
    assert st.received == n and st.audio_index == n
    assert proc.stats.rejected == proc.stats.audio_gaps == proc.stats.audio_overlap_samples == 0


def test_an_audio_gap_keeps_true_times_and_a_repeated_chunk_after_it_is_late(tmp_path):
    """After a gap the samples were stamped as if the stream had not paused, and a re-sent chunk after the gap
    was taken as another gap: scored twice, at shifted times."""
    proc = audio_processor(tmp_path)
    t0, size = 1_700_000_000 * S, 4410
    x = fan(size * 4)
    assert proc.add_audio("audio", AudioChunk("fan", t0, AUDIO_RATE, x[:size]), (0, 0)) is None
    after_gap = t0 + 5 * S  # five seconds of silence
    assert proc.add_audio("audio", AudioChunk("fan", after_gap, AUDIO_RATE, x[size:2 * size]), (0, 1)) is None
    st = proc._streams[("audio", "fan")]
    assert proc.stats.audio_gaps == 1 and st.received == 2 * size
    assert int(st.segments.records()[-1].ts_ns[0]) == after_gap
    again = proc.add_audio("audio", AudioChunk("fan", after_gap, AUDIO_RATE, x[size:2 * size]), (0, 2))
    assert again is not None and again.reason == "late" and st.received == 2 * size
    half = after_gap + (size // 2 * S) // AUDIO_RATE  # half of it again, half new: only the new half is taken
    assert proc.add_audio("audio", AudioChunk("fan", half, AUDIO_RATE, x[2 * size:3 * size]), (0, 3)) is None
    assert st.received == 2 * size + size // 2 and proc.stats.audio_overlap_samples == size - size // 2


def test_audio_times_stay_exact_days_into_a_stream(tmp_path):
    """A sample's time is start + index·10⁹ // rate. Computed in int64 that product overflowed after 9.2e9 samples
    (2.2 days of a stream at 48 kHz, 6.7 at 16 kHz; a monitor runs for longer): the times of every later sample
    wrapped round to before the stream began."""
    proc = audio_processor(tmp_path)
    t0, size = 1_700_000_000 * S, 4410
    x = fan(size * 2)
    assert proc.add_audio("audio", AudioChunk("fan", t0, AUDIO_RATE, x[:size]), (0, 0)) is None
    later = t0 + 3 * 86_400 * S + 123_456_789  # three days on (a gap): sample index ~1.1e10 at 44.1 kHz
    assert proc.add_audio("audio", AudioChunk("fan", later, AUDIO_RATE, x[size:]), (0, 1)) is None
    ts = proc._streams[("audio", "fan")].segments.records()[-1].ts_ns
    first = (2 * (later - t0) * AUDIO_RATE + S) // (2 * S)  # the chunk's sample index, rounded
    expected = [t0 + (i * S) // AUDIO_RATE for i in range(first, first + size)]  # Python ints: exact
    assert ts.tolist() == expected and abs(int(ts[0]) - later) < S // AUDIO_RATE


def test_audio_reread_after_a_restart_is_skipped_not_dead_lettered(tmp_path):
    """A restored audio stream had no last timestamp in its state, so the chunks it had already scored, read again
    from an older commit, were all dead-lettered as late."""
    t0, size = 1_700_000_000 * S, 4096
    n = AUDIO_RATE * 2
    x = fan(n)
    chunks = [AudioChunk("fan", t0 + (start * S) // AUDIO_RATE, AUDIO_RATE, x[start:start + size])
              for start in range(0, n, size)]
    store = DictStore()
    proc = audio_processor(tmp_path)
    for i, c in enumerate(chunks[:-4]):
        assert proc.add_audio("audio", c, (0, i)) is None
        proc.step()
        proc.flush(store)
    proc.registry.wait()
    proc.step()
    proc.flush(store)
    proc.save_states()
    scored = len(store.measurement(WINDOW_SCORE))
    assert scored > 0
    again = audio_processor(tmp_path)  # crash; the commit was older: everything is read again
    verdicts = [again.add_audio("audio", c, (0, i)) for i, c in enumerate(chunks)]
    assert verdicts == [None] * len(chunks)
    assert again.stats.replayed > 0 and again.stats.rejected == 0
    drain(again, store)
    times = [p.time_ns for p in store.measurement(WINDOW_SCORE)]
    assert len(times) == len(set(times)) and len(times) > scored


def test_a_far_future_timestamp_is_a_bad_timestamp_and_does_not_poison_the_stream(tmp_path):
    """Issue 9 item 5: one sample from the year 2255 was accepted, and every later good sample became late."""
    proc = make(tmp_path)
    t0 = 1_000_000 * P
    assert proc.add_sensor("sensor", [Sample("a", t0, 1.0)], (0, 0)) is None
    year_2255 = 9_000_000_000 * S
    r = proc.add_sensor("sensor", [Sample("a", year_2255, 5.0)], (0, 1))
    assert r is not None and r.reason == "bad_timestamp"
    # 40 days after the newest sample is past the 30-day skew too, even though it is not in the future
    r = proc.add_sensor("sensor", [Sample("a", t0 + 40 * 86_400 * S, 5.0)], (0, 2))
    assert r is not None and r.reason == "bad_timestamp"
    late = [proc.add_sensor("sensor", [Sample("a", t0 + k * P, 1.0)], (0, 2 + k)) for k in range(1, 50)]
    assert late == [None] * 49  # the stream goes on
    assert proc._streams[("sensor", "a")].pending() == 50


def test_a_stream_silent_for_longer_than_the_skew_resumes_and_a_stray_sample_does_not_move_it(tmp_path):
    """A sensor that stopped for 40 days and came back was refused for ever: every sample was more than the 30-day
    skew past the stream's newest, which never moved. Now the second sample of the new era confirms the jump (the
    first is dead-lettered); a lone sample stamped with the clock in a replay is refused and the replay goes on."""
    now = 1_800_000_000 * S
    proc = make(tmp_path)
    proc.wall_clock_ns = lambda: now
    before = now - 40 * 86_400 * S
    assert proc.add_sensor("sensor", [Sample("a", before + k * P, 1.0) for k in range(10)], (0, 0)) is None
    back = [proc.add_sensor("sensor", [Sample("a", now - 60 * S + k * S, 1.0)], (0, 1 + k)) for k in range(5)]
    assert [r.reason if r else None for r in back] == ["bad_timestamp", None, None, None, None]
    assert proc._streams[("sensor", "a")].pending() == 14

    replay = [Sample("b", before + k * P, 1.0) for k in range(20)]
    replay[5] = replay[6] = Sample("b", now, 1.0)  # a stray sample stamped with the clock, delivered twice
    verdicts = [proc.add_sensor("sensor", [x], (1, k)) for k, x in enumerate(replay)]
    assert [k for k, r in enumerate(verdicts) if r is not None] == [5, 6]
    assert proc._streams[("sensor", "b")].pending() == 18


def test_a_stream_called_shared_gets_its_own_folder(tmp_path):
    """Issue 9 item 11: a stream named `_shared` trained into the shared detector's folder."""
    per_stream = make(tmp_path).registry
    shared = make(tmp_path, model_mode="shared").registry
    mine = per_stream.directory(per_stream.key_for("sensor", "_shared"))
    theirs = shared.directory(shared.key_for("sensor", "anything"))
    assert theirs.name == "_shared" and mine != theirs


def test_a_silent_stream_in_its_training_part_does_not_pin_the_commit_and_keeps_its_samples(tmp_path):
    """Issue 9 #4: one sample of stream 'quiet', then 1,000 records of 'busy' on the same partition. The checkpoint
    saves quiet's collected samples, so the commit moves past them; after a crash, quiet gets them back and fits
    on exactly the training part an uninterrupted run would use."""
    store, tracker = DictStore(), OffsetTracker()
    proc = make(tmp_path / "run")
    quiet = stamped(values(TRAIN + 60, seed=3))
    tracker.seen(0, 0)
    assert proc.add_sensor("sensor", [Sample("quiet", *quiet[0])], (0, 0)) is None
    busy = stamped(values(1000, seed=4), start=2_000_000 * P)
    for off, (t, v) in enumerate(busy, start=1):
        tracker.seen(0, off)
        assert proc.add_sensor("sensor", [Sample("busy", t, v)], (0, off)) is None
    drain(proc, store)  # fits busy
    drain(proc, store)  # scores busy
    assert proc.save_states() == 2
    position = tracker.positions(proc.holds())[0]
    assert position == 1001  # without the saved training part this stays at 0 for ever
    tracker.committed({0: position})
    # crash; the restarted worker re-reads from the commit, then quiet goes on
    again = make(tmp_path / "run")
    for off, (t, v) in enumerate(quiet[1:], start=1001):
        assert again.add_sensor("sensor", [Sample("quiet", t, v)], (0, off)) is None
    drain(again, store)  # fits
    drain(again, store)  # scores
    got = [p.fields["score"] for p in store.measurement(WINDOW_SCORE, "quiet")]
    ref_store = DictStore()
    ref = make(tmp_path / "ref")
    feed(ref, "quiet", quiet, store=ref_store)
    drain(ref, ref_store)
    want = [p.fields["score"] for p in ref_store.measurement(WINDOW_SCORE, "quiet")]
    assert len(got) == len(quiet)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_live_streams_are_capped_durable_ones_evicted_and_restored_the_rest_dead_lettered(tmp_path):
    """Issue 9 #7: 20,000 one-sample stream ids must not all stay in memory. At the cap, the least recently active
    stream whose samples are saved is evicted; when no stream can go without losing samples, the new stream's
    record is refused with a reason (the monitor dead-letters it)."""
    proc = make(tmp_path, max_streams=3)
    t0 = 1_000_000 * P
    for i, name in enumerate(["s0", "s1", "s2"]):
        assert proc.add_sensor("sensor", [Sample(name, t0, 1.0 + i)], (0, i)) is None
    refused = proc.add_sensor("sensor", [Sample("s3", t0, 4.0)], (0, 3))
    assert refused is not None and refused.reason == "too_many_streams"
    assert proc.stream_count() == 3
    assert proc.save_states() == 3  # their collected samples are now on disk
    for i in range(3, 200):
        assert proc.add_sensor("sensor", [Sample(f"s{i}", t0, float(i))], (0, i)) is None
        proc.save_states()
    assert proc.stream_count() == 3 and proc.stats.evicted == 197
    # an evicted stream comes back with what it had collected
    back = proc.add_sensor("sensor", [Sample("s1", t0 + P, 7.0)], (0, 200))
    assert back is None
    segments = list(proc._streams[("sensor", "s1")].segments)
    assert [float(v) for seg in segments for v in seg.values] == [2.0, 7.0]


def test_streams_collecting_a_long_training_part_take_the_room_their_buffers_need(tmp_path):
    """An audio stream's training part (100 s of samples with the preset) counts as several streams until it is
    fitted: the cap in units of memory, not of stream ids. A stream is always let in, whatever its weight."""
    proc = audio_processor(tmp_path)
    proc.max_streams, proc.training_weights = 10, {"audio": 4, "sensor": 1}
    t0 = 1_700_000_000 * S
    x = fan(1000)
    for i, name in enumerate(["a", "b"]):
        assert proc.add_audio("audio", AudioChunk(name, t0, AUDIO_RATE, x), (0, i)) is None
    assert proc.add_sensor("sensor", [Sample("s", t0, 1.0)], (0, 2)) is None
    assert proc.add_sensor("sensor", [Sample("t", t0, 1.0)], (0, 3)) is None  # 4 + 4 + 1 + 1 = 10
    refused = proc.add_audio("audio", AudioChunk("c", t0, AUDIO_RATE, x), (0, 4))
    assert refused is not None and refused.reason == "too_many_streams" and "counts as 4" in refused.detail
    assert proc.add_sensor("sensor", [Sample("u", t0, 1.0)], (0, 5)).reason == "too_many_streams"
    assert proc.stream_count() == 4
    proc.save_states()  # now every stream's samples are durable: a new one evicts as many as it needs
    assert proc.add_audio("audio", AudioChunk("c", t0, AUDIO_RATE, x), (0, 6)) is None
    assert proc.stats.evicted == 1 and proc.stream_cap_used() == 10 and proc.stream_count() == 4
    lone = audio_processor(tmp_path / "lone")
    lone.max_streams, lone.training_weights = 2, {"audio": 4}
    assert lone.add_audio("audio", AudioChunk("a", t0, AUDIO_RATE, x), (0, 0)) is None


def test_with_a_shared_model_streams_collect_weighted_until_the_detector_is_ready(tmp_path):
    """A shared model's streams were never weighted: every stream that arrives before the class's first fit
    collects a training part's worth of samples (audio: 100 s, 24 MB) until that fit is done, and a fleet starting
    together could outgrow its worker. They count as their buffers now, and as one once the detector is ready —
    here or published on disk by another member."""
    proc = make(tmp_path, model_mode="shared")
    proc.max_streams, proc.training_weights = 7, {"sensor": 3}
    samples = stamped(values(TRAIN + 40))
    t = samples[0][0]
    for i, name in enumerate("ab"):
        assert proc.add_sensor("sensor", [Sample(name, t, 1.0)], (i, 0)) is None
    assert proc.stream_cap_used() == 6
    refused = proc.add_sensor("sensor", [Sample("c", t, 1.0)], (2, 0))
    assert refused is not None and refused.reason == "too_many_streams"
    store = DictStore()
    feed(proc, "a", samples, start=1, store=store)  # the class's detector is fitted on a's training part
    drain(proc, store)
    assert proc.registry.detector(proc.registry.key_for("sensor", "c")) is not None
    for i, name in enumerate("cdef"):  # each collects nothing now: one unit
        assert proc.add_sensor("sensor", [Sample(name, t, 1.0)], (3 + i, 0)) is None
    assert proc.stream_cap_used() == 6 and proc.stats.evicted == 0
    # A second worker of the group finds the detector another member published: its new streams count as one.
    other = make(tmp_path, model_mode="shared")
    other.max_streams, other.training_weights = 2, {"sensor": 3}
    for i, name in enumerate("xy"):
        assert other.add_sensor("sensor", [Sample(name, t, 1.0)], (i, 0)) is None
    assert other.stream_cap_used() == 2


def test_a_stream_that_comes_back_fitted_takes_one_unit_and_too_little_room_evicts_nobody(tmp_path):
    """Review of the weighted cap: a new stream's weight was fixed before its state was restored (a fitted stream
    that came back was charged its class's training weight), and the cap evicted streams one by one before it found
    that they could not free enough room — they were lost for nothing and the stream refused anyway."""
    proc, store = make(tmp_path), DictStore()
    for i, name in enumerate("abcde"):
        feed(proc, name, stamped(values(TRAIN + 40, seed=i)), part=i)
    drain(proc, store)
    assert all(proc._streams[("sensor", n)].state is not None for n in "abcde")
    proc.save_states()
    proc.max_streams, proc.training_weights = 5, {"sensor": 3}
    t = stamped(values(TRAIN + 80))[TRAIN + 50][0]
    assert proc.add_sensor("sensor", [Sample("f", t, 1.0)], (9, 0)) is None  # collecting: 3 units
    assert proc.stats.evicted == 3 and set(k[1] for k in proc._streams) == {"d", "e", "f"}
    back = proc.add_sensor("sensor", [Sample("a", t, 1.0)], (0, TRAIN + 60))
    assert back is None and proc._streams[("sensor", "a")].state is not None  # fitted: one unit
    assert proc.stats.evicted == 4 and proc.stream_cap_used() == 5
    # Now nothing can go ("a" and "f" hold samples not yet durable, "e" is too light for the 3 units a new stream
    # needs): the new stream is refused and nobody is evicted for it.
    refused = proc.add_sensor("sensor", [Sample("g", t, 1.0)], (9, 1))
    assert refused is not None and refused.reason == "too_many_streams"
    assert proc.stats.evicted == 4 and set(k[1] for k in proc._streams) == {"e", "f", "a"}


def test_at_the_cap_a_record_never_evicts_a_stream_it_has_just_brought(tmp_path):
    """A record with samples of two new streams at a cap of one: the second evicted the first (created by the
    same record, nothing received yet), and taking in the record then raised — the whole record was
    dead-lettered as a processing error."""
    proc = make(tmp_path, max_streams=1)
    t = stamped([1.0])[0][0]
    refused = proc.add_sensor("sensor", [Sample("b", t, 1.0), Sample("a", t, 2.0)], (0, 0))
    assert refused is not None and refused.reason == "too_many_streams" and "[1]" in refused.detail
    assert [float(v) for seg in proc._streams[("sensor", "b")].segments for v in seg.values] == [1.0]


def test_an_evicted_scoring_stream_resumes_with_the_scores_of_an_uninterrupted_run(tmp_path):
    samples = stamped(values(500))
    ref_store = DictStore()
    ref = make(tmp_path / "ref")
    feed(ref, "a", samples, store=ref_store)
    drain(ref, ref_store)

    store = DictStore()
    proc = make(tmp_path / "run", max_streams=1)
    feed(proc, "a", samples[:350], store=store)
    drain(proc, store)
    proc.save_states()
    assert proc.registry.loaded() == 1
    assert proc.add_sensor("sensor", [Sample("other", samples[0][0], 1.0)], (1, 0)) is None  # evicts "a"
    assert proc.stats.evicted == 1
    assert proc.registry.loaded() == 0  # its detector left memory with it (loaded again when it comes back)
    proc.save_states()
    feed(proc, "a", samples, start=350, store=store)  # evicts "other", restores "a"
    drain(proc, store)
    got = [p.fields["score"] for p in store.measurement(WINDOW_SCORE, "a")]
    want = [p.fields["score"] for p in ref_store.measurement(WINDOW_SCORE, "a")]
    assert len(got) == len(want) == 500
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_a_fit_that_finishes_after_its_stream_left_does_not_stay_in_memory(tmp_path):
    proc, gate = gated_fits(tmp_path)
    feed(proc, "a", stamped(values(TRAIN + 10)))
    proc.step()
    assert proc.registry.fitting(("sensor", "a"))
    assert proc.drop_partitions([0]).count == 1  # revoked while its fit runs
    gate.set()
    proc.registry.wait()
    proc.step()  # the next round takes the finished fit
    assert proc.registry.loaded() == 0
    assert (tmp_path / "models" / "sensor" / "a").is_dir()  # published: the new owner (or a return) loads it


def test_a_detector_that_fails_to_load_once_costs_the_returning_stream_nothing(tmp_path, monkeypatch):
    """An evicted stream's detector leaves memory with it, so its return loads it again; a passing load error
    (too many open files) deleted the stream's saved state as if its detector were gone."""
    import streamer.pipeline as pipeline

    monkeypatch.setattr(pipeline, "RELOAD_PAUSES_S", (0.0, 0.0))
    failures = []

    def loader(path):
        if failures:
            failures.pop()
            raise OSError(24, "Too many open files")
        return FittedDetector.load(path)

    proc, store = build_processor(settings(tmp_path, max_streams=1), background=False, loader=loader), DictStore()
    samples = stamped(values(400))
    feed(proc, "a", samples[:350], store=store)
    drain(proc, store)
    proc.save_states()
    assert proc.add_sensor("sensor", [Sample("other", samples[0][0], 1.0)], (1, 0)) is None  # evicts "a"
    proc.save_states()
    failures.append(1)
    assert proc.add_sensor("sensor", [Sample("a", *samples[350])], (0, 350)) is None
    assert proc.detections_of("sensor", "a").position == 350  # restored, after a second try of the load


def gated_checkpoints(monkeypatch):
    """Background checkpoints wait until the returned event is set before writing."""
    from streamer.state_files import StateFiles

    gate = threading.Event()
    real = StateFiles.write

    def slow(self, files):
        gate.wait(10)
        real(self, files)

    monkeypatch.setattr(StateFiles, "write", slow)
    return gate


def test_a_background_checkpoint_holds_its_offsets_until_the_files_are_written(tmp_path, monkeypatch):
    """The monitor's periodic checkpoint encodes and writes states off the loop; until they are durable, the
    commit must not pass what they cover."""
    gate = gated_checkpoints(monkeypatch)
    proc, store, tracker = make(tmp_path), DictStore(), OffsetTracker()
    samples = stamped(values(400))
    for off, (t, v) in enumerate(samples):
        tracker.seen(0, off)
        proc.add_sensor("sensor", [Sample("a", t, v)], (0, off))
    drain(proc, store)
    drain(proc, store)
    assert proc.save_states(wait=False) == 1
    assert tracker.positions(proc.holds()) == {0: 0}  # written in the background: still held
    assert proc.save_states(wait=False) == 0  # one checkpoint at a time
    gate.set()
    proc._save_job.future.result(10)
    assert tracker.positions(proc.holds()) == {0: 400}
    assert (tmp_path / "models" / "_state" / "sensor" / "a.json").is_file()


def test_a_stream_that_comes_back_while_its_checkpoint_is_written_is_restored_from_the_whole_files(tmp_path,
                                                                                                  monkeypatch):
    """A rebalance dropped the stream while a background checkpoint was still writing its files, and gave it back
    at once: reading them mid-write found a switched journal generation, and the unreadable state was deleted."""
    gate = gated_checkpoints(monkeypatch)
    proc, store = make(tmp_path), DictStore()
    samples = stamped(values(400))
    for off, (t, v) in enumerate(samples):
        proc.add_sensor("sensor", [Sample("a", t, v)], (0, off))
    drain(proc, store)
    drain(proc, store)
    assert proc.save_states(wait=False) == 1
    saved_position = proc.detections_of("sensor", "a").position
    proc.drop_partitions([0])
    threading.Timer(0.3, gate.set).start()
    t, v = stamped(values(401))[-1]
    assert proc.add_sensor("sensor", [Sample("a", t, v)], (0, 400)) is None  # back: restored once the write is whole
    assert gate.is_set()
    assert proc.detections_of("sensor", "a").position == saved_position


def test_a_checkpoint_is_on_disk_before_its_offsets_are_released(tmp_path, monkeypatch):
    """The offsets a saved state covers are committed right after the save: after a power loss the file must hold
    that state, so each file is fsynced before it replaces the old one, and its folder after the rename. The
    journal holding its histories (and the journal's name in the folder) is durable before the JSON that
    references it."""
    import os

    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    proc, store = make(tmp_path), DictStore()
    feed(proc, "a", stamped(values(400)), store=store)
    drain(proc, store)
    assert proc.save_states(wait=True) == 1
    folder = tmp_path / "models" / "_state" / "sensor"
    # (the model's own publishing fsyncs come first, under models/sensor/: tests/test_model_registry.py)
    (journal,) = folder.glob("a.*.journal")
    assert [p for p in synced if p.startswith(str(folder))] == [str(journal), str(folder), str(folder / "a.tmp"),
                                                                 str(folder)]
    assert (folder / "a.json").is_file() and not (folder / "a.tmp").exists()


def test_a_long_gap_drops_nothing_and_an_open_alert_closes_on_the_scores_after_it(tmp_path):
    """Issue 9 #6: the old windowers cleared their buffer after more than max_gap_periods and committed past the
    dropped samples, leaving an open alert open for ever. Now every sample is scored whatever the gap (a week here,
    10,080 sampling periods), and the alert rule sees the scores after it."""
    v = values(700)
    v[450:456] += 50.0  # opens an alert just before the gap
    samples = stamped(v)
    week = 7 * 24 * 60 * S
    samples = samples[:460] + [(t + week, x) for t, x in samples[460:]]
    proc, store = make(tmp_path, alert_threshold=0.5), DictStore()
    feed(proc, "a", samples, store=store)
    drain(proc, store)
    assert [p.time_ns for p in store.measurement(WINDOW_SCORE, "a")] == [t for t, _ in samples]
    alerts = store.measurement(ALERT, "a")
    assert alerts and all(a.fields["state"] == "closed" for a in alerts)


def test_a_complete_training_part_stays_held_until_fitted_so_a_restart_brings_the_stream_back(tmp_path):
    """Found by benchmarks/faults.py: a member stopped while fitting a stream whose training part was complete and
    already saved with its offsets released. The next member read nothing (all committed), so it never restored
    the stream, and the stream's samples were never scored. A complete training part is therefore not released."""
    proc, tracker = make(tmp_path), OffsetTracker()
    for off, (t, v) in enumerate(stamped(values(TRAIN + 10))):
        tracker.seen(0, off)
        proc.add_sensor("sensor", [Sample("a", t, v)], (0, off))
    proc.save_states()  # no step yet: the fit has not run
    assert tracker.positions(proc.holds()) == {0: 0}


def _failing_while_set(monkeypatch, owner, name, error):
    """Make ``owner.name`` raise ``error`` while the returned flag's first element is true (a moment's outage)."""
    real, failing = getattr(owner, name), [True]

    def patched(self, *args, **kwargs):
        if failing[0]:
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, patched)
    return failing


def test_a_failed_checkpoint_of_a_training_part_is_written_again_and_stops_holding_the_commit(tmp_path,
                                                                                              monkeypatch):
    """The checkpoint of a stream still collecting its training part failed (a full disk, for a moment): its
    offsets went back to the stream, but the next checkpoints found "nothing new since the last save" and skipped
    it, so a stream that had fallen silent pinned its partition's commit until a restart — what the training
    part's save exists to prevent."""
    from streamer.state_files import StateFiles

    proc, tracker = make(tmp_path), OffsetTracker()
    x = stamped(values(20))
    for off in range(20):  # far fewer than its training part; then it falls silent
        tracker.seen(0, off)
        assert proc.add_sensor("sensor", [Sample("a", *x[off])], (0, off)) is None
    proc.step()
    full = _failing_while_set(monkeypatch, StateFiles, "write", OSError("No space left on device"))
    with pytest.raises(OSError):
        proc.save_states(wait=True)
    assert tracker.positions(proc.holds()) == {0: 0}
    full[0] = False
    proc.step()
    proc.save_states(wait=True)
    assert tracker.positions(proc.holds()) == {0: 20}


def test_a_checkpoint_writes_only_the_streams_that_changed(tmp_path):
    """Idle streams keep their file: rewriting every stream's history at every checkpoint would not scale."""
    proc, store = make(tmp_path), DictStore()
    feed(proc, "a", stamped(values(300)), store=store)
    feed(proc, "b", stamped(values(300, seed=1)), part=1, store=store)
    drain(proc, store)
    assert proc.save_states() == 2
    assert proc.save_states() == 0  # nothing scored since
    t, v = stamped(values(301))[300]
    proc.add_sensor("sensor", [Sample("a", t, v)], (0, 300))
    drain(proc, store)
    assert proc.save_states() == 1


def _poison_scoring(monkeypatch, where, poisoned, b):
    """Make scoring raise on a sample equal to ``poisoned`` — in the model, in the detector state (after moving
    it on: half updated) or in the alert rule (after the state took the samples)."""
    from models.detector.fitted import FittedDetector as Fitted
    from models.detector.online import DetectorState
    from streamer.alerts import AlertMachine

    if where == "model":
        real = Fitted.score_windows

        def score_windows(self, windows):
            if np.abs(windows).max() > 1000:
                raise RuntimeError("the model cannot score this window")
            return real(self, windows)

        monkeypatch.setattr(Fitted, "score_windows", score_windows)
    elif where == "alerts":
        real_alert = AlertMachine.update
        poisoned_times = {t for t, v in b if v == poisoned}

        def alert_update(self, t, score, *args):
            decision = real_alert(self, t, score, *args)  # the rule's state moved on, then it fails
            if self.stream == "b" and t in poisoned_times:
                raise RuntimeError("the alert rule cannot take this score")
            return decision

        monkeypatch.setattr(AlertMachine, "update", alert_update)
    else:
        real_update = DetectorState.update

        def update(self, samples, scores):
            hit = np.flatnonzero(samples == poisoned)
            if hit.size:  # half updated (its position moved on), then fails
                self.channels.position += int(hit[0]) + 1
                raise RuntimeError("the state cannot take this sample")
            return real_update(self, samples, scores)

        monkeypatch.setattr(DetectorState, "update", update)


def _two_streams_scored(tmp_path, tracker, store):
    """Streams a (partition 0) and b (partition 1), 300 samples each, fitted, scored and checkpointed."""
    proc = make(tmp_path)
    a, b = stamped(values(400)), stamped(values(400, seed=1))
    for off in range(300):
        for part, stream, samples in ((0, "a", a), (1, "b", b)):
            tracker.seen(part, off)
            proc.add_sensor("sensor", [Sample(stream, *samples[off])], (part, off))
    proc.step()  # fits both
    proc.step()
    proc.flush(store)
    assert len(store.measurement(WINDOW_SCORE, "a")) == len(store.measurement(WINDOW_SCORE, "b")) == 300
    proc.save_states()
    return proc, a, b


@pytest.mark.parametrize("where", ["model", "state", "alerts"])
def test_a_stream_whose_scoring_raises_dead_letters_what_fails_again_and_scores_on(tmp_path, monkeypatch, where):
    """An exception from scoring one stream (a bug, an input no check foresaw) used to hold the stream until a
    restart, and its samples held its partition's commit; the restart re-read the partition and, the failure
    being deterministic, failed again at the same sample. Now the batch is scored again record by record, the
    records that fail again are handed back to be dead-lettered (nothing lost, nothing held), and every stream
    scores on and is committed past."""
    from streamer.ingest import unscored_letters
    from streamer.messages import decode_sensor

    def rounds(proc, store, tracker, a, b, skip=None):
        letters = []
        for off in range(300, 400):
            for part, stream, samples in ((0, "a", a), (1, "b", b)):
                tracker.seen(part, off)
                if (stream, off) == skip:
                    continue
                assert proc.add_sensor("sensor", [Sample(stream, *samples[off])], (part, off)) is None
            if off % 20 == 0:
                proc.step()  # must not raise
                if off == 320:  # the failed batch waits for its second pass: it still holds the commit
                    assert tracker.positions(proc.holds()).get(1, tracker.committed_position(1)) == 301
                letters += unscored_letters(proc)
                proc.flush(store)
                proc.save_states()
                tracker.committed(tracker.positions(proc.holds()))
        proc.step()
        letters += unscored_letters(proc)
        proc.flush(store)
        proc.save_states()
        tracker.committed(tracker.positions(proc.holds()))
        return letters

    ref_store, ref_tracker = DictStore(), OffsetTracker()
    ref, a, b = _two_streams_scored(tmp_path / "ref", ref_tracker, ref_store)
    assert rounds(ref, ref_store, ref_tracker, a, b, skip=("b", 320)) == []  # as if 320 had never come
    want = {p.time_ns: p.fields["score"] for p in ref_store.measurement(WINDOW_SCORE, "b")}
    want_alerts = ref._streams[("sensor", "b")].alerts.state_dict()
    store, tracker = DictStore(), OffsetTracker()
    proc, a, b = _two_streams_scored(tmp_path / "run", tracker, store)
    poison = 7777.0
    b = [(t, poison) if i == 320 else (t, v) for i, (t, v) in enumerate(b)]
    _poison_scoring(monkeypatch, where, poison, b)
    lineage = proc._streams[("sensor", "b")].lineage
    letters = rounds(proc, store, tracker, a, b)
    # The batch that failed is scored again one record at a time, and only what fails again is dead-lettered: the
    # poisoned record where the state or the alert rule fails (the state goes back to its last saved one, then
    # to its copy from before the record). The model fails on the records whose windows reach back over the
    # poisoned sample: the first is dead-lettered and the state goes back to before it, which still holds the
    # poisoned sample in its tail, so at the second the state is replaced by a fresh one, and scoring goes on.
    failed = [x.record.offset for x in letters]
    if where == "model":
        assert len(failed) == 2 and 320 < failed[0] < 340 and failed[1] == failed[0] + 1
    else:
        assert failed == [320]
    assert proc.stats.scoring_failures == 1 + len(failed) and proc.held_streams() == []
    # one letter per record, in the input's wire format
    assert [(x.reason, x.record.partition) for x in letters] == [("scoring_failed", 1)] * len(failed)
    assert [(s.ts_ns, s.value) for x in letters for s in decode_sensor(x.record.value, x.record.key)] == [
        b[off] for off in failed]
    assert "RuntimeError" in letters[-1].detail
    # every other sample of b is scored, a's all, and nothing is held
    scored_b = sorted(p.time_ns for p in store.measurement(WINDOW_SCORE, "b"))
    assert scored_b == [t for off, (t, _) in enumerate(b) if off not in failed]
    assert len(store.measurement(WINDOW_SCORE, "a")) == 400
    assert tracker.committed_position(0) == tracker.committed_position(1) == 400
    assert proc._streams[("sensor", "b")].lineage != lineage  # a state that went back is journaled anew
    # b is scored as if the records dead-lettered had never come: the second pass starts from the state saved
    # after 300 (state, alerts) or the untouched state (model), and a record that fails goes back to the state
    # before it — up to the poisoned sample where the model keeps it in its state's tail and the state is replaced
    got = {p.time_ns: p.fields["score"] for p in store.measurement(WINDOW_SCORE, "b")}
    same = [t for t, _ in b[:320]] if where == "model" else list(want)
    assert got.keys() >= set(same) and len(same) >= 320
    assert [got[t] for t in same] == pytest.approx([want[t] for t in same], abs=1e-12)
    if where != "model":  # the alert rule went back too: it has seen what the reference's has
        assert proc._streams[("sensor", "b")].alerts.state_dict() == want_alerts


def test_a_new_stream_whose_first_batch_fails_scores_its_training_part_as_a_training_part(tmp_path, monkeypatch):
    """Its first batch holds its training part; the state that replaces the failed one must start there (a fresh
    state), not at the training part's end: a resumed state judged the training samples as live ones."""
    from streamer.ingest import unscored_letters

    b = stamped(values(400, seed=1))
    poison = 7777.0
    b = [(t, poison) if i == 100 else (t, v) for i, (t, v) in enumerate(b)]  # inside the training part
    _poison_scoring(monkeypatch, "alerts", poison, b)
    proc, store = make(tmp_path), DictStore()
    feed(proc, "b", b, store=store)
    drain(proc, store)
    assert [x.record.offset for x in unscored_letters(proc)] == [100]
    fitted = FittedDetector.load(tmp_path / "models" / "sensor" / "b", device="cpu")
    kept = np.array([v for i, (_, v) in enumerate(b) if i != 100])
    offline = score_series(fitted, kept)["product"]
    points = store.measurement(WINDOW_SCORE, "b")
    assert [p.time_ns for p in points] == [t for i, (t, _) in enumerate(b) if i != 100]
    np.testing.assert_allclose([p.fields["score"] for p in points], offline.scores, rtol=0, atol=1e-9)
    assert {p.fields["decided_by"] for p in points[:TRAIN - 1]} == {"none"}  # still learning: a training part


def test_a_lost_state_in_shared_mode_learns_the_streams_own_reference_again(tmp_path):
    """A shared detector's reference is another stream's (its level, range and histories): a stream of the class
    whose state is lost starts fresh, as a new stream of the class does."""
    proc, store = make(tmp_path, model_mode="shared"), DictStore()
    samples = stamped(values())
    feed(proc, "a", samples[:380], store=store)
    drain(proc, store)
    proc.save_states()
    (tmp_path / "models" / "_state" / "sensor" / "a.json").write_text("{ torn")
    store = DictStore()
    again = make(tmp_path, model_mode="shared")
    feed(again, "a", samples, start=380, store=store)
    drain(again, store)
    points = store.measurement(WINDOW_SCORE)
    assert len(points) == 220 and {p.fields["decided_by"] for p in points} == {"none"}  # learning again


def test_a_stream_that_keeps_failing_is_quarantined_without_holding_the_commit(tmp_path, monkeypatch):
    """A stream whose every batch fails (its saved state itself is what the scoring cannot take) is not retried
    for ever: after three failures in a row it is quarantined until a restart — its later records dead-lettered
    as ``stream_failed`` — and neither it nor its failed samples hold its partition's commit."""
    from streamer.ingest import unscored_letters

    store, tracker = DictStore(), OffsetTracker()
    proc, a, b = _two_streams_scored(tmp_path, tracker, store)
    poison = 7777.0
    b = [(t, poison) if i >= 320 else (t, v) for i, (t, v) in enumerate(b)]
    _poison_scoring(monkeypatch, "state", poison, b)
    letters, refused = [], []
    for off in range(300, 400):
        for part, stream, samples in ((0, "a", a), (1, "b", b)):
            tracker.seen(part, off)
            verdict = proc.add_sensor("sensor", [Sample(stream, *samples[off])], (part, off))
            if verdict is not None:
                refused.append((stream, off, verdict.reason))
        if off % 10 == 0:
            proc.step()
            letters += unscored_letters(proc)
            proc.flush(store)
            proc.save_states()
            tracker.committed(tracker.positions(proc.holds()))
    proc.step()
    proc.flush(store)
    proc.save_states()
    tracker.committed(tracker.positions(proc.holds()))
    # the batch 311-320 fails; scored again record by record, 320 fails, then 321 (the state is replaced by a
    # fresh one), then 322: quarantined, its pending records (322-330) dead-lettered, its later ones refused
    assert proc.stats.scoring_failures == 4 and proc.held_streams() == ["sensor/b"]
    assert [x.record.offset for x in letters] == list(range(320, 331))
    assert refused == [("b", off, "stream_failed") for off in range(331, 400)]
    scored_b = len(store.measurement(WINDOW_SCORE, "b"))
    assert scored_b == 320  # every sample of b is scored, dead-lettered or refused: none is lost
    assert tracker.committed_position(1) == 400 and tracker.committed_position(0) == 400
    assert proc.idle()


def test_a_poisoned_state_tail_is_replaced_however_records_fall_into_steps(tmp_path, monkeypatch):
    """One record per step (a slow sensor: one sample per round). The model fails on every window reaching back
    over a sample it cannot take, which the state keeps in its tail: the batch failed (the state kept, untouched),
    the second pass's first record failed and went back to that same state, the next one failed too — and the
    stream was quarantined before a fresh state was ever tried, and again after every restart (the poisoned tail
    was checkpointed). A fresh state is now always tried before a quarantine."""
    from streamer.ingest import unscored_letters

    store, tracker = DictStore(), OffsetTracker()
    proc, a, b = _two_streams_scored(tmp_path, tracker, store)
    b = [(t, 7777.0) if i == 320 else (t, v) for i, (t, v) in enumerate(b)]
    _poison_scoring(monkeypatch, "model", 7777.0, b)
    letters = []
    for off in range(300, 400):
        for part, stream, samples in ((0, "a", a), (1, "b", b)):
            tracker.seen(part, off)
            assert proc.add_sensor("sensor", [Sample(stream, *samples[off])], (part, off)) is None
        proc.step()
        letters += unscored_letters(proc)
        proc.flush(store)
        proc.save_states()
        tracker.committed(tracker.positions(proc.holds()))
    assert proc.held_streams() == [] and 1 <= len(letters) <= 2
    assert tracker.committed_position(1) == 400
    assert len(store.measurement(WINDOW_SCORE, "b")) == 400 - len(letters)


def test_a_quarantined_stream_holds_nothing_even_when_a_checkpoint_of_it_fails(tmp_path, monkeypatch):
    """A checkpoint covering the stream was being written when the stream was quarantined, and failed: its
    offsets went back into the stream's unsaved ones, which a quarantined stream never saves or gives up — its
    partition's commit stuck until a restart."""
    from streamer.ingest import unscored_letters

    store, tracker = DictStore(), OffsetTracker()
    proc, a, b = _two_streams_scored(tmp_path, tracker, store)

    def feed(lo, hi, bb):
        for off in range(lo, hi):
            for part, stream, samples in ((0, "a", a), (1, "b", bb)):
                tracker.seen(part, off)
                proc.add_sensor("sensor", [Sample(stream, *samples[off])], (part, off))

    feed(300, 311, b)
    proc.step()
    proc.flush(store)
    real_write = proc._state_files.write

    def failing_write(files):
        raise OSError("disk full (for a moment)")

    monkeypatch.setattr(proc._state_files, "write", failing_write)
    assert proc.save_states(wait=False) == 2  # its failure is seen only when the next checkpoint reaps it
    b = [(t, 7777.0) if i >= 320 else (t, v) for i, (t, v) in enumerate(b)]
    _poison_scoring(monkeypatch, "state", 7777.0, b)
    feed(311, 331, b)
    proc.step()  # the batch fails
    proc.step()  # record by record: 320, 321 (fresh state), 322: quarantined
    assert proc.held_streams() == ["sensor/b"]
    unscored_letters(proc)
    proc.flush(store)
    monkeypatch.setattr(proc._state_files, "write", real_write)
    feed(331, 340, b)
    for _ in range(3):
        proc.step()
        unscored_letters(proc)
        proc.flush(store)
        proc.save_states()
        tracker.committed(tracker.positions(proc.holds()))
    assert tracker.committed_position(0) == tracker.committed_position(1) == 340


def test_a_quarantined_stream_is_not_evicted_at_the_stream_cap(tmp_path, monkeypatch):
    """Evicted, it came back from its checkpoint with its failures forgotten and scored again: the quarantine (and
    the held-streams alert) ended silently, not at a restart."""
    from streamer.ingest import unscored_letters

    store, tracker = DictStore(), OffsetTracker()
    proc, a, b = _two_streams_scored(tmp_path, tracker, store)
    b = [(t, 7777.0) if i >= 320 else (t, v) for i, (t, v) in enumerate(b)]
    _poison_scoring(monkeypatch, "state", 7777.0, b)
    for off in range(300, 331):
        for part, stream, samples in ((1, "b", b), (0, "a", a)):
            proc.add_sensor("sensor", [Sample(stream, *samples[off])], (part, off))
        if off % 10 == 0:
            proc.step()
            unscored_letters(proc)
            proc.flush(store)
            proc.save_states()
    assert proc.held_streams() == ["sensor/b"]
    proc.step()
    proc.flush(store)
    proc.save_states()
    proc.max_streams = 2
    assert proc.add_sensor("sensor", [Sample("c", *a[0])], (2, 0)) is None  # room made by evicting a, not b
    verdict = proc.add_sensor("sensor", [Sample("b", *b[331])], (1, 331))
    assert proc.held_streams() == ["sensor/b"] and verdict is not None and verdict.reason == "stream_failed"


def test_samples_given_up_hold_the_commit_until_taken_and_leave_with_their_partition(tmp_path, monkeypatch):
    """The caller dead-letters what a step gave up before it commits; until it takes them they must hold the
    commit, and a rebalance that takes their partition away takes them too (the new owner scores them again)."""
    store, tracker = DictStore(), OffsetTracker()
    proc, a, b = _two_streams_scored(tmp_path, tracker, store)
    b = [(t, 7777.0) if i == 305 else (t, v) for i, (t, v) in enumerate(b)]
    _poison_scoring(monkeypatch, "state", 7777.0, b)
    for off in range(300, 310):
        tracker.seen(1, off)
        proc.add_sensor("sensor", [Sample("b", *b[off])], (1, off))
    proc.step()  # the batch fails
    assert proc.scoring_left  # a loop that steps while anything is left (the shutdown's) scores it again
    assert proc.step(max_samples=3) == 3  # record by record, within the step's budget
    assert proc.scoring_left and proc._streams[("sensor", "b")].pending() == 7
    proc.step()  # 305 fails again: given up, not yet taken
    assert not proc.scoring_left
    proc.flush(store)
    proc.save_states()
    assert tracker.positions(proc.holds())[1] == 305
    proc.drop_partitions([1])
    assert proc.take_unscored() == []


def test_a_training_part_scored_again_record_by_record_stays_saved_until_it_is_scored(tmp_path, monkeypatch):
    """A checkpoint had saved part of a training part (its records no longer held the commit); the batch failed
    and was scored again record by record, cut by the step's budget; the next checkpoint saved the detector state,
    so the file no longer held the rest of the training part, which nothing held either: after a restart it was
    neither scored nor dead-lettered."""
    from streamer.ingest import unscored_letters

    store, tracker, letters = DictStore(), OffsetTracker(), []
    b = stamped(values(300, seed=1))
    b[290] = (b[290][0], 7777.0)

    def take(proc, lo, hi):
        for off in range(lo, hi):
            tracker.seen(1, off)
            assert proc.add_sensor("sensor", [Sample("b", *b[off])], (1, off)) is None

    def round_(proc, **kw):
        proc.step(**kw)
        letters.extend(unscored_letters(proc))
        proc.flush(store)
        proc.save_states()
        tracker.committed(tracker.positions(proc.holds()))

    proc = make(tmp_path)
    take(proc, 0, 200)  # part of the training part, checkpointed: its records are committed
    round_(proc)
    assert tracker.committed_position(1) == 200
    take(proc, 200, 300)
    _poison_scoring(monkeypatch, "state", 7777.0, b)
    round_(proc)  # the fit
    round_(proc)  # the batch fails at 290
    round_(proc, max_samples=50)  # record by record, within the budget: the rest of the training part pending
    again = make(tmp_path)  # a restart from the commit
    take(again, tracker.committed_position(1), 300)
    drain(again, store)
    letters.extend(unscored_letters(again))
    scored = {p.time_ns for p in store.measurement(WINDOW_SCORE, "b")}
    given_up = {x.record.offset for x in letters}
    assert [off for off, (t, _) in enumerate(b) if t not in scored and off not in given_up] == []


def test_streams_scored_again_record_by_record_keep_to_the_steps_budget(tmp_path, monkeypatch):
    """After one failed step of a shared model every stream of it scores its batch again record by record: each
    was given at least one record whatever the budget (a step of thousands of single-record passes)."""
    from models.detector.fitted import FittedDetector as Fitted

    proc, store = make(tmp_path, model_mode="shared"), DictStore()
    series = {f"s{k}": stamped(values(320, seed=k)) for k in range(12)}
    for k, (name, x) in enumerate(series.items()):
        assert proc.add_sensor("sensor", [Sample(name, t, v) for t, v in x[:300]], (k, 0)) is None
    drain(proc, store)
    for off in range(300, 320):
        for k, (name, x) in enumerate(series.items()):
            assert proc.add_sensor("sensor", [Sample(name, *x[off])], (k, off)) is None
    down = _failing_while_set(monkeypatch, Fitted, "score_windows", RuntimeError("the device failed for a moment"))
    proc.step()
    assert sum(st.careful for st in proc._streams.values()) == 12
    down[0] = False
    assert proc.step(max_samples=5) == 5 and proc.scoring_left
    drain(proc, store)
    assert all(len(store.measurement(WINDOW_SCORE, name)) == 320 for name in series)


def test_a_failed_batch_of_many_small_records_is_scored_again_in_runs_not_one_record_at_a_time(tmp_path,
                                                                                                  monkeypatch):
    """A failed batch was scored again one record at a time, each from its own ~1 MB state copy and a padded model
    pass: 18 times the batched cost with one-sample records, so that a round of such records (a slow sensor's
    backlog after an outage) could outlast ``max.poll.interval.ms`` and the group dropped the worker, which
    re-read the same records. Runs that halve when they fail and double when they succeed find the record that
    fails with a few copies, and score the rest as one record at a time would."""
    from models.detector.online import DetectorState
    from streamer.ingest import unscored_letters

    store, tracker = DictStore(), OffsetTracker()
    proc, a, b = _two_streams_scored(tmp_path, tracker, store)
    more = stamped(values(1000, seed=1))
    b = [(t, 7777.0) if i == 700 else (t, v) for i, (t, v) in enumerate(more)]
    _poison_scoring(monkeypatch, "state", 7777.0, b)
    for off in range(300, 1000):
        proc.add_sensor("sensor", [Sample("b", *b[off])], (1, off))
    copies = [0]
    real_copy = DetectorState.state_dict

    def counted(self):
        copies[0] += 1
        return real_copy(self)

    monkeypatch.setattr(DetectorState, "state_dict", counted)
    proc.step()  # the batch fails, then is scored again
    assert proc._streams[("sensor", "b")].careful
    proc.step()
    letters = unscored_letters(proc)
    assert [x.record.offset for x in letters] == [700] and not proc.scoring_left
    assert copies[0] <= 40  # one record at a time: 700 copies
    proc.flush(store)
    assert len(store.measurement(WINDOW_SCORE, "b")) == 999


def test_an_alert_opened_in_a_run_that_failed_later_is_counted_once(tmp_path, monkeypatch):
    """A run of records is built into points before it can fail; the alerts it opened were counted then, and again
    when the run, halved, was built once more."""
    from streamer.ingest import unscored_letters

    store, tracker = DictStore(), OffsetTracker()
    proc, a, b = _two_streams_scored(tmp_path, tracker, store)
    more = stamped(values(700, seed=1))  # an alert opens at the spike (450); 470 fails later in the same run
    b = [(t, 7777.0) if i == 470 else (t, v) for i, (t, v) in enumerate(more)]
    _poison_scoring(monkeypatch, "alerts", 7777.0, b)  # the alert rule fails after the points before it are built
    opened_before = proc.stats.alerts_opened
    for off in range(300, 700):
        proc.add_sensor("sensor", [Sample("b", *b[off])], (1, off))
    proc.step()
    proc.step()
    assert [x.record.offset for x in unscored_letters(proc)] == [470]
    written = proc.flush(store).alert_points
    opened = [p for p in written if p.fields["state"] == "open"]
    assert opened and proc.stats.alerts_opened - opened_before == len(opened)


def test_a_state_replaced_after_failures_is_saved_before_its_stream_can_be_evicted(tmp_path, monkeypatch):
    """A fresh state replaced one whose checkpointed tail held what the model cannot take, but the stream was not
    marked changed: at the stream cap it was evicted, came back from the poisoned checkpoint and failed again —
    every later record dead-lettered, the failures forgotten with each eviction, never quarantined."""
    from streamer.ingest import unscored_letters

    store = DictStore()
    proc = make(tmp_path)
    a, b = stamped(values(500)), stamped(values(500, seed=1))
    for off in range(300):
        proc.add_sensor("sensor", [Sample("a", *a[off])], (0, off))
        proc.add_sensor("sensor", [Sample("b", *b[off])], (1, off))
    proc.step()
    proc.step()
    proc.flush(store)
    proc.save_states()
    _poison_scoring(monkeypatch, "model", 7777.0, b)
    proc.max_streams = 2
    letters, poisoned_at, extra = [], None, stamped(values(50, seed=5))

    def round_(part, stream, samples):
        proc.add_sensor("sensor", [Sample(stream, *x) for x in samples], (part, samples[0][0]))
        proc.step()
        letters.extend(unscored_letters(proc))
        proc.flush(store)
        proc.save_states()

    for k, lo in enumerate(range(300, 500, 10)):
        rec = b[lo:lo + 10]
        st = proc._streams.get(("sensor", "b"))
        if poisoned_at is None and st is not None and st.state is not None:
            ends = st.state.channels.window_ends(10) - st.state.position
            if ends.size and ends.max() < 9:  # the poisoned sample comes after the record's last window: it scores
                poisoned_at = lo + 9
                rec = rec[:-1] + [(rec[-1][0], 7777.0)]
        round_(1, "b", rec)
        round_(0, "a", a[lo:lo + 10])
        proc.add_sensor("sensor", [Sample(f"x{k}", *extra[0])], (2 + k, 0))  # a new stream at the cap
    assert poisoned_at is not None and proc.stats.evicted > 0
    assert [p for p in store.measurement(WINDOW_SCORE, "b") if p.time_ns > b[poisoned_at + 100][0]]


def test_an_audio_chunk_whose_scoring_raises_is_dead_lettered_alone_and_the_stream_scores_on(tmp_path, monkeypatch):
    """The audio side of the record-by-record retry: only the chunk the state cannot take leaves (as a chunk that
    decodes to its own samples and stamp), the chunks around it are scored as an uninterrupted run scores them,
    and the stream's sample index goes on (no gap, no overlap)."""
    from models.detector.online import DetectorState
    from streamer.ingest import unscored_letters
    from streamer.messages import decode_audio

    n, size = AUDIO_RATE * 3, 4000
    x = fan(n)
    t0 = 1_700_000_000 * S
    chunks = [AudioChunk("fan", t0 + start * S // AUDIO_RATE, AUDIO_RATE, x[start:start + size].copy())
              for start in range(0, n, size)]
    bad = 20  # past the training part (one second, about 11 chunks)
    chunks[bad].samples[100] = 0.777

    def run(proc, store):
        letters = []
        for i, c in enumerate(chunks):
            assert proc.add_audio("audio", c, (0, i)) is None
            if i % 4 == 3:
                proc.step()
                letters += unscored_letters(proc)
                proc.flush(store)
        drain(proc, store)
        return letters + unscored_letters(proc)

    ref_store = DictStore()
    assert run(audio_processor(tmp_path / "ref"), ref_store) == []
    want = {p.time_ns: p.fields["score"] for p in ref_store.measurement(WINDOW_SCORE)}
    real_update = DetectorState.update

    def update(self, samples, scores):
        if np.any(samples == np.float32(0.777)):
            raise RuntimeError("the state cannot take this chunk")
        return real_update(self, samples, scores)

    monkeypatch.setattr(DetectorState, "update", update)
    store = DictStore()
    proc = audio_processor(tmp_path / "run")
    letters = run(proc, store)
    assert [x.record.offset for x in letters] == [bad]
    chunk = decode_audio(letters[0].record.value, letters[0].record.headers, letters[0].record.key)
    assert chunk.ts_ns == chunks[bad].ts_ns and np.array_equal(chunk.samples, chunks[bad].samples)
    got = {p.time_ns: p.fields["score"] for p in store.measurement(WINDOW_SCORE)}
    lo, hi = chunks[bad].ts_ns, chunks[bad + 1].ts_ns
    before = [t for t in want if t < lo]
    assert before and all(got[t] == pytest.approx(want[t], abs=1e-9) for t in before)
    assert 0 <= max(want) - max(got) < 8192 * S // AUDIO_RATE  # scored to the end (one chunk fewer: the grid moved)
    assert not [t for t in got if lo <= t < hi]  # the windows ending in the dead-lettered chunk are not scored
    assert proc.stats.audio_gaps == 0 and proc.stats.rejected == 0


@pytest.mark.parametrize("size", [1000, 40])
def test_an_audio_restart_with_millisecond_stamps_scores_what_an_uninterrupted_run_scores(tmp_path, size):
    """A restored stream skipped re-read chunks by their sample index, which millisecond stamps put up to 22
    samples off: the last scored chunk could be taken again (in part, or whole for small chunks) and the next one
    dropped as 'replayed'. It now skips by the chunk's own stamp."""
    n = AUDIO_RATE * 2
    x = fan(n, seed=3)
    t0 = 1_700_000_000 * S
    chunks = [AudioChunk("fan", round((t0 + start * S / AUDIO_RATE) / 1e6) * 1_000_000, AUDIO_RATE,
                         x[start:start + size]) for start in range(0, n, size)]
    every = max(1, 2000 // size)

    def run(proc, store, todo, commit_at=None):
        for i, c in todo:
            assert proc.add_audio("audio", c, (0, i)) is None
            if i % every == 0:
                proc.step()
                proc.flush(store)
                if commit_at is not None and i >= commit_at:
                    proc.save_states()
                    return

    ref_store = DictStore()
    ref = audio_processor(tmp_path / "ref")
    run(ref, ref_store, enumerate(chunks))
    drain(ref, ref_store)
    want = {p.time_ns: p.fields["score"] for p in ref_store.measurement(WINDOW_SCORE)}

    store = DictStore()
    first = audio_processor(tmp_path / "run")
    run(first, store, enumerate(chunks), commit_at=int(len(chunks) * 0.7))
    assert store.measurement(WINDOW_SCORE)  # it had scored something before the crash
    again = audio_processor(tmp_path / "run")  # re-reads everything from an old commit
    run(again, store, enumerate(chunks))
    drain(again, store)
    got = {p.time_ns: p.fields["score"] for p in store.measurement(WINDOW_SCORE)}
    assert got.keys() == want.keys()
    np.testing.assert_allclose([got[t] for t in want], list(want.values()), rtol=0, atol=1e-9)
    assert again.stats.rejected == 0 and again.stats.replayed > 0


def test_a_pending_chunk_stamped_before_a_scored_one_is_not_skipped_after_a_restart(tmp_path):
    """Found in review: the checkpoint's skip mark was the stamp of the last scored chunk, so a pending chunk the
    producer had stamped earlier (a re-sent, longer range, accepted for its new part) was skipped after a restart
    as if scored, and its new samples were never scored."""
    size = 4410
    t0 = 1_700_000_000 * S
    x = fan(size * 16, seed=5)

    def chunk(k, length=size, at=None):
        start = k * size if at is None else at
        return AudioChunk("fan", t0 + (start * S) // AUDIO_RATE, AUDIO_RATE, x[start:start + length])

    store = DictStore()
    proc = audio_processor(tmp_path)
    for k in range(12):  # the training part (1 s) and a little more, scored
        assert proc.add_audio("audio", chunk(k), (0, k)) is None
    proc.step()
    proc.step()
    proc.flush(store)
    # a re-sent range: starts before the last scored chunk (an earlier stamp than its), runs half a chunk past it
    resent = chunk(0, length=2 * size, at=11 * size - size // 2)
    assert proc.add_audio("audio", resent, (0, 12)) is None
    received = proc._streams[("audio", "fan")].received
    proc.save_states()  # the re-sent range is still pending
    again = audio_processor(tmp_path)
    verdicts = [again.add_audio("audio", chunk(k), (0, k)) for k in range(12)]
    # scored before: skipped; the skip mark is one stamp, below the pending range's, so the scored chunk stamped
    # after that range's start is re-read as late instead (a dead letter of something already scored, not a loss)
    assert verdicts[:11] == [None] * 11 and (verdicts[11] is None or verdicts[11].reason == "late")
    assert again.add_audio("audio", resent, (0, 12)) is None
    st = again._streams[("audio", "fan")]
    assert st.received == received  # its new samples are taken again, not skipped as if scored


def test_a_reread_chunk_stamped_before_the_skip_mark_keeps_samples_past_the_restored_ones(tmp_path):
    """Found in review: a restored stream skipped every chunk stamped at or before its skip mark, so a re-sent,
    longer range accepted after the checkpoint (stamped early, running past the saved samples) lost its new
    samples at the restart, silently."""
    size = 4410
    t0 = 1_700_000_000 * S
    x = fan(size * 20, seed=5)

    def chunk(at, length=size):
        return AudioChunk("fan", t0 + (at * S) // AUDIO_RATE, AUDIO_RATE, x[at:at + length])

    store = DictStore()
    proc = audio_processor(tmp_path)
    for k in range(12):
        assert proc.add_audio("audio", chunk(k * size), (0, k)) is None
    proc.step()
    proc.step()
    resent = chunk(11 * size - size // 2, 2 * size)  # stamped at chunk 10.5, runs to 12.5
    assert proc.add_audio("audio", resent, (0, 12)) is None
    proc.step()
    proc.flush(store)
    proc.save_states()  # scored and saved; the skip mark is chunk 11's stamp
    late_range = chunk(int(10.75 * size), 2 * size)  # stamped before the mark, runs to 12.75: new past 12.5
    assert proc.add_audio("audio", late_range, (0, 13)) is None
    received = proc._streams[("audio", "fan")].received
    again = audio_processor(tmp_path)  # crash before the next save: record 13 is read again
    assert again.add_audio("audio", late_range, (0, 13)) is None
    assert again._streams[("audio", "fan")].received == received


def audio_records(rng, x, t0, resend_rate=0.0):
    """A producer's records of ``x``: chunks of 2 ms to 0.2 s stamped in milliseconds; with ``resend_rate``, some
    records re-send a range starting 2 ms to 0.1 s before what was sent, ending before that (a duplicate) or past
    it (a longer range). (Re-sends within a millisecond of the end cannot be told from continuations: documented.)"""
    ms = AUDIO_RATE // 1000
    end, out = 0, []
    while end < x.size:
        if out and end > 4 * ms and rng.random() < resend_rate:
            a = end - int(rng.integers(2 * ms + 2, min(end, AUDIO_RATE // 10) + 1))
            if rng.random() < 0.7:
                b = min(x.size, end + int(rng.integers(-2 * ms, 4000)))
            else:
                b = end - int(rng.integers(0, 2 * ms))
            b = max(b, a + 1)
        else:
            a, b = end, min(x.size, end + int(rng.integers(90, 8820)))
        out.append(AudioChunk("fan", round((t0 + a * S / AUDIO_RATE) / 1e6) * 1_000_000, AUDIO_RATE, x[a:b]))
        end = max(end, b)
    return out


@pytest.mark.parametrize("resend_rate", [0.0, 0.25])
@pytest.mark.parametrize("seed", range(8))
def test_audio_restarts_anywhere_score_what_an_uninterrupted_run_scores(tmp_path, seed, resend_rate):
    """Random chunk sizes (2 ms to 0.2 s), millisecond stamps, re-sent ranges, a checkpoint and a crash at random
    points, the commit behind the checkpoint: the stored scores must be an uninterrupted run's, none missing, none
    twice. A re-read may be dead-lettered as late once more than the uninterrupted run did (the skip mark is one
    stamp; docs/messages.md), never skipped unscored."""
    rng = np.random.default_rng(seed)
    n = int(AUDIO_RATE * 1.8)
    x = fan(n, seed=seed)
    chunks = audio_records(rng, x, 1_700_000_000 * S, resend_rate)
    steps = set(rng.choice(len(chunks), size=max(1, len(chunks) // 3), replace=False).tolist())
    settle = bool(rng.integers(2))  # score everything before the checkpoint, or leave the newest chunks pending
    tracker = OffsetTracker()  # the crashing run's

    def run(proc, store, todo, save_at=None, crash_at=None):
        verdicts = {}
        for i, c in todo:
            if crash_at is not None and i == crash_at:
                break
            if save_at is not None:
                tracker.seen(0, i)
            verdicts[i] = proc.add_audio("audio", c, (0, i))
            if i in steps:
                proc.step()
                proc.flush(store)
            if save_at is not None and i == save_at:
                if settle:
                    proc.registry.wait()
                    proc.step()  # fits, if the training part is complete
                    proc.step()
                    proc.flush(store)
                proc.save_states()
                tracker.committed(tracker.positions(proc.holds()))
        return verdicts

    ref_store = DictStore()
    ref = audio_processor(tmp_path / "ref")
    ref_verdicts = run(ref, ref_store, enumerate(chunks))
    drain(ref, ref_store)
    want = {p.time_ns: p.fields["score"] for p in ref_store.measurement(WINDOW_SCORE)}
    resent = ref.stats.audio_overlap_samples + sum(v is not None for v in ref_verdicts.values())
    assert (resent > 0) == (resend_rate > 0)  # the generator re-sent something, or nothing

    save_at = int(rng.integers(len(chunks) // 2, len(chunks) - 2))
    crash_at = int(rng.integers(save_at + 1, len(chunks)))
    store = DictStore()
    run(audio_processor(tmp_path / "run"), store, enumerate(chunks), save_at=save_at, crash_at=crash_at)
    # the restart reads from the commit, or from further back (a later commit was lost)
    commit_at = int(rng.integers(0, (tracker.committed_position(0) or 0) + 1))
    again = audio_processor(tmp_path / "run")
    verdicts = run(again, store, list(enumerate(chunks))[commit_at:])
    drain(again, store)
    got = {p.time_ns: p.fields["score"] for p in store.measurement(WINDOW_SCORE)}
    assert got.keys() == want.keys()
    np.testing.assert_allclose([got[t] for t in want], list(want.values()), rtol=0, atol=1e-9)
    extra = [v.reason for i, v in verdicts.items() if v is not None and ref_verdicts[i] is None]
    assert set(extra) <= {"late"} and (resend_rate > 0 or not extra)


def test_one_streams_backlog_is_scored_over_several_steps_a_record_at_least(tmp_path):
    """One stream's pending samples were scored whole in one step, whatever the budget: a backlog of a million
    samples (a restart behind a fast sensor, a replayed file) built a million points at once. A step now takes the
    stream's oldest whole records within the budget — at least one — and the scores are an unbounded run's."""
    samples = stamped(values(TRAIN + 140))
    ref, ref_store = make(tmp_path / "ref"), DictStore()
    feed(ref, "a", samples, store=ref_store)
    drain(ref, ref_store)
    proc, store = make(tmp_path / "run", max_samples_per_round=5), DictStore()  # less than one record
    for i in range(0, len(samples), 7):
        assert proc.add_sensor("sensor", [Sample("a", t, v) for t, v in samples[i:i + 7]], (0, i)) is None
    steps, points = [], []
    while not steps or proc.scoring_left or not proc.idle():  # the first step starts the fit
        steps.append(proc.step())
        before = len(store.measurement(WINDOW_SCORE, "a"))
        proc.flush(store)
        points.append(len(store.measurement(WINDOW_SCORE, "a")) - before)
    assert sum(steps) == len(samples) and max(steps) == 7 and max(points) <= 7  # one record a step
    assert len(steps) > len(samples) // 7
    got = {p.time_ns: p.fields["score"] for p in store.measurement(WINDOW_SCORE, "a")}
    want = {p.time_ns: p.fields["score"] for p in ref_store.measurement(WINDOW_SCORE, "a")}
    assert got.keys() == want.keys()  # to float rounding: the reference ran in other chunks (a step per 25 records)
    np.testing.assert_allclose([got[t] for t in want], list(want.values()), rtol=1e-12, atol=1e-15)


def test_a_step_scores_at_most_its_budget_and_the_next_one_goes_on_where_it_stopped(tmp_path):
    """A step scored every ready stream's pending samples at once: when a detector became ready for many waiting
    streams, one step could outlast max.poll.interval.ms and the group dropped the member. A step now stops after
    ``max_samples_per_round`` samples — a stream's oldest records, as many as the budget leaves (a step once took
    whole streams, and one stream's backlog built a point per sample at once) —, the next starts with the first
    stream left, and the scores are those of an unbounded run."""
    series = {f"s{k}": stamped(values(420, seed=k)) for k in range(4)}
    fitter = make(tmp_path)  # the four detectors, fitted and saved once; the runs below load them
    for k, (name, samples) in enumerate(series.items()):
        feed(fitter, name, samples[:TRAIN], part=k)
    drain(fitter, DictStore())

    def loaded(**kw):
        proc = make(tmp_path, **kw)
        for k, (name, samples) in enumerate(series.items()):
            for off, (t, v) in enumerate(samples[:400]):
                assert proc.add_sensor("sensor", [Sample(name, t, v)], (k, off)) is None
        return proc

    ref, ref_store = loaded(), DictStore()
    drain(ref, ref_store)
    for off, (t, v) in enumerate(series["s0"][400:], start=400):
        ref.add_sensor("sensor", [Sample("s0", t, v)], (0, off))
    drain(ref, ref_store)

    proc, store = loaded(max_samples_per_round=500), DictStore()
    fresh = stamped(values(TRAIN, seed=9))  # a new stream whose training part is complete: its fit is due
    for off, (t, v) in enumerate(fresh):
        assert proc.add_sensor("sensor", [Sample("fresh", t, v)], (5, off)) is None
    assert proc.step() == 500 and proc.scoring_left  # s0's 400 records and s1's first 100
    # its fit was started in that step although the budget was spent (fits run aside)
    assert not proc.registry.fit_due(proc.registry.key_for("sensor", "fresh"))
    for off, (t, v) in enumerate(series["s0"][400:], start=400):  # s0 sends on: s2 and s3 must not wait behind it
        assert proc.add_sensor("sensor", [Sample("s0", t, v)], (0, off)) is None
    assert proc.step() == 500  # s2 whole and s3's first 100
    proc.flush(store)
    assert len(store.measurement(WINDOW_SCORE, "s2")) == 400 and len(store.measurement(WINDOW_SCORE, "s3")) == 100
    steps = []
    while proc.scoring_left or not proc.idle():
        steps.append(proc.step())
    assert sum(steps) == 2 * 300 + 20 + TRAIN and max(steps) <= 500 and proc.step() == 0
    proc.flush(store)
    got = {(p.tags["stream"], p.time_ns): p.fields["score"] for p in store.measurement(WINDOW_SCORE)
           if p.tags["stream"] != "fresh"}
    want = {(p.tags["stream"], p.time_ns): p.fields["score"] for p in ref_store.measurement(WINDOW_SCORE)}
    assert len(got) == 4 * 400 + 20 and got == want


def test_a_steps_budget_counts_audio_samples_not_points(tmp_path):
    """Audio scores one point per window (4,096 samples): a budget that counted points let a monitor round of
    20,000 samples score every waiting stream whole (minutes of scoring between two polls)."""
    proc = audio_processor(tmp_path)
    t0 = 1_700_000_000 * S
    for k in range(3):
        x = fan(AUDIO_RATE * 3, seed=k)
        assert proc.add_audio("audio", AudioChunk(f"fan{k}", t0, AUDIO_RATE, x), (k, 0)) is None
    proc.step(max_samples=0)  # fits (per-stream models), nothing scored
    proc.step(max_samples=0)
    taken = proc.step(max_samples=20_000)
    assert taken == AUDIO_RATE * 3 and proc.scoring_left  # one whole stream, in samples
    assert proc.step(max_samples=20_000) == AUDIO_RATE * 3


def test_a_training_part_hook_below_the_detectors_minimum_is_refused_not_lengthened(tmp_path):
    """The demo's and the benchmarks' per-stream training parts: one the detector cannot fit on is an error naming the
    stream; before, it was silently lengthened to 48 samples, which trained on the caller's test part."""
    proc = build_processor(settings(tmp_path), background=False, train_samples_for=lambda cls, stream: 30)
    for off, (t, v) in enumerate(stamped(values(60))):
        assert proc.add_sensor("sensor", [Sample("short", t, v)], (0, off)) is None
    with pytest.raises(ValueError, match=r"sensor/short: a training part of 30 samples is too short \(.*48"):
        proc.step()
    ok = build_processor(settings(tmp_path / "ok"), background=False, train_samples_for=lambda cls, stream: 48)
    for off, (t, v) in enumerate(stamped(values(60))):
        ok.add_sensor("sensor", [Sample("exact", t, v)], (0, off))
    drain(ok, DictStore())
    assert ok.stats.scored == 60
    fitted = ok.registry.detector(ok.registry.key_for("sensor", "exact"))
    assert fitted is not None and fitted.summary.train_points == 48  # the hook's length, not the preset's 240


def test_a_stream_whose_own_detector_is_large_takes_the_room_it_needs(tmp_path):
    """The cap's unit is a ``nab`` stream with its detector (~0.5 MB). A ``ucr`` stream's detector keeps every
    training window of its discord channels (48–295 MB on UCR's training parts): counted as one, a worker sized
    for the cap would run out of memory after a few dozen such streams. A scoring stream now counts by its detector's
    memory (per-stream models); with a shared model, as one."""
    proc = make(tmp_path)
    store = DictStore()
    samples = stamped(values(TRAIN + 40))
    feed(proc, "a", samples, store=store)
    drain(proc, store)
    fitted = proc.detections_of("sensor", "a").fitted
    assert proc.stream_cap_used() == 1
    fitted.nbytes = 100 * 2**20  # as a ucr detector of a 30,000-sample training part
    used = proc.stream_cap_used()
    assert used == memory.fitted_weight(100 * 2**20) and (used - 1) * 2.3 <= 100 - 1.5 < used * 2.3
    proc.max_streams = used + 1
    t = samples[0][0]
    assert proc.add_sensor("sensor", [Sample("b", t, 1.0)], (1, 0)) is None
    refused = proc.add_sensor("sensor", [Sample("c", t, 1.0)], (2, 0))
    assert refused is not None and refused.reason == "too_many_streams"
    assert memory.fitted_weight(100 * 2**20, per_stream_models=False) == 1


def test_a_detectors_memory_counts_its_discord_windows():
    from stream_models import quick_fit

    from models.detector import preset

    x = values(4000)
    fitted = quick_fit(x[:3000], preset("ucr"))
    windows = sum(d._refs.nbytes for d in fitted.discords.values())
    assert windows > 1_000 * 8 * len(fitted.discords)  # every training window of each channel, kept
    assert windows < fitted.nbytes < windows + 8 * 2**20  # beside them, a small U-Net and reference state
