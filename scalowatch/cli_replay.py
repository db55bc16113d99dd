"""`scalowatch replay`: send recorded NAB, sensor-log CSV, UCR and WAV files into Kafka (streamer/replay.py works)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import typer

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    app.command("replay")(replay_command)


def replay_command(
    files: list[Path] = typer.Argument(..., help="NAB .csv (timestamp,value), .csv of several sensors (time first, "
                                       "one stream per column), UCR .txt/.txt.gz or .wav files, or folders of them "
                                       "(every such file below a folder; .txt only when UCR-named).",
                                       show_default=False),
    bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help="Kafka bootstrap servers "
                                            "(default: SCALOWATCH_KAFKA__BOOTSTRAP_SERVERS)."),
    topic: Optional[str] = typer.Option(None, "--topic", help="Topic for sensor series (default: settings)."),
    audio_topic: Optional[str] = typer.Option(None, "--audio-topic", help="Topic for audio (default: settings)."),
    speed: float = typer.Option(0.0, "--speed", min=0.0,
                                help="Event-time speed-up: 1 = real time, 1000 = 1000x, 0 = as fast as possible."),
    rebase: bool = typer.Option(False, "--rebase/--no-rebase", help="Shift timestamps so the earliest is now."),
    batch: int = typer.Option(1, "--batch", min=1, help="Sensor samples per message."),
    chunk_samples: int = typer.Option(4096, "--chunk-samples", min=1, help="Audio frames per message."),
    sample_period_ms: float = typer.Option(10.0, "--sample-period-ms", min=0.000001,
                                           help="Sample period given to UCR files (they have no timestamps)."),
    stream: Optional[str] = typer.Option(None, "--stream", help="Stream id for every file (then they play back "
                                         "to back); for a CSV of several sensors the prefix of its streams, "
                                         "<stream>/<column> (default: derived from each path)."),
    nab_windows: Optional[Path] = typer.Option(None, "--nab-windows", help="NAB files: combined_windows.json "
                                               "(default: found beside NAB's data/ folder)."),
    column: Optional[list[str]] = typer.Option(None, "--column", help="Sensor CSVs: a column to replay (repeat the "
                                               "option for several; default: every column but the label and "
                                               "skipped ones)."),
    label_column: Optional[list[str]] = typer.Option(None, "--label-column", help="Sensor CSVs: a column flagging "
                                                     "anomalous rows (a non-zero number, or a word other than "
                                                     "normal/ok/false/no); its runs become label windows of the "
                                                     "file's streams and it is not replayed as a sensor."),
    skip_column: Optional[list[str]] = typer.Option(None, "--skip-column", help="Sensor CSVs: a column not to "
                                                    "replay (a text column of machine states, say)."),
    labels_to_store: bool = typer.Option(False, "--labels-to-store/--no-labels-to-store",
                                         help="Write known anomaly windows as label_window points."),
    store: Optional[str] = typer.Option(None, "--store", help="influx or sqlite (default: SCALOWATCH_STORE__KIND)."),
    sqlite_path: Optional[Path] = typer.Option(None, "--sqlite-path", help="SQLite store file (with --store sqlite)."),
    create_topics: bool = typer.Option(True, "--create-topics/--no-create-topics",
                                       help="Create missing topics first."),
    partitions: int = typer.Option(4, "--partitions", min=1, help="Partitions of topics this command creates."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Replay recorded streams into Kafka (keys = stream ids), optionally with their labelled anomaly windows."""
    from kafka.errors import KafkaError

    from streamer.config import Settings
    from streamer.kafka_io import ensure_topics, make_producer
    from streamer.replay import ReplayError, columns_in_none, open_sources, replay, replay_files, shared_streams
    from streamer.sinks.base import SinkError

    if store is not None and store not in ("influx", "sqlite"):
        typer.echo(f"error: --store must be influx or sqlite, not {store!r}", err=True)
        raise typer.Exit(1)
    try:
        settings = Settings()
    except (ValueError, FileNotFoundError) as exc:  # pydantic's ValidationError is a ValueError
        typer.echo(f"error: invalid settings: {exc}", err=True)
        raise typer.Exit(1) from None
    kafka = settings.kafka.model_copy(update={k: v for k, v in {
        "bootstrap_servers": bootstrap, "sensor_topic": topic, "audio_topic": audio_topic}.items() if v})
    try:
        files = replay_files(files)
        absent = columns_in_none(files, [*(label_column or ()), *(skip_column or ())])
        if absent:
            raise ReplayError(f"no file has the column(s) {absent!r}")
        sources = [s for f in files for s in open_sources(
            f, stream=stream, batch=batch, chunk_samples=chunk_samples, sample_period_ms=sample_period_ms,
            nab_windows=nab_windows, columns=column or None, label_columns=label_column or (),
            skip_columns=skip_column or ())]
        clash = shared_streams(sources) if stream is None else {}
        if clash:
            name, paths = next(iter(clash.items()))
            raise ReplayError(f"{' and '.join(map(str, paths))} would be one stream {name!r} (named by their folder "
                              "and file names): replay them separately, or name one stream for all with --stream")
    except (ReplayError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None

    sink = None
    if labels_to_store:
        from streamer.sinks.factory import make_sink

        store_update = {k: v for k, v in {"kind": store, "sqlite_path": sqlite_path}.items() if v}
        try:
            sink = make_sink(settings.model_copy(update={"store": settings.store.model_copy(update=store_update)}))
        except SinkError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    producer = None
    try:
        if create_topics:
            used = {kafka.sensor_topic if s.stream_class == "sensor" else kafka.audio_topic for s in sources}
            ensure_topics(kafka, {name: partitions for name in used})
        producer = make_producer(kafka)
        stats = replay(sources, producer, sensor_topic=kafka.sensor_topic, audio_topic=kafka.audio_topic,
                       speed=speed, rebase_to_ns=time.time_ns() if rebase else None, sink=sink,
                       progress=progress)
    except (KafkaError, ReplayError, SinkError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        if producer is not None:
            producer.close(timeout=10)
        if sink is not None:
            sink.close()
    typer.echo(f"replayed {stats.records} records ({stats.samples} samples) of {len(stats.streams)} stream(s)"
               f" in {stats.seconds:.1f}s; {stats.label_windows} label window(s) written")
