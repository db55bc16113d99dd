"""The `scalowatch` command. Only this module configures logging and terminal output."""
from __future__ import annotations

import logging

import typer

app = typer.Typer(
    name="scalowatch",
    help="Streaming anomaly monitor: CWT scalograms scored by a wavelet-pyramid diffusion model.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _register_commands() -> None:
    from scalowatch import cli_model, cli_stream
    from dashboards import cli as dashboard_cli
    from benchmarks import cli as bench_cli

    cli_model.register(app)
    cli_stream.register(app)
    __import__("scalowatch.cli_replay", fromlist=["register"]).register(app)
    dashboard_cli.register(app)
    bench_cli.register(app)


_register_commands()
