"""A worker's health and counters over HTTP: ``/healthz`` for a supervisor's liveness probe, ``/metrics`` in the
Prometheus text format.

Why: the log's status line (every minute) and stop line were the only places the counters showed, and nothing
outside the process could tell a worker whose loop had stopped turning from a quiet one. The loop publishes a
:class:`WorkerSnapshot` (at most once a second); the server only reads the latest one, so a scrape never touches
the loop's data structures from another thread and costs the loop nothing.

Liveness is "the loop turned recently" (``stall_s``; by default as long as a poll may legitimately take, a group
join included). The loop publishes once as it starts; before that — loading models, waiting for the broker — the
worker reports ``starting`` and counts as alive: restarting it would not bring a broker up. Streams
quarantined after repeated scoring failures, a paused input or a store that is down are reported (``scalowatch_held_streams``,
``scalowatch_input_paused``, ``scalowatch_sink_down``) but do not fail the probe: a restart re-reads from the
commit and fixes none of them, and a deterministic failure would turn into a restart loop.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from socketserver import ThreadingMixIn
from typing import Callable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"


@dataclass(frozen=True)
class WorkerSnapshot:
    """What the loop reports about itself. ``taken``: ``time.monotonic()`` when the loop took it."""

    taken: float
    records: int
    samples_scored: int
    points_written: int
    dead_letters: int
    commits: int
    checkpoints: int
    sink_failures: int
    live_streams: int
    held_streams: int
    backlog_samples: int
    assigned_partitions: int
    input_paused: bool
    sink_down: bool
    stream_cap: int = 0
    """The most live streams this worker holds (``MAX_STREAMS``, or what its memory limit fits)."""
    stream_cap_used: int = 0
    """The live streams in the cap's units: a stream collecting a long training part counts as several (audio), so
    new streams may be refused while ``live_streams`` is below the cap."""
    loop_seconds: dict[str, float] = field(default_factory=dict)
    """Seconds the loop spent per phase since it started (poll, ingest, score, write, checkpoint, commit)."""


# name, help, kind: the counters keep their names with Prometheus's "_total" added.
_METRICS: tuple[tuple[str, str, str], ...] = (
    ("records", "Kafka records read (sensor and audio topics)", "counter"),
    ("samples_scored", "samples scored by the detector", "counter"),
    ("points_written", "points written to the store", "counter"),
    ("dead_letters", "records sent to the dead-letter topic", "counter"),
    ("commits", "offset commits", "counter"),
    ("checkpoints", "stream-state checkpoints", "counter"),
    ("sink_failures", "failed writes to the store (each retried)", "counter"),
    ("live_streams", "streams in memory", "gauge"),
    ("stream_cap", "the most live streams this worker holds (MAX_STREAMS or its memory's)", "gauge"),
    ("stream_cap_used", "live streams in the cap's units (a stream collecting a long training part counts as "
                        "several)", "gauge"),
    ("held_streams", "streams quarantined after repeated scoring failures, until a restart", "gauge"),
    ("backlog_samples", "samples of fitted streams waiting to be scored", "gauge"),
    ("assigned_partitions", "partitions assigned to this worker", "gauge"),
    ("input_paused", "1 while input is paused (store down or backlog full)", "gauge"),
    ("sink_down", "1 while writes to the store are failing", "gauge"),
)


class HealthServer:
    """Serves ``/healthz`` and ``/metrics`` from a daemon thread; :meth:`publish` is the loop's only call."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, stall_s: float = 360.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.host, self.requested_port, self.stall_s, self.clock = host, port, stall_s, clock
        self._snapshot: WorkerSnapshot | None = None
        self._started = clock()
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_SnapshotCollector(self))
        ProcessCollector(namespace="scalowatch", registry=registry)  # CPU seconds, memory, open files
        self._metrics_app = make_wsgi_app(registry)

    # -- the loop's side -----------------------------------------------------------------------------------
    def publish(self, snapshot: WorkerSnapshot) -> None:
        self._snapshot = snapshot  # one reference assignment: atomic for the reading threads

    @property
    def snapshot(self) -> WorkerSnapshot | None:
        return self._snapshot

    # -- what a probe sees -----------------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict]:
        snap, now = self._snapshot, self.clock()
        if snap is None:
            return True, {"status": "starting", "seconds_since_start": round(now - self._started, 1)}
        age = now - snap.taken
        body = {"status": "ok" if age <= self.stall_s else "stalled", "loop_age_s": round(age, 1),
                "stall_s": self.stall_s, **{k: v for k, v in asdict(snap).items() if k != "taken"}}
        return age <= self.stall_s, body

    def _app(self, environ, start_response):
        if environ.get("PATH_INFO", "") == HEALTH_PATH:
            ok, body = self.health()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
            return [json.dumps(body).encode()]
        return self._metrics_app(environ, start_response)

    # -- lifetime ------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound port (``port=0`` asks the OS for a free one)."""
        if self._server is None:
            raise RuntimeError("the health server is not running")
        return int(self._server.server_port)

    def start(self) -> "HealthServer":
        self._server = make_server(self.host, self.requested_port, self._app, server_class=_ThreadingWSGIServer,
                                   handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-server", daemon=True)
        self._thread.start()
        log.info("health on http://%s:%d%s, metrics on /metrics", self.host, self.port, HEALTH_PATH)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "HealthServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _SnapshotCollector:
    def __init__(self, server: HealthServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        snap = self.server.snapshot
        age = GaugeMetricFamily("scalowatch_loop_age_seconds",
                                "seconds since the monitor loop last reported (liveness; absent while starting)")
        if snap is None:
            yield age
            return
        age.add_metric([], self.server.clock() - snap.taken)
        yield age
        for name, help_text, kind in _METRICS:
            value = float(getattr(snap, name))
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(f"scalowatch_{name}", help_text, value=value)
        phases = CounterMetricFamily("scalowatch_loop_seconds", "seconds the monitor loop spent, per phase of its "
                                     "round (where latency comes from)", labels=["phase"])
        for phase, seconds in snap.loop_seconds.items():
            phases.add_metric([phase], float(seconds))
        yield phases


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper must not keep the worker from exiting


class _QuietHandler(WSGIRequestHandler):
    timeout = 10  # a client that connects and sends nothing must not hold a thread for ever

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
        log.debug("health server: " + format, *args)
