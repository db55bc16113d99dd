"""CLI commands (registered on the main `scalowatch` app): ``scalowatch dashboard``.

The dashboard is a Streamlit app, so it runs as ``streamlit run dashboards/app.py`` in a child process; the store
choice travels through the environment (see dashboards/store.py), never on a command line where a token could be
seen in ``ps``. It binds to 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from enum import Enum
from pathlib import Path

import typer

from dashboards.store import SQLITE_PATH_ENV, STORE_ENV

log = logging.getLogger(__name__)

APP_PATH = Path(__file__).resolve().parent / "app.py"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501


class StoreKind(str, Enum):
    sqlite = "sqlite"
    influx = "influx"


def dashboard_command(store_kind: str | None, sqlite_path: str | os.PathLike[str] | None, port: int,
                      host: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment for the Streamlit child process."""
    argv = [
        sys.executable, "-m", "streamlit", "run", str(APP_PATH),
        "--server.address", host, "--server.port", str(int(port)), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--theme.base", "light", "--client.toolbarMode", "minimal",
    ]
    env = dict(os.environ)
    if store_kind:
        env[STORE_ENV] = str(store_kind)
    if sqlite_path:
        env[SQLITE_PATH_ENV] = str(Path(sqlite_path).expanduser().resolve())
    return argv, env


def launch_dashboard(store_kind: str | None = None, sqlite_path: str | os.PathLike[str] | None = None,
                     port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, block: bool = True
                     ) -> subprocess.Popen | int:
    """Start the dashboard. ``block=True`` waits for it (Ctrl-C stops it) and returns its exit code;
    ``block=False`` returns the running process (the caller stops it: ``proc.terminate(); proc.wait()``).
    ``store_kind``/``sqlite_path`` None = the monitor's settings (``SCALOWATCH_STORE__*``)."""
    if store_kind is not None and store_kind not in ("sqlite", "influx"):
        raise ValueError(f"unknown store kind {store_kind!r}: use 'sqlite' or 'influx'")
    argv, env = dashboard_command(store_kind, sqlite_path, port, host)
    log.info("dashboard on http://%s:%d (store: %s)", host, port, store_kind or "from settings")
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
    if not block:
        return proc
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""

    @app.command("dashboard")
    def dashboard(
        store: StoreKind = typer.Option(None, "--store", help="Store to read (default: the monitor's settings)."),
        sqlite_path: Path = typer.Option(None, "--sqlite-path", help="SQLite store file (with --store sqlite)."),
        port: int = typer.Option(DEFAULT_PORT, "--port", help="Port to serve on."),
        host: str = typer.Option(DEFAULT_HOST, "--host", help="Address to bind (0.0.0.0 exposes it to the network)."),
    ) -> None:
        """Open the live dashboard (Streamlit): alerts, streams, window inspector, images, scoreboard."""
        if host not in ("127.0.0.1", "localhost", "::1"):
            typer.echo(f"warning: binding to {host}: the dashboard has no login; anyone who can reach it can "
                       "read the store and write alert verdicts.", err=True)
        typer.echo(f"Scalowatch dashboard: http://{host}:{port}  (Ctrl-C to stop)")
        code = launch_dashboard(store.value if store else None, sqlite_path, port, host, block=True)
        raise typer.Exit(int(code) if isinstance(code, int) else 0)
