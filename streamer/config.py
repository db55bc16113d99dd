"""Runtime configuration of the streamer: one frozen pydantic-settings model read from the environment.

Why one model: the monitor, the replay tool and the dashboard run as separate processes (often containers) and
must agree on topic names, the store and the stream geometry; reading all of it from ``SCALOWATCH_*`` variables
(nested with ``__``, e.g. ``SCALOWATCH_KAFKA__BOOTSTRAP_SERVERS``) or from a TOML file named by
``SCALOWATCH_CONFIG`` keeps deployment declarative. Precedence: constructor arguments > environment > TOML file >
defaults. Secrets are ``SecretStr`` so ``repr``, logs and ``redacted()`` never show them.

Model hyperparameters are NOT here: they live in JSON beside the checkpoint (see models/checkpoint.py).
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

log = logging.getLogger(__name__)

ENV_PREFIX = "SCALOWATCH_"
CONFIG_FILE_ENV = "SCALOWATCH_CONFIG"


class _Section(BaseModel):
    """Sections reject unknown keys so a typo in an env name or TOML key fails loudly instead of being ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = "localhost:9092"
    sensor_topic: str = "scalowatch.sensors"
    audio_topic: str = "scalowatch.audio"
    alerts_topic: str = "scalowatch.alerts"
    dead_letter_topic: str = "scalowatch.dead-letter"
    group_id: str = "scalowatch-monitor"
    client_id: str = "scalowatch"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    # Tansu (the test broker) waits session_timeout/2 on a group join, so keep this modest.
    session_timeout_ms: int = Field(10_000, gt=0)
    heartbeat_interval_ms: int = Field(3_000, gt=0)
    max_poll_records: int = Field(500, gt=0)
    max_poll_interval_ms: int = Field(300_000, gt=0)
    # Largest accepted message value (bytes); bigger ones go to the dead-letter topic.
    max_message_bytes: int = Field(1_048_576, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "KafkaSettings":
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        if self.security_protocol.startswith("SASL_"):
            missing = [name for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                       if getattr(self, name) is None]
            if missing:
                raise ValueError(f"security_protocol {self.security_protocol} needs {', '.join(missing)}")
        return self


class InfluxSettings(_Section):
    url: str = "http://localhost:8086"
    org: str = "scalowatch"
    bucket: str = "scalowatch"
    token: SecretStr = SecretStr("")
    timeout_ms: int = Field(10_000, gt=0)
    # InfluxQL reads (GET /query): default to `url` and to the bucket's name (2.x needs a DBRP mapping for it).
    query_url: str | None = None
    database: str | None = None

    @property
    def read_url(self) -> str:
        return self.query_url or self.url

    @property
    def read_database(self) -> str:
        return self.database or self.bucket


class MonitorSettings(_Section):
    """What the monitor loop needs. The detector itself is configured by its preset (models/detector/config.py),
    the configuration the benchmarks measured; ``*_detector_options`` override single knobs of it."""

    device: str = "auto"
    # Threads the numeric kernels (PyTorch's, numpy's BLAS) may use in this worker; 0 = the libraries' defaults
    # (one per core). Workers of one group on one machine should split the cores between them (e.g. 1 each on 2
    # cores): idle BLAS threads spin, and two workers' pools fighting over the same cores cost more than they gain.
    # PyTorch's threads are capped at 2 whatever this says: with more, a window's score would depend on its
    # micro-batch (streamer/assemble.py, limit_model_threads).
    cpu_threads: int = Field(0, ge=0)
    model_dir: Path = Path("checkpoints/default")
    # Detector presets per stream class: "nab" (operational metrics; the benchmarked default), "rig" (a machine's
    # sensors judged row by row: nab without its spatial rule and one-alert-per-edge suppression), "ucr", "audio".
    sensor_preset: str = "nab"
    audio_preset: str = "audio"
    sensor_detector_options: dict[str, Any] = Field(default_factory=dict)
    audio_detector_options: dict[str, Any] = Field(default_factory=dict)
    # Audio chunks at another rate are dead-lettered rather than silently resampled.
    audio_sample_rate: int = Field(16_000, gt=0)
    # Samples more than this far ahead of the clock, or of their stream's newest sample (unless the next sample
    # confirms the jump: a stream resuming after a long silence), are dead-lettered as bad_timestamp (NAB's longest
    # real gap is 7.25 days).
    max_timestamp_skew_s: float = Field(30 * 86_400, gt=0)
    # per_stream: model_dir/<class>/<stream>/ fitted on each stream's training part; shared: one detector per class
    # in model_dir/<class>/_shared/ (put there by `scalowatch train`, or fitted on the class's first stream).
    model_mode: Literal["per_stream", "shared"] = "per_stream"
    # Alerting (one rule, streamer/alerts.py). None = the preset's threshold, the one its benchmark found.
    alert_threshold: float | None = Field(None, gt=0)
    # An open alert closes when the score falls below threshold - hysteresis for alert_close_after scores.
    alert_hysteresis: float = Field(0.0, ge=0, lt=1)
    alert_open_after: int = Field(1, ge=1)
    alert_close_after: int = Field(1, ge=1)
    # Minimum quiet time (stream time) after an alert closes before the same stream may open a new one.
    alert_cooldown_s: float = Field(0.0, ge=0)
    snapshots: bool = True
    # Loop: poll timeout, commit cadence, sink retry back-off, back-pressure limit.
    poll_timeout_ms: int = Field(200, ge=0)
    commit_interval_ms: int = Field(1_000, ge=0)
    # Detector/alert state is also checkpointed this often (after a commit, with everything scored written), so a
    # crash resumes each stream where it was instead of re-reading its training part; 0 = only on stop/rebalance.
    state_checkpoint_s: float = Field(30.0, ge=0)
    sink_retry_initial_s: float = Field(0.5, gt=0)
    sink_retry_max_s: float = Field(10.0, gt=0)
    # Samples of fitted streams waiting to be scored before input is paused.
    max_backlog_samples: int = Field(1_000_000, gt=0)
    # Streams kept in memory per worker. At the cap, the least recently active stream whose state is saved is
    # evicted (it is restored from its saved state when it sends again); when none is, a new stream's records are
    # dead-lettered as too_many_streams. None: 10,000, or fewer where the worker's memory limit (its cgroup's,
    # else the machine's) holds fewer (streamer/memory.py).
    max_streams: int | None = Field(None, gt=0)
    # Samples taken in per poll round (records beyond it are read again next round), and about as many scored per
    # round (whole records: of the stream that crosses it as many as fit, at least one; the rest next round), so a
    # round's work stays bounded however many streams a detector becomes ready for, or however long one stream's
    # backlog (max.poll.interval.ms, memory).
    max_samples_per_round: int = Field(200_000, gt=0)
    # On SIGTERM/SIGINT the worker scores what is pending for at most this long, then writes, checkpoints, commits
    # and exits; what is left stays uncommitted and is scored after the restart. Keep it well inside the
    # supervisor's grace period (Kubernetes terminationGracePeriodSeconds 30 s; compose stop_grace_period).
    shutdown_scoring_s: float = Field(20.0, gt=0)
    # HTTP /healthz (liveness: the loop turned within health_stall_s) and /metrics (Prometheus) on this port;
    # None = off, 0 = any free port (streamer/health.py). A container needs health_host "0.0.0.0". The stall limit
    # defaults to the poll watchdog's (kafka.max_poll_interval_ms + 60 s): a group join may legitimately take
    # max.poll.interval.ms, and a probe that failed sooner would restart workers in the middle of a rebalance.
    health_port: int | None = Field(None, ge=0, le=65_535)
    health_host: str = "127.0.0.1"
    health_stall_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "MonitorSettings":
        from models.detector import PRESETS

        for name in (self.sensor_preset, self.audio_preset):
            if name not in PRESETS:
                raise ValueError(f"unknown detector preset {name!r}; known: {sorted(PRESETS)}")
        return self


class StoreSettings(_Section):
    kind: Literal["influx", "sqlite"] = "influx"
    sqlite_path: Path = Path("scalowatch.sqlite")


class Settings(BaseSettings):
    """All runtime settings. ``Settings()`` reads env + the optional TOML file; ``Settings.load(path)`` too."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
        frozen=True,
        extra="forbid",
    )

    kafka: KafkaSettings = KafkaSettings()
    influx: InfluxSettings = InfluxSettings()
    monitor: MonitorSettings = MonitorSettings()
    store: StoreSettings = StoreSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise FileNotFoundError(f"{CONFIG_FILE_ENV}={config_file}: no such file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> "Settings":
        """Settings from env (+ ``config_file`` as if named by SCALOWATCH_CONFIG), then ``overrides``."""
        if config_file is None:
            return cls(**overrides)
        previous = os.environ.get(CONFIG_FILE_ENV)
        os.environ[CONFIG_FILE_ENV] = str(config_file)
        try:
            return cls(**overrides)
        finally:
            if previous is None:
                os.environ.pop(CONFIG_FILE_ENV, None)
            else:
                os.environ[CONFIG_FILE_ENV] = previous

    def model_post_init(self, __context: Any) -> None:
        unknown = unknown_env_names(os.environ)
        if unknown:  # e.g. SCALOWATCH_KAFKA_GROUP_ID (one underscore) would otherwise be ignored silently
            log.warning("ignoring unknown settings variables %s (nested names use '__', e.g. "
                        "SCALOWATCH_KAFKA__GROUP_ID)", ", ".join(unknown))

    def redacted(self) -> dict[str, Any]:
        """A JSON-able dict with every secret masked: what to log at start-up."""
        return self.model_dump(mode="json")


def env_names(model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX) -> set[str]:
    """Every environment variable name the settings model reads (upper case), e.g. SCALOWATCH_KAFKA__GROUP_ID."""
    names: set[str] = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= env_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.add(f"{prefix}{name.upper()}")
    return names


def as_env(settings: "Settings", base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``settings`` as ``SCALOWATCH_*`` variables over ``base`` (its own ``SCALOWATCH_*`` dropped): how a parent
    hands its exact settings to a child process (`scalowatch monitor` reads them back with ``Settings()``)."""
    env = {k: v for k, v in (base or {}).items() if not k.upper().startswith(ENV_PREFIX)}
    for section, values in settings.model_dump().items():
        for name, value in values.items():
            if value is None:
                continue
            if hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            if isinstance(value, bool):
                value = str(value).lower()
            elif isinstance(value, (dict, list)):
                value = json.dumps(value)
            env[f"{ENV_PREFIX}{section.upper()}__{name.upper()}"] = str(value)
    return env


# Variables with the prefix that belong to other components (read directly, not through Settings): the dashboard's
# (by prefix), and deploy/compose.yaml's own (exact names: the token it hands the services as INFLUX__TOKEN, the
# published address, the data folder).
FOREIGN_ENV_PREFIXES = ("SCALOWATCH_DASHBOARD_",)
FOREIGN_ENV_NAMES = frozenset({"SCALOWATCH_INFLUX_TOKEN", "SCALOWATCH_BIND_ADDRESS", "SCALOWATCH_DATA"})


def unknown_env_names(environ: Mapping[str, str]) -> list[str]:
    """``SCALOWATCH_*`` variables that no setting reads (typos), sorted."""
    known = env_names() | {CONFIG_FILE_ENV} | FOREIGN_ENV_NAMES
    return sorted(name for name in (key.upper() for key in environ)
                  if name.startswith(ENV_PREFIX) and name not in known
                  and not name.startswith(FOREIGN_ENV_PREFIXES))
