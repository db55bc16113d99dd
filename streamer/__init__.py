"""Scalowatch streaming edge: Kafka/replay sources, windowing, the monitor loop, sinks and the CLI."""
