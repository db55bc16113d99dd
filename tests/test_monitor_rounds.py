"""The monitor's round bookkeeping with a scripted consumer: rebalances, in the order kafka-python 3 calls them,
and outputs (dead letters, alerts) whose broker does not acknowledge.

The real client is exercised in ``test_monitor_e2e.py`` (two members on a real broker). Here the *order* of
the client's callbacks is scripted, because the broker decides when a join completes and a real run only
sometimes lands a poll between the two: under the eager protocol (the client's default assignors) the whole
assignment is announced as revoked before the rejoin, but the client keeps listing it until the join completes
(``kafka/coordinator/consumer.py``, ``_on_join_prepare_async``: "The partitions remain in
self._subscription.assignment until _on_join_complete replaces it"); under the cooperative protocol the
assignment is replaced first and only the lost partitions are announced. A member must end up holding the
streams of exactly the partitions it was given.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest

from kafka.structs import TopicPartition

from streamer.assemble import build_processor
from streamer.config import MonitorSettings
from streamer.monitor import Monitor, _Rebalance

TOPIC = "sensor"
MINUTE = 60 * 1_000_000_000


@dataclass
class ScriptedConsumer:
    """What the monitor calls on a consumer; ``poll`` runs the next scripted client step (callbacks included)."""

    assigned: set
    steps: list

    def __post_init__(self):
        self.listener = _Rebalance  # replaced by the monitor's listener in the test
        self.seeks: list = []
        self.commits: list = []

    def assignment(self):
        return set(self.assigned)

    def paused(self):
        return set()

    def pause(self, *partitions):
        pass

    def resume(self, *partitions):
        pass

    def seek(self, tp, offset):
        if tp not in self.assigned:
            raise ValueError(f"{tp} is not assigned")
        self.seeks.append((tp, offset))

    def commit(self, offsets):
        self.commits.append(dict(offsets))

    def poll(self, timeout_ms, max_records):
        if self.steps:
            self.steps.pop(0)(self)
        return {}


def tp(p):
    return TopicPartition(TOPIC, p)


class NoStore:
    def write(self, points):
        assert not points, "nothing is scored yet: the streams are still in their training part"


def monitor_holding(tmp_path, consumer):
    """A monitor whose processor holds one stream on each of partitions 0 and 1 (read up to offset 59, still in
    the training part: nothing scored, nothing written)."""
    proc = build_processor(MonitorSettings(model_dir=tmp_path / "models"), background=False)
    mon = Monitor(consumer, proc, NoStore(), topics=[TOPIC], class_of_topic=lambda topic: "sensor",
                  dead_letters=None)
    consumer.listener = _Rebalance(mon)
    for p, stream in ((0, "a"), (1, "b")):
        for off in range(60):
            proc.add_sensor("sensor", [_Sample(stream, (1_000_000 + off) * MINUTE, float(off % 7))], ((TOPIC, p), off))
            mon.tracker.seen((TOPIC, p), off)
    assert proc.partitions() == {(TOPIC, 0), (TOPIC, 1)}
    return mon, proc


@dataclass(frozen=True)
class _Sample:
    stream: str
    ts_ns: int
    value: float


def eager_revoke(c):
    """JoinGroup sent, the listener told that everything is revoked; the join is still pending when poll's
    timeout runs out, so the client still lists the old assignment."""
    c.listener.on_partitions_revoked(set(c.assigned))


def eager_join_done(new):
    def step(c):
        c.assigned = set(new)
        c.listener.on_partitions_assigned(set(new))
    return step


def test_eager_rebalance_drops_the_partition_that_went_elsewhere_after_the_join(tmp_path):
    consumer = ScriptedConsumer({tp(0), tp(1)}, [eager_revoke, lambda c: None, eager_join_done({tp(0)})])
    mon, proc = monitor_holding(tmp_path, consumer)
    mon.run_once()  # revocation announced, join pending: nothing is decided yet
    mon.run_once()
    assert proc.partitions() == {(TOPIC, 0), (TOPIC, 1)}
    mon.run_once()  # the join completes: partition 1 went to another member
    assert proc.partitions() == {(TOPIC, 0)}
    assert mon.tracker.highest_read((TOPIC, 1)) is None  # no commit for it from here on
    assert (tp(0), 60) in consumer.seeks  # the kept partition reads on where this member stopped
    assert all((TOPIC, 1) not in c and tp(1) not in c for c in consumer.commits)


def test_eager_rebalance_that_gives_everything_back_keeps_every_stream(tmp_path):
    consumer = ScriptedConsumer({tp(0), tp(1)}, [eager_revoke, eager_join_done({tp(0), tp(1)})])
    mon, proc = monitor_holding(tmp_path, consumer)
    mon.run_once()
    mon.run_once()
    assert proc.partitions() == {(TOPIC, 0), (TOPIC, 1)}
    assert {s[0] for s in consumer.seeks} == {tp(0), tp(1)}


def test_cooperative_revocation_settles_at_the_next_round_without_an_assignment(tmp_path):
    def cooperative_lose_1(c):
        c.assigned = {tp(0)}  # replaced before the listener hears of the revocation
        c.listener.on_partitions_revoked({tp(1)})

    consumer = ScriptedConsumer({tp(0), tp(1)}, [cooperative_lose_1])
    mon, proc = monitor_holding(tmp_path, consumer)
    mon.run_once()
    assert proc.partitions() == {(TOPIC, 0)}
    assert mon.tracker.highest_read((TOPIC, 1)) is None


def test_a_stream_in_two_partitions_is_read_again_from_the_kept_one_when_the_other_goes(tmp_path):
    """Stream s has records in partitions 0 and 1 (producers with different partitioners), b only in 1. Partition 0
    goes to another member: s is forgotten whole — its samples from partition 1 too, which nothing then held, so the
    commit of partition 1 passed them (lost). Now partition 1 is held and read again from s's first record there,
    and up to where this member had read only s's records are taken again: b's are not taken twice, neither from
    the batch that came with the revocation (fetched before the seek) nor after a later seek back."""
    from types import SimpleNamespace

    from streamer.ingest import InputRecord
    from streamer.messages import encode_sensor

    def record(p, off, stream):  # partition 0 holds s's older samples
        t = (1_000_000 + off + (0 if p == 1 else -100)) * MINUTE
        return InputRecord(TOPIC, p, off, stream.encode(), encode_sensor(stream, t, float(off % 7)))

    def fetched(r):
        return SimpleNamespace(topic=r.topic, partition=r.partition, offset=r.offset, key=r.key, value=r.value,
                               headers=r.headers, timestamp=r.timestamp_ms)

    class BatchConsumer(ScriptedConsumer):
        def poll(self, timeout_ms, max_records):
            self.batch = {}
            if self.steps:
                self.steps.pop(0)(self)
            return self.batch

    def cooperative_lose_0(c):  # the poll that brings the revocation also brings records fetched before it
        c.assigned = {tp(1)}
        c.listener.on_partitions_revoked({tp(0)})
        c.batch = {tp(1): [fetched(record(1, off, "b")) for off in range(70, 75)]}

    def assigned_again(c):  # another member joins later: partition 1 stays, and is sought again
        c.listener.on_partitions_revoked({tp(1)})
        c.listener.on_partitions_assigned({tp(1)})

    consumer = BatchConsumer({tp(0), tp(1)}, [cooperative_lose_0, assigned_again])
    proc = build_processor(MonitorSettings(model_dir=tmp_path / "models"), background=False)
    mon = Monitor(consumer, proc, NoStore(), topics=[TOPIC], class_of_topic=lambda topic: "sensor",
                  dead_letters=None)
    consumer.listener = _Rebalance(mon)
    first = {0: [record(0, off, "s") for off in range(30)],
             1: [record(1, off, "s" if off % 2 == 0 else "b") for off in range(10, 70)]}
    for p in (0, 1):
        for rec in first[p]:
            mon._handle(rec)
    b = proc._streams[("sensor", "b")]
    assert b.received == 30 and mon.tracker.highest_read((TOPIC, 1)) == 69
    mon.run_once()  # the rebalance settles: partition 0 went elsewhere
    assert ("sensor", "s") not in proc._streams and proc._streams[("sensor", "b")] is b
    assert consumer.seeks[-1] == (tp(1), 10)  # read again from s's first record in partition 1
    assert b.received == 30  # the batch fetched before the seek is not taken: the broker sends it again
    mon._commit(mon.clock())
    assert all(c[tp(1)].offset <= 10 for c in consumer.commits if tp(1) in c)  # nothing of s's is passed
    for rec in first[1][:30]:  # partition 1 again, as the broker sends it after the seek; then a rebalance
        mon._handle(rec)
    mon.run_once()
    assert consumer.seeks[-1] == (tp(1), 40)  # sought to where the re-read had got
    for rec in first[1][30:] + [record(1, off, "b") for off in range(70, 75)]:
        mon._handle(rec)
    assert b.received == 35 and mon.stats.dead_letters == 0  # b's records were not taken twice (nor as late)
    assert proc._streams[("sensor", "s")].received == 30  # s's records of partition 1 are back, once each
    assert (TOPIC, 1) not in mon._retake  # through: from here on every record is taken


def test_a_lost_membership_drops_everything(tmp_path):
    def lost(c):  # on_partitions_lost delegates to revoked; then the client clears its assignment
        c.listener.on_partitions_lost(set(c.assigned))
        c.assigned = set()

    consumer = ScriptedConsumer({tp(0), tp(1)}, [lost])
    mon, proc = monitor_holding(tmp_path, consumer)
    mon.run_once()
    assert proc.partitions() == set()


class DownTopic:
    """A dead-letter or alerts output whose broker does not acknowledge: what the monitor calls on one."""

    def __init__(self, pending):
        self.pending = pending
        self.timeouts = []
        self.up = False

    def flush(self, timeout_s=30.0):
        from streamer.kafka_io import KafkaOutputError

        self.timeouts.append(timeout_s)
        if not self.up:
            raise KafkaOutputError(f"{self.pending} record(s) unconfirmed")
        confirmed, self.pending = self.pending, 0  # re-sent and acknowledged
        return confirmed


class PausingConsumer(ScriptedConsumer):
    def __post_init__(self):
        super().__post_init__()
        self.paused_set = set()

    def paused(self):
        return set(self.paused_set)

    def pause(self, *partitions):
        self.paused_set |= set(partitions)

    def resume(self, *partitions):
        self.paused_set -= set(partitions)


def test_while_the_dead_letter_topic_is_down_nothing_is_committed_rounds_go_on_and_input_pauses_when_too_much_waits(
        tmp_path):
    """Each commit attempt waited 30 s for the unreachable dead-letter topic (the loop stalled) and input was never
    paused, however many unconfirmed records piled up in memory."""
    consumer = PausingConsumer({tp(0), tp(1)}, [])
    mon, proc = monitor_holding(tmp_path, consumer)
    mon.dead_letters = DownTopic(pending=5)
    mon.commit_interval_s = 0.0
    mon._dirty = True  # records were read since the last commit
    mon.run_once()
    assert consumer.commits == [] and mon.dead_letters.timeouts == [mon.output_flush_timeout_s] == [5.0]
    assert consumer.paused_set == set()  # a few unconfirmed records: read on
    mon.dead_letters.pending = mon.max_unconfirmed_outputs + 1
    mon.run_once()
    assert consumer.paused_set == {tp(0), tp(1)} and consumer.commits == []
    mon.dead_letters.up = True  # the topic is back: the paused rounds go on flushing, and confirm everything
    mon.run_once()
    assert mon.dead_letters.pending == 0 and consumer.commits  # committed at last
    mon.run_once()
    assert consumer.paused_set == set()


def test_the_status_line_names_quarantined_streams_as_a_warning(tmp_path, caplog):
    consumer = ScriptedConsumer({tp(0), tp(1)}, [])
    mon, proc = monitor_holding(tmp_path, consumer)
    with caplog.at_level("INFO", logger="streamer.monitor"):
        mon.log_status()
        proc._streams[("sensor", "b")].failed = "RuntimeError: boom"
        mon.log_status()
    first, second = [r for r in caplog.records if r.getMessage().startswith("status:")]
    assert first.levelname == "INFO" and "2 live streams" in first.getMessage() and "quarantined" not in first.getMessage()
    assert second.levelname == "WARNING" and "1 stream(s) quarantined" in second.getMessage()
    assert "time since the last status: " in first.getMessage()  # where the loop's time went, by phase
    assert "sensor/b" in second.getMessage()


def test_the_loop_publishes_its_counters_when_it_starts_and_then_at_most_once_a_second(tmp_path):
    """The health endpoint reads what the loop publishes (streamer/health.py): a snapshot as the loop starts (a first
    round that never ends then shows as a stall), then one a second however fast the rounds go."""
    import threading

    now = [0.0]
    published = []
    stop = threading.Event()

    def step(consumer):
        time.sleep(0.01)  # the broker takes its time: the loop's poll phase counts it
        now[0] += 0.25  # four rounds a second
        if now[0] >= 3.0:
            stop.set()

    consumer = ScriptedConsumer({tp(0), tp(1)}, [step] * 100)
    proc = build_processor(MonitorSettings(model_dir=tmp_path / "models"), background=False)
    mon = Monitor(consumer, proc, NoStore(), topics=[TOPIC], class_of_topic=lambda topic: "sensor",
                  dead_letters=None, on_snapshot=published.append, clock=lambda: now[0])
    consumer.subscribe = lambda topics, listener: None
    consumer.close = lambda *a, **k: None
    mon.run(stop)
    assert len(published) == 4  # at 0 (the start), 1, 2 and 3 s
    assert published[0].records == 0 and published[-1].assigned_partitions == 2
    assert not published[-1].input_paused and published[-1].held_streams == 0
    from streamer.monitor import LOOP_PHASES

    seconds = published[-1].loop_seconds
    assert tuple(seconds) == LOOP_PHASES and seconds["poll"] >= 0.01 * 11 and all(v >= 0 for v in seconds.values())


def test_the_loops_phases_add_up_to_its_time(tmp_path):
    """Time spent outside the named phases (publishing health, the status line, the paused input's sleeps, settling
    a rebalance) was not counted anywhere, so the status line's shares were of an unknown part of the loop."""
    import threading

    from streamer.monitor import LOOP_PHASES

    stop, published, rounds = threading.Event(), [], [0]

    def step(consumer):
        rounds[0] += 1
        if rounds[0] >= 5:
            stop.set()

    def slow_snapshot(snap):  # a health endpoint that takes its time
        time.sleep(0.05)
        published.append(snap)

    now = [0.0]

    def clock():
        now[0] += 1.0  # every round publishes
        return now[0]

    consumer = ScriptedConsumer({tp(0)}, [step] * 10)
    proc = build_processor(MonitorSettings(model_dir=tmp_path / "models"), background=False)
    mon = Monitor(consumer, proc, NoStore(), topics=[TOPIC], class_of_topic=lambda topic: "sensor",
                  dead_letters=None, on_snapshot=slow_snapshot, clock=clock)
    consumer.subscribe = lambda topics, listener: None
    consumer.close = lambda *a, **k: None
    started = time.monotonic()
    mon.run(stop)
    seconds, wall = mon.stats.loop_seconds, time.monotonic() - started
    assert tuple(seconds) == LOOP_PHASES and len(published) >= 5
    assert seconds["other"] >= 0.05 * (len(published) - 1)  # the publishing after each round
    assert sum(seconds.values()) <= wall


class ListStore:
    def __init__(self):
        self.points = []

    def write(self, points):
        self.points.extend(points)


@pytest.mark.parametrize("limit_s", [3.0, 1_000.0])
def test_shutdown_scores_for_at_most_its_limit_and_commits_only_what_it_scored(tmp_path, monkeypatch, limit_s):
    """SIGTERM scored every pending sample in one unbounded step: with a large backlog the supervisor's grace
    period ran out before the write, the checkpoint and the commit. Now it scores in small steps until its limit;
    what is scored is written and committed, the rest stays uncommitted for the restart."""
    import streamer.monitor as monitor

    fast = {"steps": 3, "max_train_windows": 32, "train_samples": 240}
    proc = build_processor(MonitorSettings(model_dir=tmp_path / "models", sensor_detector_options=fast),
                           background=False)
    now = [0.0]
    real_step = proc.step

    def slow_step(*args, **kwargs):  # every step takes a second of the monitor's clock
        now[0] += 1.0
        return real_step(*args, **kwargs)

    monkeypatch.setattr(proc, "step", slow_step)
    monkeypatch.setattr(monitor, "STEP_SAMPLES", 300)  # about one stream per step
    consumer = ScriptedConsumer({tp(0)}, [])
    consumer.close = lambda *a, **k: None
    store = ListStore()
    mon = Monitor(consumer, proc, store, topics=[TOPIC], class_of_topic=lambda topic: "sensor", dead_letters=None,
                  shutdown_scoring_s=limit_s, clock=lambda: now[0])
    rng = np.random.default_rng(0)
    off = 0
    for k in range(8):  # eight streams, one after the other on partition 0, each past its training part
        for i in range(300):
            proc.add_sensor("sensor", [_Sample(f"s{k}", (1_000_000 + i) * MINUTE, float(rng.normal()))],
                            ((TOPIC, 0), off))
            mon.tracker.seen((TOPIC, 0), off)
            off += 1
    real_step(max_samples=0)  # their detectors are fitted (fits start whatever the budget); nothing is scored
    mon.shutdown()
    scored = {p.tags["stream"] for p in store.points if p.measurement == "window_score"}
    committed = consumer.commits[-1][tp(0)].offset if consumer.commits else 0
    if limit_s > 100:
        assert scored == {f"s{k}" for k in range(8)} and committed == off
    else:
        assert 2 <= len(scored) <= 5  # about three steps of one stream each, then it stopped
        first_unscored = min(int(s[1:]) for s in {f"s{k}" for k in range(8)} - scored)
        assert committed <= 300 * first_unscored  # nothing it did not score is committed
        assert proc.backlog() > 0


@pytest.mark.parametrize("stopping", [False, True])
def test_a_round_looks_at_the_stop_signal_between_its_steps(tmp_path, monkeypatch, stopping):
    """A round may score up to max_samples_per_round (half a minute of one core by default); a SIGTERM arriving
    meanwhile waited for all of it before the shutdown's own time limit even began."""
    import threading

    import streamer.monitor as monitor

    fast = {"steps": 3, "max_train_windows": 32, "train_samples": 240}
    proc = build_processor(MonitorSettings(model_dir=tmp_path / "models", sensor_detector_options=fast),
                           background=False)
    monkeypatch.setattr(monitor, "STEP_SAMPLES", 300)
    mon = Monitor(ScriptedConsumer({tp(0)}, []), proc, ListStore(), topics=[TOPIC],
                  class_of_topic=lambda topic: "sensor", dead_letters=None)
    mon._stop = threading.Event()
    rng = np.random.default_rng(0)
    for k in range(6):
        for i in range(300):
            proc.add_sensor("sensor", [_Sample(f"s{k}", (1_000_000 + i) * MINUTE, float(rng.normal()))],
                            ((TOPIC, 0), 300 * k + i))
    proc.step(max_samples=0)  # fitted, nothing scored
    if stopping:
        mon._stop.set()
    mon._score_round()
    scored = proc.stats.scored
    assert scored == (300 if stopping else 6 * 300)


def test_a_commit_held_by_a_checkpoint_in_flight_follows_it_without_new_input(tmp_path):
    """The round's checkpoint is written in the background, so that round's commit stops before what it saves. The
    commit used to wait for new input to come again: a stream that went quiet left its last rounds uncommitted (the
    fault e2e test killed a monitor there and found nothing restored)."""
    import threading

    consumer = ScriptedConsumer({tp(0), tp(1)}, [])
    mon, proc = monitor_holding(tmp_path, consumer)
    mon.commit_interval_s, mon.state_checkpoint_s = 0.0, 1e-9
    gate, write = threading.Event(), proc._state_files.write
    proc._state_files.write = lambda files: (gate.wait(10), write(files))[1]
    mon._dirty = True  # records were read since the last commit
    mon.run_once()  # the training parts' checkpoint starts and waits at the gate: nothing is committed past it
    assert all(o.offset == 0 for c in consumer.commits for o in c.values())
    gate.set()
    deadline = time.monotonic() + 10
    while proc.checkpoint_in_flight and time.monotonic() < deadline:
        mon.run_once()  # no new input
        time.sleep(0.01)
    mon.run_once()
    assert {k: o.offset for k, o in consumer.commits[-1].items()} == {tp(0): 60, tp(1): 60}
