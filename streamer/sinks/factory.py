"""Pick the store writer the settings ask for (``store.kind``)."""
from __future__ import annotations

from streamer.sinks.base import Sink


def make_sink(settings) -> Sink:
    """``Settings`` -> InfluxSink or SQLiteSink (imported lazily: the SQLite path needs no influxdb-client)."""
    kind = settings.store.kind
    if kind == "influx":
        from streamer.sinks.influx import InfluxSink

        return InfluxSink.from_settings(settings.influx)
    if kind == "sqlite":
        from streamer.sinks.sqlite import SQLiteSink

        return SQLiteSink.from_settings(settings.store)
    raise ValueError(f"unknown store kind {kind!r}")
