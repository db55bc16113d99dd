"""Settings: env prefix and nesting, TOML file, precedence, validation, secrets never printed."""
from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from streamer.config import CONFIG_FILE_ENV, Settings, env_names, unknown_env_names


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.upper().startswith("SCALOWATCH_"):
            monkeypatch.delenv(name)


def test_env_nested_names_override_defaults(monkeypatch):
    monkeypatch.setenv("SCALOWATCH_KAFKA__BOOTSTRAP_SERVERS", "broker-1:9092,broker-2:9092")
    monkeypatch.setenv("SCALOWATCH_MONITOR__SENSOR_PRESET", "ucr")
    monkeypatch.setenv("scalowatch_store__kind", "sqlite")
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "broker-1:9092,broker-2:9092"
    assert settings.monitor.sensor_preset == "ucr"
    assert settings.store.kind == "sqlite"
    assert settings.kafka.group_id == Settings.model_fields["kafka"].default.group_id


def test_toml_file_is_read_and_env_wins_over_it(tmp_path, monkeypatch):
    config = tmp_path / "scalowatch.toml"
    config.write_text('[kafka]\ngroup_id = "from-file"\nsensor_topic = "file.sensors"\n'
                      '[influx]\nbucket = "metrics"\n')
    monkeypatch.setenv(CONFIG_FILE_ENV, str(config))
    monkeypatch.setenv("SCALOWATCH_KAFKA__GROUP_ID", "from-env")
    settings = Settings()
    assert settings.kafka.group_id == "from-env"
    assert settings.kafka.sensor_topic == "file.sensors"
    assert settings.influx.bucket == "metrics"
    assert settings.influx.read_database == "metrics"  # InfluxQL database defaults to the bucket


def test_load_with_file_and_overrides(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[monitor]\nsensor_detector_options = { scorer = "kl", steps = 40 }\n')
    settings = Settings.load(config, store={"kind": "sqlite", "sqlite_path": str(tmp_path / "s.db")})
    assert settings.monitor.sensor_detector_options == {"scorer": "kl", "steps": 40}
    assert settings.store.kind == "sqlite"


def test_missing_config_file_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(CONFIG_FILE_ENV, str(tmp_path / "nope.toml"))
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        Settings()


@pytest.mark.parametrize("env,message", [
    ({"SCALOWATCH_KAFKA__GROUPID": "x"}, "groupid"),  # typo in a nested name
    ({"SCALOWATCH_STORE__KIND": "postgres"}, "kind"),
    ({"SCALOWATCH_KAFKA__SECURITY_PROTOCOL": "SASL_SSL"}, "sasl_mechanism"),
    ({"SCALOWATCH_KAFKA__HEARTBEAT_INTERVAL_MS": "20000"}, "heartbeat"),
    ({"SCALOWATCH_MONITOR__SENSOR_PRESET": "nope"}, "unknown detector preset"),
    ({"SCALOWATCH_MONITOR__MAX_BACKLOG_SAMPLES": "0"}, "max_backlog_samples"),
])
def test_invalid_settings_fail_loudly(monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_secrets_never_shown_in_repr_str_log_or_redacted(monkeypatch, caplog):
    monkeypatch.setenv("SCALOWATCH_INFLUX__TOKEN", "tok-SECRET-123")
    monkeypatch.setenv("SCALOWATCH_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SCALOWATCH_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("SCALOWATCH_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("SCALOWATCH_KAFKA__SASL_PASSWORD", "pw-SECRET-456")
    settings = Settings()
    assert settings.influx.token.get_secret_value() == "tok-SECRET-123"
    assert settings.kafka.sasl_password.get_secret_value() == "pw-SECRET-456"
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings %s / %r / %s", settings, settings, settings.redacted())
    shown = " ".join([repr(settings), str(settings), caplog.text, str(settings.redacted()),
                      settings.model_dump_json()])
    assert "SECRET" not in shown
    assert "svc" in shown  # non-secret values are still shown


def test_settings_are_frozen():
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.kafka.group_id = "other"


def test_env_names_cover_every_leaf_field():
    names = env_names()
    assert "SCALOWATCH_KAFKA__BOOTSTRAP_SERVERS" in names
    assert "SCALOWATCH_INFLUX__TOKEN" in names
    assert "SCALOWATCH_STORE__SQLITE_PATH" in names
    assert "SCALOWATCH_KAFKA" not in names  # sections are not leaves
    leaf_count = sum(len(Settings.model_fields[s].annotation.model_fields) for s in Settings.model_fields)
    assert len(names) == leaf_count


def test_unknown_top_level_names_are_warned_about(monkeypatch, caplog):
    monkeypatch.setenv("SCALOWATCH_KAFKA_GROUP_ID", "oops")  # one underscore: not a nested name
    monkeypatch.setenv("SCALOWATCH_DASHBOARD_STORE", "sqlite")  # the dashboard's own variable
    compose = ("SCALOWATCH_INFLUX_TOKEN", "SCALOWATCH_BIND_ADDRESS", "SCALOWATCH_DATA")  # deploy/README.md exports them
    for name in compose:
        monkeypatch.setenv(name, "x")
    with caplog.at_level(logging.WARNING, logger="streamer.config"):
        settings = Settings()
    assert settings.kafka.group_id == "scalowatch-monitor"
    assert "SCALOWATCH_KAFKA_GROUP_ID" in caplog.text
    assert "SCALOWATCH_DASHBOARD_STORE" not in caplog.text
    assert not any(name in caplog.text for name in compose)
    # compose's names are exact: a look-alike is still a typo
    assert unknown_env_names({**dict.fromkeys(compose, "x"), "SCALOWATCH_DATASET": "x",
                              "SCALOWATCH_INFLUX_TOKENS": "x"}) == ["SCALOWATCH_DATASET", "SCALOWATCH_INFLUX_TOKENS"]


def test_settings_travel_to_a_child_process_as_env_and_come_back_equal(monkeypatch):
    """as_env is how the fault suite and the e2e tests hand a monitor process its exact settings."""
    import os

    from streamer.config import as_env

    original = Settings(kafka={"bootstrap_servers": "h:1", "group_id": "g", "sasl_password": "pw"},
                        monitor={"sensor_detector_options": {"steps": 3}, "snapshots": False, "max_streams": 7})
    env = as_env(original, {"PATH": "/bin", "SCALOWATCH_STALE": "x"})
    assert env["PATH"] == "/bin" and "SCALOWATCH_STALE" not in env
    for name in [n for n in os.environ if n.startswith("SCALOWATCH_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("SCALOWATCH_"):
            monkeypatch.setenv(name, value)
    assert Settings() == original
