"""Streaming benchmark: sustained samples/s and latency (sample timestamp → point written) of the real monitor.

    .venv/bin/python benchmarks/streaming.py                      # 100 sensor streams at 50 Hz + 4 audio at 16 kHz
    .venv/bin/python benchmarks/streaming.py --only sensor --seconds 60

What runs: a producer *process* generates synthetic streams in real time (timestamps = wall clock at generation)
into a Kafka-protocol broker; the monitor (``streamer.cli_stream.build_monitor``, the same object as
``scalowatch monitor``) consumes, windows, scores with one shared model per stream class (pretrained here on
synthetic normal data, so the numbers are about streaming, not training) and writes to InfluxDB. Without
``--bootstrap``/``--influx-url`` both servers are started locally with tests/servers.py (Tansu + InfluxDB 1.x
behind nginx). Latency of a window = wall time when its ``window_score`` point was durably written minus the
timestamp of the window's last sample. The first ``--settle-s`` seconds are excluded (group join, first batches).

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
class TimingSink:
    """Wraps the real sink; records, per written window_score point, wall time of the durable write − its time."""

    def __init__(self, inner):
        self.inner = inner
        self.latencies: list[tuple[float, float]] = []  # (wall seconds at write, latency seconds)
        self.lock = threading.Lock()

    def write(self, points) -> None:
        self.inner.write(points)
        now = time.time_ns()
        with self.lock:
            self.latencies.extend((now / NS, (now - p.time_ns) / NS) for p in points
                                  if p.measurement == "window_score")

    def close(self) -> None:
        self.inner.close()


def pretrain_shared(settings, kind: str, rate: float, window: int, n: int = 256) -> str:
    """Train the class's shared model on synthetic normal windows and save it where the registry looks."""
    from streamer.assemble import scalogram_factory
    from streamer.model_registry import SHARED

    rng = np.random.default_rng(1)
    t = np.arange(window) / rate
    freqs = rng.uniform(0.5, 3.0, n) if kind == "sensor" else rng.uniform(200, 2000, n)
    phases = rng.uniform(0, 2 * np.pi, n)
    data = np.sin(2 * np.pi * freqs[:, None] * t[None, :] + phases[:, None]) + 0.1 * rng.standard_normal((n, window))
    model = scalogram_factory(settings.monitor)(kind)
    model.fit_windows(data.astype(np.float32))
    target = Path(settings.monitor.model_dir) / kind / SHARED
    model.save(target)
    return str(getattr(model, "version", ""))


def run_case(kind: str, *, bootstrap: str, influx_url: str, database: str, streams: int, rate: float,
             seconds: float, window: int, hop: int, samples_per_record: int, settle_s: float, workdir: Path,
             scorer: str, preset: str, train_steps: int, max_batch: int, max_wait_ms: int) -> dict:
    from streamer.cli_stream import build_monitor
    from streamer.config import InfluxSettings, KafkaSettings, MonitorSettings, Settings, StoreSettings

    uid = uuid.uuid4().hex[:6]
    monitor_kw = dict(
        model_dir=workdir / f"models-{kind}-{uid}", scorer=scorer, model_mode="shared", train_steps=train_steps,
        batch_max_size=max_batch, batch_max_wait_ms=max_wait_ms, poll_timeout_ms=20, commit_interval_ms=1000,
        snapshots=True, warmup_samples=0, alert_cooldown_s=0,
    )
    if kind == "sensor":
        monitor_kw.update(sensor_window=window, sensor_hop=hop, sensor_sample_period_ms=1000.0 / rate,
                          sensor_preset=preset)
    else:
        monitor_kw.update(audio_window=window, audio_hop=hop, audio_sample_rate=int(rate), audio_preset=preset)
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, sensor_topic=f"bench{uid}.sensors",
                            audio_topic=f"bench{uid}.audio", alerts_topic=f"bench{uid}.alerts",
                            dead_letter_topic=f"bench{uid}.dlq", group_id=f"bench{uid}", session_timeout_ms=6000,
                            heartbeat_interval_ms=1000, max_poll_records=2000),
        influx=InfluxSettings(url=influx_url, bucket=database, org="scalowatch"),
        store=StoreSettings(kind="influx"),
        monitor=MonitorSettings(**monitor_kw),
    )
    log.info("%s: pretraining the shared model", kind)
    version = pretrain_shared(settings, kind, rate, window)
    monitor = build_monitor(settings)
    timing = TimingSink(monitor.sink)
    monitor.sink = timing
    stop = threading.Event()
    thread = threading.Thread(target=monitor.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not monitor.consumer.assignment() and time.monotonic() < deadline:
        time.sleep(0.1)
    ctx = mp.get_context("spawn")
    ready, counter = ctx.Event(), ctx.Value("q", 0)
    topic = settings.kafka.sensor_topic if kind == "sensor" else settings.kafka.audio_topic
    proc = ctx.Process(target=_produce, args=(kind, bootstrap, topic, streams, rate, seconds, samples_per_record,
                                              ready, counter))
    proc.start()
    load_before = os.getloadavg()
    t_start = time.time()
    ready.set()
    proc.join(seconds + 120)
    produced = counter.value
    n_windows_expected = streams * max(0, (int(seconds * rate) - window) // hop)
    drain_deadline = time.monotonic() + 60
    while monitor.processor.stats.samples < produced and time.monotonic() < drain_deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    stop.set()
    thread.join(60)
    t_end = time.time()
    load_after = os.getloadavg()
    lat = np.array([l for w, l in timing.latencies if w >= t_start + settle_s], dtype=np.float64)
    consumed = monitor.processor.stats.samples
    duration = seconds
    result = {
        "kind": kind, "streams": streams, "rate_hz_per_stream": rate, "seconds": seconds,
        "window": window, "hop": hop, "samples_per_record": samples_per_record, "scorer": scorer,
        "preset": preset, "model_version": version, "max_batch": max_batch, "max_wait_ms": max_wait_ms,
        "offered_samples_per_s": streams * rate,
        "samples_produced": int(produced), "samples_consumed": int(consumed),
        "sustained_samples_per_s": round(consumed / duration, 1),
        "windows_scored": int(monitor.processor.stats.scored), "windows_expected_approx": n_windows_expected,
        "latency_s": {
            "count": int(lat.size),
            "p50": round(float(np.percentile(lat, 50)), 4) if lat.size else None,
            "p99": round(float(np.percentile(lat, 99)), 4) if lat.size else None,
            "max": round(float(lat.max()), 4) if lat.size else None,
        },
        "kept_up": bool(consumed >= produced and lat.size and np.percentile(lat, 99) < 1.0),
        "loadavg_before": load_before, "loadavg_after": load_after, "wall_s": round(t_end - t_start, 1),
    }
    log.info("%s: %s", kind, result)
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["sensor", "audio"], default=None)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--settle-s", type=float, default=5.0)
    p.add_argument("--sensor-streams", type=int, default=100)
    p.add_argument("--sensor-rate", type=float, default=50.0)
    p.add_argument("--sensor-window", type=int, default=64)
    p.add_argument("--sensor-hop", type=int, action="append", default=None,
                   help="Hop in samples (repeat to run several sensor cases; default 32).")
    p.add_argument("--samples-per-record", type=int, default=5)
    p.add_argument("--audio-streams", type=int, default=4)
    p.add_argument("--audio-window", type=int, default=4096)
    p.add_argument("--audio-hop", type=int, default=4096)
    p.add_argument("--audio-chunk", type=int, default=1600)
    p.add_argument("--scorer", default="recon")
    p.add_argument("--sensor-preset", default="series")
    p.add_argument("--audio-preset", default="series")
    p.add_argument("--train-steps", type=int, default=100)
    p.add_argument("--max-batch", type=int, default=256)
    p.add_argument("--max-wait-ms", type=int, default=100)
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
                      settle_s=args.settle_s, workdir=workdir, scorer=args.scorer, train_steps=args.train_steps,
                      max_batch=args.max_batch, max_wait_ms=args.max_wait_ms)
        if args.only in (None, "sensor"):
            for hop in args.sensor_hop or [32]:
                cases.append(run_case("sensor", streams=args.sensor_streams, rate=args.sensor_rate,
                                      window=args.sensor_window, hop=hop, samples_per_record=args.samples_per_record,
                                      preset=args.sensor_preset, **common))
        if args.only in (None, "audio"):
            cases.append(run_case("audio", streams=args.audio_streams, rate=16000.0, window=args.audio_window,
                                  hop=args.audio_hop, samples_per_record=args.audio_chunk,
                                  preset=args.audio_preset, **common))
    finally:
        for s in servers:
            s.close()
    info = finish_run(info, started)
    payload = {"benchmark": "streaming", "run": info.to_dict(), "cases": cases,
               "note": "2 shared CPU cores (producer process + monitor + servers on the same box); noisy."}
    write_json(args.out, payload)
    for c in cases:
        print(f"{c['kind']} (window {c['window']}, hop {c['hop']}): {c['streams']} streams, sustained {c['sustained_samples_per_s']:.0f} samples/s "
              f"(offered {c['offered_samples_per_s']:.0f}), latency p50 {c['latency_s']['p50']} s "
              f"p99 {c['latency_s']['p99']} s, kept up: {c['kept_up']}")
    return payload


if __name__ == "__main__":
    main()
