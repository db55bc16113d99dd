"""Fault suite: labelled NAB files through a real broker into ``scalowatch monitor`` processes writing to a real
InfluxDB, while members are killed, join and leave, the store and the broker go away, and bad records of every kind
are mixed in. Then every stored point is compared with what the detector scores offline (what an undisturbed run
stores: the integration tests hold the two together) and every bad record is looked up in the dead-letter topic.

    .venv/bin/python benchmarks/faults.py                 # the full run: >= 10 kills, >= 5 rebalances, InfluxDB
                                                          # down 60 s, broker unreachable 30 s, 10,000 bad records
    .venv/bin/python benchmarks/faults.py --short         # a few of each (the version `make test` runs)
    .venv/bin/python benchmarks/faults.py --data ../shared/data/nab --files realKnownCause/nyc_taxi.csv ...

Servers (Tansu behind a TCP proxy, InfluxDB 1.x behind the nginx 2.x-write front) are started locally with
``tests/servers.py``; the monitors reach the broker through the proxy, so stopping the proxy makes the broker
unreachable to them while the producer keeps writing to it directly. Monitors are child processes
(``python -m scalowatch monitor``) configured by ``SCALOWATCH_*`` variables, sharing one model folder.

Target (issue 9): 0 missing, 0 differing, every bad record in the dead-letter topic with a reason, 0 unexpected
exits. ``faults.json`` goes to ``--out`` (default ``benchmarks/results/``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from benchmarks.runinfo import finish_run, start_run, write_json  # noqa: E402

log = logging.getLogger("benchmarks.faults")

BUNDLED_NAB = REPO / "streamer" / "demo_data" / "nab"
DEFAULT_FILES = ("artificialWithAnomaly/art_daily_jumpsup.csv", "realKnownCause/ec2_request_latency_system_failure.csv",
                 "realTraffic/speed_7578.csv")
BATCH = 10  # samples per sensor record
MAX_MESSAGE_BYTES = 8192


@dataclass(frozen=True)
class Plan:
    kills: int
    rebalance_cycles: int  # each: two members join, then leave (four membership changes)
    influx_outage_s: float
    broker_outage_s: float
    bad_records: int
    unreadable_every: int  # one record with a non-UTF-8 header key per this many bad records
    feed_s: float
    settle_timeout_s: float


FULL = Plan(kills=10, rebalance_cycles=2, influx_outage_s=60.0, broker_outage_s=30.0, bad_records=10_000,
            unreadable_every=1000, feed_s=150.0, settle_timeout_s=600.0)
SHORT = Plan(kills=2, rebalance_cycles=1, influx_outage_s=4.0, broker_outage_s=4.0, bad_records=240,
             unreadable_every=120, feed_s=15.0, settle_timeout_s=240.0)


# ------------------------------------------------------------------------------------------------- the inputs
@dataclass
class BadRecord:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list = field(default_factory=list)
    expected: str | None = None  # the dead-letter reason; None: any reason (random bytes)
    where: tuple[str, int, int] | None = None  # (topic, partition, offset) once sent


class _NotUtf8(str):
    """A header key whose bytes on the wire are not UTF-8, as a non-Python client could send (kafka-python's
    producer encodes keys with ``str.encode``)."""

    def encode(self, *args, **kwargs):  # noqa: ARG002
        return b"\xff\xfe-header"


def bad_records(n: int, unreadable_every: int, sensor: str, audio: str, rng: random.Random) -> list[BadRecord]:
    """``n`` bad records, cycling through every class of bad input the monitor must dead-letter."""
    from streamer.messages import encode_audio

    pcm, headers = encode_audio("mic", 1_700_000_000_000_000_000, np.zeros(64, np.float32), 16000)
    rate = [(k, b"8000" if k == "sample_rate" else v) for k, v in headers]
    dtype = [(k, b"int8" if k == "dtype" else v) for k, v in headers]
    future_ms = int(time.time() * 1000) + 400 * 86_400_000

    def sensor_json(i: int, body: str) -> bytes:
        return ('{"stream": "bad-%d", %s}' % (i, body)).encode()

    makers = [
        lambda i: BadRecord(sensor, b"bad-%d" % i, sensor_json(i, '"ts": 1, "value": ')[:-1], expected="malformed_json"),
        lambda i: BadRecord(sensor, b"bad-%d" % i, sensor_json(i, '"value": 1.0'), expected="missing_field"),
        lambda i: BadRecord(sensor, b"bad-%d" % i, sensor_json(i, '"ts": 1, "value": NaN'), expected="non_finite"),
        lambda i: BadRecord(sensor, b"bad-%d" % i, sensor_json(i, '"ts": 1, "value": "high"'), expected="bad_type"),
        lambda i: BadRecord(sensor, b"bad-%d" % i, sensor_json(i, '"ts": 1, "value": 1, "pad": "%s"'
                                                                % ("x" * MAX_MESSAGE_BYTES)), expected="too_large"),
        lambda i: BadRecord(sensor, b"bad-%d" % i, sensor_json(i, f'"ts": {future_ms}, "value": 1'),
                            expected="bad_timestamp"),
        lambda i: BadRecord(sensor, None, sensor_json(i, '"ts": 1, "value": 1'), expected="missing_key"),
        lambda i: BadRecord(sensor, b"bad-%d" % i, None, expected=None),  # a tombstone
        lambda i: BadRecord(sensor, b"bad-%d" % i, rng.randbytes(rng.randint(1, 300)), expected=None),
        lambda i: BadRecord(audio, b"mic", pcm, rate, expected="bad_sample_rate"),
        lambda i: BadRecord(audio, b"mic", pcm, dtype, expected="bad_dtype"),
        lambda i: BadRecord(audio, b"mic", pcm[:-1], headers, expected="bad_length"),
    ]
    out = []
    for i in range(n):
        if unreadable_every and i % unreadable_every == unreadable_every // 2:
            out.append(BadRecord(sensor, b"bad-%d" % i, b'{"stream": "x", "ts": 1, "value": 1}',
                                 [(_NotUtf8("h"), b"v")], expected="unreadable_record"))
        else:
            out.append(makers[i % len(makers)](i))
    rng.shuffle(out)
    return out


def feed(bootstrap: str, sources, bad: list[BadRecord], sensor_topic: str, seconds: float,
         errors: list[BaseException]) -> None:
    """Send the files' samples (``BATCH`` per record, key = stream) and the bad records, interleaved, paced to
    last ``seconds``; each bad record's (topic, partition, offset) is noted for the dead-letter check."""
    from kafka import KafkaProducer

    from streamer.messages import encode_sensor_batch

    try:
        good = []
        for src in sources:
            for lo in range(0, src.values.size, BATCH):
                pairs = zip(src.times_ns[lo:lo + BATCH].tolist(), src.values[lo:lo + BATCH].tolist())
                good.append((src.stream, encode_sensor_batch(src.stream, pairs), lo))
        good.sort(key=lambda item: item[2])  # the files interleaved by sample index, each in its own order
        items: list = [("good", g) for g in good]
        step = max(1, len(items) // max(1, len(bad)))
        for j, b in enumerate(bad):  # spread the bad records through the feed
            items.insert(min(len(items), (j + 1) * step + j), ("bad", b))
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4 * MAX_MESSAGE_BYTES)
        pause = seconds / max(1, len(items))
        started = time.monotonic()
        futures = []
        for k, (kind, item) in enumerate(items):
            if kind == "good":
                stream, value, _ = item
                producer.send(sensor_topic, key=stream.encode(), value=value)
            else:
                futures.append((item, producer.send(item.topic, key=item.key, value=item.value,
                                                    headers=item.headers)))
            delay = started + (k + 1) * pause - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        producer.flush(60)
        for item, fut in futures:
            meta = fut.get(30)
            item.where = (meta.topic, meta.partition, meta.offset)
        producer.close()
    except BaseException as exc:  # surfaced by the main thread
        errors.append(exc)


# ------------------------------------------------------------------------------------------------- the workers
class Workers:
    """``python -m scalowatch monitor`` child processes; exits we did not cause are counted as crashes."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env, self.logs = env, logs
        self.procs: dict[str, subprocess.Popen] = {}
        self.unexpected: list[dict] = []
        self._n = 0

    def start(self, name: str) -> None:
        self._n += 1
        out = open(self.logs / f"{name}-{self._n}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "scalowatch", "monitor"], env=self.env, cwd=REPO,
                                            stdout=out, stderr=subprocess.STDOUT)
        self.procs[name].log_path = out.name  # type: ignore[attr-defined]

    def wait_joined(self, name: str, timeout: float = 30.0) -> bool:
        """Until the member has its first assignment. Tansu (the test broker) can livelock its group when a member
        is killed in the middle of its own join — the survivors' SyncGroup then fails for ever — so a member is
        killed only once it is in the group (Apache Kafka expires such a member after its session timeout)."""
        path = Path(self.procs[name].log_path)  # type: ignore[attr-defined]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"streamer.monitor: assigned" in path.read_bytes():
                return True
            time.sleep(0.25)
        log.warning("member %s has not joined the group after %.0f s", name, timeout)
        return False

    def check(self) -> None:
        """Record and restart members that exited on their own."""
        for name, proc in list(self.procs.items()):
            code = proc.poll()
            if code is not None:
                tail = Path(proc.log_path).read_text(errors="replace")[-2000:]  # type: ignore[attr-defined]
                self.unexpected.append({"member": name, "exit_code": code, "log_tail": tail})
                log.error("member %s exited on its own (code %s)", name, code)
                self.start(name)

    def kill(self, name: str) -> None:
        self.check()
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def stop(self, name: str, timeout: float = 60.0) -> int | None:
        self.check()
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            self.unexpected.append({"member": name, "exit_code": None, "log_tail": "did not stop on SIGTERM"})
            return None

    def stop_all(self) -> None:
        for name in list(self.procs):
            code = self.stop(name)
            if code not in (0, None):
                self.unexpected.append({"member": name, "exit_code": code, "log_tail": "non-zero exit on SIGTERM"})


def settings_env(settings) -> dict[str, str]:
    from streamer.config import as_env

    env = as_env(settings, os.environ)
    env["OMP_NUM_THREADS"] = "1"  # several members share two cores
    return env


# ------------------------------------------------------------------------------------------------- checking
def stored_scores(influx, stream: str) -> dict[int, tuple[float, str]]:
    rows = influx.rows(f"SELECT score, decided_by FROM window_score WHERE stream = '{stream}'")
    return {int(r["time"]): (float(r["score"]), str(r["decided_by"])) for r in rows}


def compare(influx, sources, model_dir: Path) -> dict:
    """Every expected point stored once, equal (1e-6) to the detector's offline score of the same sample."""
    from models.detector import FittedDetector, score_series
    from streamer.model_registry import safe_name

    out = {"expected": 0, "stored": 0, "missing": 0, "differing": 0, "extra": 0, "per_stream": {}}
    for src in sources:
        want_at: dict[int, tuple[float, str]] = {}
        path = model_dir / "sensor" / safe_name(src.stream)
        if path.is_dir():
            fitted = FittedDetector.load(path, device="cpu")
            offline = score_series(fitted, src.values)["product"]
            for t, score, why in zip(src.times_ns.tolist(), offline.scores.tolist(), offline.decided_by):
                want_at[int(t)] = (float(score), str(why))  # a repeated timestamp keeps the later sample's point
        else:
            want_at = {int(t): (float("nan"), "") for t in src.times_ns.tolist()}
        got = stored_scores(influx, src.stream)
        missing = [t for t in want_at if t not in got]
        differing = [t for t, (s, why) in want_at.items()
                     if t in got and (not abs(got[t][0] - s) <= 1e-6 or got[t][1] != why)]
        extra = [t for t in got if t not in want_at]
        out["per_stream"][src.stream] = {"expected": len(want_at), "stored": len(got), "missing": len(missing),
                                         "differing": len(differing), "extra": len(extra),
                                         "first_missing": missing[:5], "first_differing": differing[:5],
                                         # stored (score, decided_by) against the offline ones: what differs
                                         "first_differing_values": [[t, list(got[t]), list(want_at[t])]
                                                                    for t in differing[:5]]}
        for k, v in (("expected", len(want_at)), ("stored", len(got)), ("missing", len(missing)),
                     ("differing", len(differing)), ("extra", len(extra))):
            out[k] += v
    return out


def dead_letter_check(bootstrap: str, dlq_topic: str, bad: list[BadRecord]) -> dict:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        parts = [TopicPartition(dlq_topic, p) for p in sorted(consumer.partitions_for_topic(dlq_topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        found: dict[tuple[str, int, int], set[str]] = {}
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 3.0:
            batch = consumer.poll(timeout_ms=500, max_records=5000)
            if batch:
                idle_since = time.monotonic()
            for records in batch.values():
                for rec in records:
                    h = {k: v for k, v in (rec.headers or [])}
                    key = (h["dlq.topic"].decode(), int(h["dlq.partition"]), int(h["dlq.offset"]))
                    found.setdefault(key, set()).add(h["dlq.reason"].decode())
    finally:
        consumer.close()
    missing, wrong, by_reason = [], [], {}
    for b in bad:
        reasons = found.get(b.where) if b.where else None
        if not reasons:
            missing.append({"where": b.where, "expected": b.expected})
            continue
        for r in reasons:
            by_reason[r] = by_reason.get(r, 0) + 1
        if b.expected is not None and b.expected not in reasons:
            wrong.append({"where": b.where, "expected": b.expected, "got": sorted(reasons)})
    return {"sent": len(bad), "dead_lettered": len(bad) - len(missing), "missing": len(missing),
            "wrong_reason": len(wrong), "by_reason": dict(sorted(by_reason.items())),
            "first_missing": missing[:10], "first_wrong": wrong[:10]}


# ------------------------------------------------------------------------------------------------- the run
def run(plan: Plan, *, data: Path, files: list[str], out: Path, seed: int) -> dict:
    from servers import InfluxServer, TansuBroker, TansuProxy

    from streamer.config import InfluxSettings, KafkaSettings, MonitorSettings, Settings, StoreSettings
    from streamer.kafka_io import ensure_topics
    from streamer.replay import read_nab_csv

    import shutil
    import tempfile

    info, t0 = start_run()
    rng = random.Random(seed)
    uid = uuid.uuid4().hex[:6]
    out = out.resolve()
    work = Path(tempfile.mkdtemp(prefix=f"scalowatch-faults-{uid}-"))  # servers' data, models, member logs
    (work / "logs").mkdir(parents=True, exist_ok=True)
    sources = []
    for rel in files:
        src = read_nab_csv(data / "data" / rel, labels=False)
        src.stream = f"faults-{uid}-{Path(rel).stem}"
        sources.append(src)
    counts = {"kills": 0, "rebalances": 0, "influx_outages": 0, "broker_outages": 0}
    with TansuBroker() as broker, TansuProxy(broker) as proxy, InfluxServer(workdir=work / "influx") as influx:
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=proxy.bootstrap, sensor_topic=f"f{uid}.sensors",
                                audio_topic=f"f{uid}.audio", alerts_topic=f"f{uid}.alerts",
                                dead_letter_topic=f"f{uid}.dlq", group_id=f"f{uid}", session_timeout_ms=6000,
                                heartbeat_interval_ms=1000, max_message_bytes=MAX_MESSAGE_BYTES),
            influx=InfluxSettings(url=influx.url, bucket=influx.database, org="scalowatch"),
            store=StoreSettings(kind="influx"),
            monitor=MonitorSettings(model_dir=work / "models", commit_interval_ms=500, state_checkpoint_s=2.0,
                                    sink_retry_initial_s=0.5, sink_retry_max_s=2.0),
        )
        k = settings.kafka
        ensure_topics(settings, {k.sensor_topic: 4, k.audio_topic: 2, k.dead_letter_topic: 2, k.alerts_topic: 1})
        bad = bad_records(plan.bad_records, plan.unreadable_every, k.sensor_topic, k.audio_topic, rng)
        workers = Workers(settings_env(settings), work / "logs")
        workers.start("base")
        feed_errors: list[BaseException] = []
        feeder = threading.Thread(target=feed, args=(broker.bootstrap, sources, bad, k.sensor_topic, plan.feed_s,
                                                     feed_errors), daemon=True)
        feeder.start()

        def wait(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                workers.check()
                time.sleep(0.25)

        def kill() -> None:
            workers.wait_joined("base")
            wait(rng.uniform(1.0, 4.0))
            workers.kill("base")
            counts["kills"] += 1
            log.info("fault: SIGKILL of the base member (%d)", counts["kills"])
            workers.start("base")

        steps: list = [kill] * plan.kills
        for _ in range(plan.rebalance_cycles):
            def cycle() -> None:
                for name in ("second", "third"):
                    workers.start(name)
                    counts["rebalances"] += 1
                    workers.wait_joined(name)
                    wait(8.0)
                for name in ("second", "third"):
                    workers.stop(name)
                    counts["rebalances"] += 1
                    wait(8.0)
                log.info("fault: members joined and left (%d membership changes so far)", counts["rebalances"])
            steps.insert(rng.randint(0, len(steps)), cycle)

        def outage(what: str, server, seconds: float, counter: str):
            def step() -> None:
                server.stop()
                counts[counter] += 1
                log.info("fault: %s for %.0f s", what, seconds)
                wait(seconds)
                server.start()
            return step

        steps.insert(rng.randint(0, len(steps)), outage("InfluxDB stopped", influx, plan.influx_outage_s,
                                                        "influx_outages"))
        steps.insert(rng.randint(0, len(steps)), outage("broker unreachable", proxy, plan.broker_outage_s,
                                                        "broker_outages"))
        for step in steps:
            step()
        feeder.join(plan.feed_s + 120)
        if feed_errors:
            raise feed_errors[0]

        # settle: the base member alone until every sample is stored (or the timeout)
        expected = sum(len(set(s.times_ns.tolist())) for s in sources)
        deadline = time.monotonic() + plan.settle_timeout_s
        stored = 0
        while time.monotonic() < deadline:
            workers.check()
            try:
                stored = sum(len(stored_scores(influx, s.stream)) for s in sources)
            except Exception:  # noqa: BLE001 - the store may still be warming up
                stored = 0
            if stored >= expected:
                break
            time.sleep(2.0)
        wait(5.0)  # let the last dead letters and commits through
        workers.stop_all()
        windows = compare(influx, sources, work / "models")
        letters = dead_letter_check(broker.bootstrap, k.dead_letter_topic, bad)
    finish_run(info, t0)
    result = {
        "benchmark": "faults", "run": info.to_dict(),
        "plan": plan.__dict__, "files": files, "data": str(data),
        "faults": {**counts, "rebalances_note": "membership changes caused (each join or leave of a member); "
                                                 "each SIGKILL adds one more when the member's session expires"},
        "bad_records": letters, "windows": windows,
        "unexpected_exits": len(workers.unexpected), "unexpected_exit_details": workers.unexpected[:5],
    }
    result["target_met"] = bool(windows["missing"] == 0 and windows["differing"] == 0 and letters["missing"] == 0
                                and letters["wrong_reason"] == 0 and not workers.unexpected)
    if result["target_met"]:
        shutil.rmtree(work, ignore_errors=True)
    else:
        result["work_dir"] = str(work)  # member logs and server data kept for a look
    write_json(out / "faults.json", result)
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--short", action="store_true", help="A few faults of each kind (about two minutes).")
    p.add_argument("--data", type=Path, default=BUNDLED_NAB, help="A folder in NAB layout (data/<category>/*.csv).")
    p.add_argument("--files", nargs="+", default=list(DEFAULT_FILES), help="Files relative to DATA/data.")
    p.add_argument("--kills", type=int, default=None)
    p.add_argument("--bad-records", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    plan = SHORT if args.short else FULL
    overrides = {k: v for k, v in (("kills", args.kills), ("bad_records", args.bad_records)) if v is not None}
    if overrides:
        plan = Plan(**{**plan.__dict__, **overrides})
    result = run(plan, data=args.data, files=args.files, out=args.out, seed=args.seed)
    w, b = result["windows"], result["bad_records"]
    print(f"faults: {result['faults']['kills']} kills, {result['faults']['rebalances']} membership changes, "
          f"InfluxDB down {plan.influx_outage_s:g} s, broker unreachable {plan.broker_outage_s:g} s | points "
          f"expected {w['expected']}, stored {w['stored']}, missing {w['missing']}, differing {w['differing']} | "
          f"bad records {b['sent']}, dead-lettered {b['dead_lettered']}, wrong reason {b['wrong_reason']} | "
          f"unexpected exits {result['unexpected_exits']} | target met: {result['target_met']} "
          f"-> {args.out / 'faults.json'}")
    return result


if __name__ == "__main__":
    main()
