"""CLI commands ``scalowatch monitor`` and ``scalowatch demo`` (registered on the main `scalowatch` app)."""
from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import typer

log = logging.getLogger(__name__)


def _stop_on_signals() -> threading.Event:
    """SIGINT/SIGTERM ask the loop to finish its batch, write, commit and close (a second signal is the same)."""
    stop = threading.Event()

    def handler(signum, frame):  # noqa: ARG001
        log.info("signal %s: stopping after the batch in flight", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def limit_cpu_threads(threads: int) -> None:
    """At most ``threads`` threads in every numeric thread pool of this process (PyTorch's, numpy's BLAS, OpenMP)."""
    import torch
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)  # applies until the process ends (not used as a context manager)
    torch.set_num_threads(threads)
    log.info("numeric thread pools limited to %d thread(s)", threads)


def build_monitor(settings, *, processor=None, on_snapshot=None):
    """The Kafka clients, sink and processor from ``settings``, wired into a :class:`~streamer.monitor.Monitor`."""
    from functools import partial

    from streamer.assemble import build_processor
    from streamer.kafka_io import AlertPublisher, DeadLetterProducer, ensure_topics, make_consumer, make_producer
    from streamer.messages import stream_class_for_topic
    from streamer.monitor import Monitor
    from streamer.sinks.factory import make_sink

    k, m = settings.kafka, settings.monitor
    if m.cpu_threads:
        limit_cpu_threads(m.cpu_threads)
    topics = [k.sensor_topic, k.audio_topic]
    ensure_topics(settings, [*topics, k.dead_letter_topic, k.alerts_topic])
    processor = processor or build_processor(m)
    producer = make_producer(settings)
    return Monitor(
        make_consumer(settings), processor, make_sink(settings), topics=topics,
        class_of_topic=partial(stream_class_for_topic, sensor_topic=k.sensor_topic, audio_topic=k.audio_topic),
        dead_letters=DeadLetterProducer(producer, k.dead_letter_topic), alerts=AlertPublisher(producer, k.alerts_topic),
        max_bytes=k.max_message_bytes, poll_timeout_ms=m.poll_timeout_ms, max_poll_records=k.max_poll_records,
        commit_interval_s=m.commit_interval_ms / 1000.0, state_checkpoint_s=m.state_checkpoint_s,
        retry_initial_s=m.sink_retry_initial_s,
        retry_max_s=m.sink_retry_max_s, max_backlog_samples=m.max_backlog_samples,
        max_samples_per_round=m.max_samples_per_round, shutdown_scoring_s=m.shutdown_scoring_s,
        probe_consumer=partial(make_consumer, settings, group_id=None, enable_auto_commit=False),
        poll_stall_exit_s=poll_stall_exit_s(settings), on_wedged=_exit_wedged, on_snapshot=on_snapshot,
    )


def poll_stall_exit_s(settings) -> float:
    """How long a ``poll`` (a group join included) may legitimately take: ``max.poll.interval.ms`` + a minute. The
    poll watchdog gives up on the Kafka client after it, and the health probe calls the loop stalled after it."""
    return settings.kafka.max_poll_interval_ms / 1000.0 + 60.0


def _exit_wedged() -> None:
    """The Kafka client stopped answering: exit so the supervisor (compose, systemd, Kubernetes) restarts the
    worker from its last commit. Exit code 70 (EX_SOFTWARE) tells it apart from a crash of ours."""
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(70)


def run_monitor(settings, *, stop: threading.Event, idle_exit_s: float | None = None, processor=None):
    """Build the monitor from ``settings`` and consume until ``stop`` (or ``idle_exit_s`` without input).

    A broker that cannot be reached at start is waited for (with back-off, logged), not a crash: workers often
    start before the broker does, and a restart loop would only add noise."""
    from kafka.errors import KafkaError

    from streamer.health import HealthServer

    m = settings.monitor
    stall_s = m.health_stall_s or poll_stall_exit_s(settings)
    health = HealthServer(m.health_host, m.health_port, stall_s=stall_s).start() if m.health_port is not None else None
    try:
        delay = 1.0
        while True:
            try:
                monitor = build_monitor(settings, processor=processor,
                                        on_snapshot=health.publish if health is not None else None)
                break
            except KafkaError as exc:
                if stop.is_set():
                    log.info("stopped before the broker was reachable")
                    return None
                log.warning("cannot reach the Kafka broker at %s (%s): retrying in %.0f s",
                            settings.kafka.bootstrap_servers, exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, 30.0)
        stats = monitor.run(stop, idle_exit_s=idle_exit_s)
        log.info("monitor stopped: %s; processor: %s", stats, monitor.processor.stats)
        return stats
    finally:
        if health is not None:
            health.stop()


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""

    @app.command("monitor")
    def monitor(
        config: Path = typer.Option(None, "--config",
                                    help="TOML settings file; SCALOWATCH_* environment variables override it."),
        idle_exit_s: float = typer.Option(None, "--idle-exit-s",
                                          help="Stop after this many seconds without input (tests, batch runs)."),
    ) -> None:
        """Consume sensor/audio topics, score every sample with the detector, write scores and alerts (at-least-once)."""
        from streamer.config import Settings

        settings = Settings.load(config)
        log.info("settings: %s", settings.redacted())
        run_monitor(settings, stop=_stop_on_signals(), idle_exit_s=idle_exit_s)

    @app.command("demo")
    def demo(
        out_dir: Path = typer.Option(Path("demo-output"), "--out-dir", help="Where the SQLite store and models go."),
        no_dashboard: bool = typer.Option(False, "--no-dashboard", help="Only replay; do not open the dashboard."),
        speed: float = typer.Option(0.0, "--speed", help="Replay speed (0 = as fast as possible)."),
        port: int = typer.Option(8501, "--port", help="Dashboard port."),
        keep_models: bool = typer.Option(False, "--keep-models", help="Reuse models of an earlier demo run."),
    ) -> None:
        """Replay bundled NAB series and a fan recording through the monitor into SQLite, then open the dashboard."""
        from streamer.demo import DemoConfig, run_demo

        cfg = DemoConfig(out_dir=out_dir, speed=speed, fresh=not keep_models)
        report = run_demo(cfg)
        typer.echo(report.text())
        if no_dashboard:
            return
        from dashboards.cli import launch_dashboard

        typer.echo(f"opening the dashboard on http://127.0.0.1:{port} (Ctrl-C to stop)")
        launch_dashboard(store_kind="sqlite", sqlite_path=report.store_path, port=port, block=True)
