"""Runtime configuration of the streamer: one frozen pydantic-settings model read from the environment.

Why one model: the monitor, the replay tool and the dashboard run as separate processes (often containers) and
must agree on topic names, the store and the stream geometry; reading all of it from ``SCALOWATCH_*`` variables
(nested with ``__``, e.g. ``SCALOWATCH_KAFKA__BOOTSTRAP_SERVERS``) or from a TOML file named by
``SCALOWATCH_CONFIG`` keeps deployment declarative. Precedence: constructor arguments > environment > TOML file >
defaults. Secrets are ``SecretStr`` so ``repr``, logs and ``redacted()`` never show them.

Model hyperparameters are NOT here: they live in JSON beside the checkpoint (see models/checkpoint.py).
"""
from __future__ import annotations

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
    """What the monitor loop needs (owned jointly with the monitor's author: add fields here)."""

    device: str = "auto"
    scorer: str = "recon"
    model_dir: Path = Path("checkpoints/default")
    # Window geometry per stream class, in samples.
    sensor_window: int = Field(256, gt=1)
    sensor_hop: int = Field(16, gt=0)
    audio_window: int = Field(16_384, gt=1)
    audio_hop: int = Field(8_192, gt=0)
    # Nominal sensor sample period; used to detect gaps. None = take timestamps as they come.
    sensor_sample_period_ms: float | None = Field(None, gt=0)
    # Audio chunks at another rate are dead-lettered rather than silently resampled.
    audio_sample_rate: int = Field(16_000, gt=0)
    # Samples a stream must have seen before its scores can raise alerts (calibration warm-up).
    warmup_samples: int = Field(1_000, ge=0)
    batch_max_size: int = Field(64, gt=0)
    batch_max_wait_ms: int = Field(200, ge=0)
    alert_threshold: float = Field(0.99, gt=0, le=1)
    # An open alert closes when the calibrated score falls below threshold - hysteresis.
    alert_hysteresis: float = Field(0.05, ge=0, lt=1)
    # Minimum quiet time after an alert closes before the same stream may open a new one.
    alert_cooldown_s: float = Field(60.0, ge=0)
    # --- streaming monitor (H4b): see docs/streaming.md ---
    # Window/hop in seconds instead of samples (sensor needs sensor_sample_period_ms); None = use the sample counts.
    sensor_window_s: float | None = Field(None, gt=0)
    sensor_hop_s: float | None = Field(None, gt=0)
    audio_window_s: float | None = Field(None, gt=0)
    audio_hop_s: float | None = Field(None, gt=0)
    # Gaps up to this many periods are interpolated; longer ones reset the stream's buffer.
    max_gap_periods: int = Field(3, ge=1)
    # per_stream: model_dir/<class>/<stream>/ trained on each stream's warm-up; shared: model_dir/<class>/_shared/;
    # per_stream_from_shared: score with the pretrained _shared model until the stream's own model is trained.
    model_mode: Literal["per_stream", "shared", "per_stream_from_shared"] = "per_stream"
    # Windows a stream without a model collects as training data (not scored) before its model trains.
    warmup_windows: int = Field(128, ge=2)
    train_steps: int = Field(300, gt=0)
    train_batch_size: int = Field(32, gt=0)
    sensor_preset: str = "series"
    audio_preset: str = "audio"
    # Extra scorer options (ScorerParams fields). lam=1.0: pixel term only — the EfficientNet perceptual term
    # costs ~5x per window on a CPU, too much for a stream.
    scorer_options: dict[str, Any] = Field(default_factory=lambda: {"lam": 1.0})
    # Calibration (AnomalyLikelihood), in windows.
    likelihood_history_windows: int = Field(2_000, ge=2)
    likelihood_short_windows: int = Field(5, ge=1)
    alert_open_after: int = Field(1, ge=1)
    alert_close_after: int = Field(3, ge=1)
    snapshots: bool = True
    # Also alert on windows shifted/rescaled as a whole (level_z/scale_z from the pipeline, calibrated separately):
    # the per-window-normalised scalogram cannot show those.
    level_shift_alerts: bool = True
    # Loop: poll timeout, commit cadence, sink retry back-off, back-pressure limit.
    poll_timeout_ms: int = Field(200, ge=0)
    commit_interval_ms: int = Field(1_000, ge=0)
    # Calibration/alert state is also checkpointed this often (after a commit, with everything scored written),
    # so a crash resumes each stream's calibration instead of re-learning it; 0 = only on stop and rebalance.
    state_checkpoint_s: float = Field(30.0, ge=0)
    sink_retry_initial_s: float = Field(0.5, gt=0)
    sink_retry_max_s: float = Field(10.0, gt=0)
    max_backlog_windows: int = Field(20_000, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "MonitorSettings":
        if self.sensor_hop > self.sensor_window:
            raise ValueError("sensor_hop must not exceed sensor_window")
        if self.audio_hop > self.audio_window:
            raise ValueError("audio_hop must not exceed audio_window")
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


# Variables with the prefix that belong to other components (read directly, not through Settings).
FOREIGN_ENV_PREFIXES = ("SCALOWATCH_DASHBOARD_",)


def unknown_env_names(environ: Mapping[str, str]) -> list[str]:
    """``SCALOWATCH_*`` variables that no setting reads (typos), sorted."""
    known = env_names() | {CONFIG_FILE_ENV}
    return sorted(name for name in (key.upper() for key in environ)
                  if name.startswith(ENV_PREFIX) and name not in known
                  and not name.startswith(FOREIGN_ENV_PREFIXES))
