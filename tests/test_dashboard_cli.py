"""`scalowatch dashboard`: the Streamlit command line and environment it builds (the running server is
exercised by tests/test_dashboard_browser.py)."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dashboards.cli import APP_PATH, dashboard_command, launch_dashboard
from dashboards.store import SQLITE_PATH_ENV, STORE_ENV


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_defaults_bind_loopback_headless(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALOWATCH_INFLUX__TOKEN", "tok-secret")
    argv, env = dashboard_command("sqlite", tmp_path / "s.sqlite", 8600, "127.0.0.1")
    assert argv[1:4] == ["-m", "streamlit", "run"] and argv[4] == str(APP_PATH) and APP_PATH.is_file()
    assert option(argv, "--server.address") == "127.0.0.1"
    assert option(argv, "--server.port") == "8600"
    assert option(argv, "--server.headless") == "true"
    assert env[STORE_ENV] == "sqlite" and env[SQLITE_PATH_ENV] == str((tmp_path / "s.sqlite").resolve())
    assert not any("tok-secret" in a for a in argv)  # secrets travel in the environment only


def test_store_from_settings_when_not_given(monkeypatch):
    monkeypatch.delenv(STORE_ENV, raising=False)
    argv, env = dashboard_command(None, None, 8501, "127.0.0.1")
    assert STORE_ENV not in env and SQLITE_PATH_ENV not in env


def test_unknown_store_kind_is_refused():
    with pytest.raises(ValueError, match="unknown store kind"):
        launch_dashboard("mongo", None, 8501, "127.0.0.1", block=False)


def test_command_is_registered_with_its_options():
    from scalowatch.cli import app

    result = CliRunner().invoke(app, ["dashboard", "--help"])
    assert result.exit_code == 0
    for name in ("--store", "--sqlite-path", "--port", "--host", "127.0.0.1"):
        assert name in result.output
    bad = CliRunner().invoke(app, ["dashboard", "--store", "mongo"])
    assert bad.exit_code != 0
