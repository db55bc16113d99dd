"""Streaming benchmark: sustained samples/s and latency (sample timestamp → point written) of the real monitor.

    .venv/bin/python benchmarks/streaming.py                      # 100 sensor streams at 50 Hz + 4 audio at 16 kHz
    .venv/bin/python benchmarks/streaming.py --only sensor --seconds 60

What runs: a producer *process* generates synthetic streams in real time (timestamps = wall clock at generation)
into a Kafka-protocol broker; the monitor (``--members`` processes of one consumer group, each running
``scalowatch.cli_stream.build_monitor``, the same object as ``scalowatch monitor``) consumes and scores every sample with the full detector of the class's preset (``nab`` for
sensors, ``audio`` for audio: every channel, the likelihoods, the spatial rule), one detector per class fitted
beforehand on synthetic normal data (``model_mode="shared"``, so the numbers are about streaming, not fitting), and
writes to InfluxDB. Without ``--bootstrap``/``--influx-url`` both servers are started locally with
tests/servers.py (Tansu + InfluxDB 1.x behind nginx). Latency of a point = wall time when its ``window_score``
point was durably written minus the timestamp of its sample. The first ``--settle-s`` seconds are excluded (group
join, first batches). The sustained rate counts what was consumed while the load was offered (a backlog drained
afterwards does not count). ``--detector-only`` measures the detector alone: samples/s on one core (one torch thread),
offline, for each preset, with the case's number of streams micro-batched the way the monitor does it.

Targets (the issue): 5,000 sensor samples/s with p99 < 1 s; audio in real time. The producer shares the 2 cores
with the monitor, and the machine is shared with other jobs: the JSON records the load average.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.runinfo import finish_run, start_run, write_json  # noqa: E402

log = logging.getLogger("benchmarks.streaming")
NS = 1_000_000_000


# ---------------------------------------------------------------------------------------------------- producer
def _produce(kind: str, bootstrap: str, topic: str, streams: int, rate: float, seconds: float,
             samples_per_record: int, ready: "mp.Event", counter: "mp.Value") -> None:
    """Runs in its own process: real-time synthetic data, timestamps = the wall-clock instant of each sample."""
    from kafka import KafkaProducer

    from streamer.messages import encode_audio, encode_sensor_batch

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks=1)
    rng = np.random.default_rng(0)
    names = [f"bench-{kind}-{i:03d}" for i in range(streams)]
    freqs = rng.uniform(0.5, 3.0, size=streams) if kind == "sensor" else rng.uniform(200, 2000, size=streams)
    period_ns = int(round(NS / rate))
    ready.wait()
    t0 = (time.time_ns() // period_ns + 1) * period_ns
    n_total = int(seconds * rate)
    sent = 0
    for start in range(0, n_total, samples_per_record):
        idx = np.arange(start, min(start + samples_per_record, n_total))
        ts = t0 + idx * period_ns
        wait = (int(ts[-1]) - time.time_ns()) / NS  # a record leaves when its last sample "happened"
        if wait > 0:
            time.sleep(wait)
        t = idx / rate
        for i, name in enumerate(names):
            x = np.sin(2 * np.pi * freqs[i] * t) + 0.1 * rng.standard_normal(len(idx))
            if kind == "sensor":
                producer.send(topic, key=name.encode(), value=encode_sensor_batch(name, zip(ts.tolist(), x.tolist())))
            else:
                value, headers = encode_audio(name, int(ts[0]), (0.3 * x).astype(np.float32), int(rate))
                producer.send(topic, key=name.encode(), value=value, headers=headers)
        sent += len(idx) * streams
        counter.value = sent
    producer.flush()
    producer.close()


# ---------------------------------------------------------------------------------------------------- measuring
class LatencyHistogram:
    """Latencies in 1 ms bins up to two minutes (beyond: one overflow bin): a soak writes millions of points, and
    keeping each latency would grow the very process whose memory the soak watches."""

    RESOLUTION_S = 0.001
    BINS = 120_000

    def __init__(self) -> None:
        self.counts = np.zeros(self.BINS + 1, dtype=np.int64)
        self.max = 0.0

    def add(self, latencies: np.ndarray) -> None:
        if latencies.size:
            idx = np.clip((latencies / self.RESOLUTION_S).astype(np.int64), 0, self.BINS)
            self.counts += np.bincount(idx, minlength=self.BINS + 1)
            self.max = max(self.max, float(latencies.max()))

    def sparse(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(bins, counts, max) of the non-empty bins: what a member process sends its parent."""
        bins = np.flatnonzero(self.counts)
        return bins, self.counts[bins], self.max

    def add_sparse(self, bins: np.ndarray, counts: np.ndarray, maximum: float) -> None:
        self.counts[bins] += counts
        if counts.size:
            self.max = max(self.max, maximum)

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def percentile(self, q: float) -> float | None:
        """Upper edge of the bin holding the q-th percentile (so never optimistic by more than 1 ms)."""
        total = self.count
        if not total:
            return None
        at = int(np.searchsorted(np.cumsum(self.counts), q / 100.0 * total))
        return round(min((at + 1) * self.RESOLUTION_S, self.max), 4)

    def summary(self) -> dict:
        return {"count": self.count, "p50": self.percentile(50), "p99": self.percentile(99),
                "max": round(self.max, 4) if self.count else None}


class TimingSink:
    """Wraps the real sink; per written window_score point, wall time of the durable write − its time. Points
    written before ``measure_from`` (wall seconds: group join, first batches) are not counted."""

    def __init__(self, inner):
        self.inner = inner
        self.measure_from = float("inf")
        self.total = LatencyHistogram()
        self.interval = LatencyHistogram()
        self.lock = threading.Lock()

    def write(self, points) -> None:
        self.inner.write(points)
        now = time.time_ns()
        if now / NS < self.measure_from:
            return
        latencies = np.fromiter(((now - p.time_ns) / NS for p in points if p.measurement == "window_score"),
                                dtype=np.float64)
        with self.lock:
            self.total.add(latencies)
            self.interval.add(latencies)

    def take_interval(self) -> LatencyHistogram:
        with self.lock:
            out, self.interval = self.interval, LatencyHistogram()
        return out

    def close(self) -> None:
        self.inner.close()


def rss_mib() -> float:
    """Resident memory of this process (a member calls it for itself), from /proc (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return float("nan")


def synthetic_training(kind: str, rate: float, n: int) -> np.ndarray:
    """A normal training part like the producer's streams (a sine plus noise)."""
    rng = np.random.default_rng(1)
    t = np.arange(n) / rate
    freq = 1.5 if kind == "sensor" else 800.0
    amp = 1.0 if kind == "sensor" else 0.3
    return amp * (np.sin(2 * np.pi * freq * t) + 0.1 * rng.standard_normal(n))


def pretrain_shared(settings, kind: str, rate: float) -> str:
    """Fit the class's detector (its preset) on synthetic normal data, saved where the registry looks."""
    from models.detector import FittedDetector
    from streamer.assemble import detector_configs
    from streamer.model_registry import SHARED

    config = detector_configs(settings.monitor)[kind]
    fitted = FittedDetector.fit(synthetic_training(kind, rate, config.train_samples), config, reference=False)
    return fitted.save(Path(settings.monitor.model_dir) / kind / SHARED)


def detector_throughput(preset_name: str, kind: str, rate: float, streams: int, seconds: float = 10.0) -> dict:
    """Samples/s of the detector alone on one core, fed the way the monitor feeds it: ``streams`` streams sharing
    one fitted detector, a tenth of a second of samples per stream per round, every round's windows scored in
    one micro-batch. The training parts are scored first and not timed."""
    import torch
    from threadpoolctl import threadpool_limits

    from models.detector import FittedDetector, preset, window_scores_together

    config = preset(preset_name)
    fitted = FittedDetector.fit(synthetic_training(kind, rate, config.train_samples), config, reference=False)
    chunk = max(1, int(rate / 10))
    rounds = int(seconds * rate) // chunk
    x = synthetic_training(kind, rate, config.train_samples + rounds * chunk + streams)
    series = [x[i:i + config.train_samples + rounds * chunk] for i in range(streams)]
    states = [fitted.new_state() for _ in range(streams)]

    def feed(parts: list[np.ndarray]) -> None:
        scores = window_scores_together(fitted, list(zip(states, parts)))
        for state, part, part_scores in zip(states, parts, scores):
            state.update(part, part_scores)

    threads = torch.get_num_threads()
    # One core means one thread in every pool (numpy's BLAS runs the discords); both come back as they were, or
    # whatever runs next in this process (the test suite) scores with one thread.
    with threadpool_limits(limits=1):
        torch.set_num_threads(1)
        try:
            feed([s[:config.train_samples] for s in series])
            t0 = time.perf_counter()
            for r in range(rounds):
                lo = config.train_samples + r * chunk
                feed([s[lo:lo + chunk] for s in series])
            elapsed = time.perf_counter() - t0
        finally:
            torch.set_num_threads(threads)
    samples = streams * rounds * chunk
    return {"preset": preset_name, "kind": kind, "streams": streams, "samples": samples,
            "seconds": round(elapsed, 2), "samples_per_s_per_core": round(samples / elapsed, 1),
            "window": fitted.window, "hop": fitted.hop}


def _member(settings, index: int, stop: "mp.Event", measure_from: "mp.Value", stats: "mp.Array",
            reports: "mp.Queue") -> None:
    """Runs in its own process: one member of the consumer group, the object ``scalowatch monitor`` runs
    (``build_monitor``), its sink timed. Every second it hands its new latencies (a sparse histogram) to the parent
    and keeps ``stats`` current: samples consumed, points scored, RSS (MiB), streams, partitions assigned."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s member{index} %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    from scalowatch.cli_stream import build_monitor
    from streamer.monitor import LOOP_PHASES

    monitor = build_monitor(settings)
    timing = TimingSink(monitor.sink)
    monitor.sink = timing
    halt = threading.Event()
    thread = threading.Thread(target=monitor.run, args=(halt,), daemon=True)
    thread.start()

    def update() -> None:
        processor = monitor.processor
        stats[:] = [processor.stats.samples, processor.stats.scored, rss_mib(), processor.stream_count(),
                    len(monitor.consumer.assignment()), *(monitor.stats.loop_seconds[k] for k in LOOP_PHASES)]

    while not stop.wait(1.0):
        timing.measure_from = measure_from.value
        update()
        reports.put(("interval", index, timing.take_interval().sparse()))
    halt.set()
    thread.join(60)
    update()
    reports.put(("total", index, timing.total.sparse()))


def run_case(kind: str, *, bootstrap: str, influx_url: str, database: str, streams: int, rate: float,
             seconds: float, samples_per_record: int, settle_s: float, workdir: Path, preset: str,
             sample_every: float = 10.0, members: int = 1, cpu_threads: int = 0) -> dict:
    """One case: ``members`` monitor processes in one consumer group (each what ``scalowatch monitor`` runs)
    against a producer process at ``streams`` × ``rate`` samples/s for ``seconds``."""
    from streamer.config import InfluxSettings, KafkaSettings, MonitorSettings, Settings, StoreSettings
    from streamer.monitor import LOOP_PHASES

    uid = uuid.uuid4().hex[:6]
    monitor_kw = dict(model_dir=workdir / f"models-{kind}-{uid}", model_mode="shared", poll_timeout_ms=20,
                      commit_interval_ms=1000, snapshots=True, cpu_threads=cpu_threads)
    if kind == "sensor":
        monitor_kw.update(sensor_preset=preset)
    else:
        monitor_kw.update(audio_sample_rate=int(rate), audio_preset=preset)
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, sensor_topic=f"bench{uid}.sensors",
                            audio_topic=f"bench{uid}.audio", alerts_topic=f"bench{uid}.alerts",
                            dead_letter_topic=f"bench{uid}.dlq", group_id=f"bench{uid}", session_timeout_ms=6000,
                            heartbeat_interval_ms=1000, max_poll_records=2000),
        influx=InfluxSettings(url=influx_url, bucket=database, org="scalowatch"),
        store=StoreSettings(kind="influx"),
        monitor=MonitorSettings(**monitor_kw),
    )
    log.info("%s: fitting the shared detector", kind)
    version = pretrain_shared(settings, kind, rate)
    from streamer.kafka_io import ensure_topics

    partitions = 4  # per topic, split among the members
    topics = [settings.kafka.sensor_topic, settings.kafka.audio_topic]
    ensure_topics(settings, topics, partitions=partitions)
    ctx = mp.get_context("spawn")
    stop, reports = ctx.Event(), ctx.Queue()
    measure_from = ctx.Value("d", float("inf"))
    stats = [ctx.Array("d", 5 + len(LOOP_PHASES)) for _ in range(members)]
    procs = [ctx.Process(target=_member, args=(settings, i, stop, measure_from, stats[i], reports))
             for i in range(members)]
    for proc in procs:
        proc.start()
    total_partitions = partitions * len(topics)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
            sum(s[4] for s in stats) == total_partitions and all(s[4] for s in stats)):
        time.sleep(0.2)
    log.info("%s: %d member(s) assigned %s partitions", kind, members, [int(s[4]) for s in stats])
    ready, counter = ctx.Event(), ctx.Value("q", 0)
    topic = settings.kafka.sensor_topic if kind == "sensor" else settings.kafka.audio_topic
    producer = ctx.Process(target=_produce, args=(kind, bootstrap, topic, streams, rate, seconds,
                                                  samples_per_record, ready, counter))
    producer.start()
    load_before = os.getloadavg()
    t_start = time.time()
    measure_from.value = t_start + settle_s
    timeline: list[dict] = []
    interval, totals = LatencyHistogram(), LatencyHistogram()
    lock = threading.Lock()

    def consumed() -> int:
        return int(sum(s[0] for s in stats))

    def collect() -> None:
        """The members' latency reports, until every member has sent its total."""
        finished = 0
        while finished < members:
            what, _, sparse = reports.get()
            with lock:
                if what == "interval":
                    interval.add_sparse(*sparse)
                else:
                    totals.add_sparse(*sparse)
                    finished += 1

    def loop_seconds() -> list[float]:
        return [sum(s[5 + i] for s in stats) for i in range(len(LOOP_PHASES))]

    def sample() -> None:
        """Every ``sample_every`` s: memory, lag (samples produced but not yet consumed), the interval's p99 and
        where the members' loops spent the interval (seconds per phase, summed over the members)."""
        nonlocal interval
        last_loop = loop_seconds()
        while not done.wait(sample_every):
            with lock:
                taken, interval = interval, LatencyHistogram()
            now_loop = loop_seconds()
            timeline.append({"t_s": round(time.time() - t_start, 1), "rss_mib": round(sum(s[2] for s in stats), 1),
                             "member_rss_mib": [round(s[2], 1) for s in stats],
                             "lag_samples": int(counter.value) - consumed(),
                             "points": taken.count, "p99_s": taken.percentile(99),
                             "streams": int(sum(s[3] for s in stats)),
                             "loop_s": {k: round(b - a, 2) for k, a, b in zip(LOOP_PHASES, last_loop, now_loop)}})
            last_loop = now_loop
            log.info("%s: %s", kind, timeline[-1])

    done = threading.Event()
    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    ready.set()
    producer.join(seconds + 120)
    produced = counter.value
    consumed_at_end = consumed()  # what was taken in while the load was offered: the sustained rate
    drain_deadline = time.monotonic() + 60
    while consumed() < produced and time.monotonic() < drain_deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    done.set()
    sampler.join(5)
    stop.set()
    collector.join(120)
    for proc in procs:
        proc.join(60)
    t_end = time.time()
    load_after = os.getloadavg()
    latency = totals.summary()
    total_consumed = consumed()
    result = {
        "kind": kind, "streams": streams, "rate_hz_per_stream": rate, "seconds": seconds,
        "samples_per_record": samples_per_record, "preset": preset, "model_version": version,
        "members": members, "cpu_threads": cpu_threads,
        "offered_samples_per_s": streams * rate,
        "samples_produced": int(produced), "samples_consumed": total_consumed,
        "samples_consumed_while_offered": consumed_at_end,
        "sustained_samples_per_s": round(consumed_at_end / seconds, 1),
        "lag_at_end_of_load_samples": int(produced) - consumed_at_end,
        "points_scored": int(sum(s[1] for s in stats)),
        "latency_s": latency,
        "kept_up": bool(total_consumed >= produced and latency["count"] and latency["p99"] < 1.0),
        "member_exit_codes": [proc.exitcode for proc in procs],
        "loadavg_before": load_before, "loadavg_after": load_after, "wall_s": round(t_end - t_start, 1),
        "sample_every_s": sample_every, "timeline": timeline,
    }
    log.info("%s: %s", kind, {k: v for k, v in result.items() if k != "timeline"})
    return result


def plot_timeline(cases: list[dict], path: Path) -> Path | None:
    """Memory, lag and the interval's p99 latency over time, one column per case (what a soak is read by)."""
    cases = [c for c in cases if len(c.get("timeline", [])) >= 2]
    if not cases:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(cases), figsize=(6 * len(cases), 7), sharex="col", squeeze=False)
    for col, case in enumerate(cases):
        t = [row["t_s"] / 60 for row in case["timeline"]]
        for ax, key, label in zip(axes[:, col], ("rss_mib", "lag_samples", "p99_s"),
                                  ("monitor RSS, all members (MiB)", "lag (samples)", "p99 latency (s)")):
            ax.plot(t, [row[key] if row[key] is not None else float("nan") for row in case["timeline"]])
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[0, col].set_title(f"{case['kind']}: {case['streams']} streams, {case['offered_samples_per_s']:.0f} samples/s")
        axes[-1, col].set_xlabel("minutes")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["sensor", "audio"], default=None)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--settle-s", type=float, default=5.0)
    p.add_argument("--sample-every", type=float, default=10.0,
                   help="Seconds between timeline samples (memory, lag, the interval's p99): a soak's record.")
    p.add_argument("--sensor-streams", type=int, default=100)
    p.add_argument("--sensor-rate", type=float, default=50.0)
    p.add_argument("--samples-per-record", type=int, default=5)
    p.add_argument("--audio-streams", type=int, default=4)
    p.add_argument("--audio-chunk", type=int, default=1600)
    p.add_argument("--sensor-preset", default="nab")
    p.add_argument("--audio-preset", default="audio")
    p.add_argument("--members", type=int, default=1,
                   help="Monitor processes in the consumer group (scale-out: e.g. one per core).")
    p.add_argument("--cpu-threads", type=int, default=0,
                   help="MonitorSettings.cpu_threads of each member (0: the libraries' defaults).")
    p.add_argument("--detector-only", action="store_true", help="Only the detector's samples/s per core.")
    p.add_argument("--bootstrap", default=None)
    p.add_argument("--influx-url", default=None)
    p.add_argument("--database", default="scalowatch")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "streaming.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    info, started = start_run([sys.executable, *sys.argv] if argv is None else ["benchmarks/streaming.py", *argv])
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="scalowatch-bench-"))
    throughput = []
    if args.only in (None, "sensor"):
        throughput.append(detector_throughput(args.sensor_preset, "sensor", args.sensor_rate, args.sensor_streams))
    if args.only in (None, "audio"):
        throughput.append(detector_throughput(args.audio_preset, "audio", 16000.0, args.audio_streams))
    for t in throughput:
        print(f"detector {t['preset']} ({t['kind']}): {t['samples_per_s_per_core']:.0f} samples/s on one core")
    if args.detector_only:
        info = finish_run(info, started)
        payload = {"benchmark": "streaming", "run": info.to_dict(), "detector_throughput": throughput, "cases": []}
        write_json(args.out, payload)
        return payload
    servers = []
    bootstrap, influx_url = args.bootstrap, args.influx_url
    try:
        if bootstrap is None or influx_url is None:
            sys.path.insert(0, str(REPO / "tests"))
            from servers import InfluxServer, TansuBroker

            if bootstrap is None:
                broker = TansuBroker().start()
                servers.append(broker)
                bootstrap = broker.bootstrap
            if influx_url is None:
                influx = InfluxServer(database=args.database).start()
                servers.append(influx)
                influx_url = influx.url
        cases = []
        common = dict(bootstrap=bootstrap, influx_url=influx_url, database=args.database, seconds=args.seconds,
                      settle_s=args.settle_s, workdir=workdir, sample_every=args.sample_every,
                      members=args.members, cpu_threads=args.cpu_threads)
        if args.only in (None, "sensor"):
            cases.append(run_case("sensor", streams=args.sensor_streams, rate=args.sensor_rate,
                                  samples_per_record=args.samples_per_record, preset=args.sensor_preset, **common))
        if args.only in (None, "audio"):
            cases.append(run_case("audio", streams=args.audio_streams, rate=16000.0,
                                  samples_per_record=args.audio_chunk, preset=args.audio_preset, **common))
    finally:
        for s in servers:
            s.close()
    info = finish_run(info, started)
    payload = {"benchmark": "streaming", "run": info.to_dict(), "detector_throughput": throughput, "cases": cases,
               "note": "2 shared CPU cores (producer process + monitor + servers on the same box); noisy."}
    write_json(args.out, payload)
    plot = plot_timeline(cases, args.out.with_suffix(".png"))
    if plot is not None:
        print(f"timeline plot: {plot}")
    for c in cases:
        print(f"{c['kind']} (preset {c['preset']}): {c['streams']} streams, sustained {c['sustained_samples_per_s']:.0f} samples/s "
              f"(offered {c['offered_samples_per_s']:.0f}), latency p50 {c['latency_s']['p50']} s "
              f"p99 {c['latency_s']['p99']} s, kept up: {c['kept_up']}")
    return payload


if __name__ == "__main__":
    main()
