"""Settings → the objects of the processing step (stream classes, calibration, alert policy, models).

Kept apart from the loops so the monitor, the demo and the benchmark build the processor the same way.
The model side is imported lazily: a processor with an injected model factory needs no diffusion code.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from models.calibration import LikelihoodConfig
from streamer.alerts import AlertPolicy
from streamer.messages import AUDIO, SENSOR
from streamer.model_registry import ModelFactory, ModelLoader, ModelRegistry, WindowModel
from streamer.pipeline import StreamClassConfig, StreamProcessor
from streamer.windowing import NS_PER_S, WindowSpec


def stream_classes(m) -> dict[str, StreamClassConfig]:
    """Window geometry per class from ``MonitorSettings`` (samples, or seconds when the ``*_s`` fields are set)."""
    period_ns = int(round(m.sensor_sample_period_ms * 1e6)) if m.sensor_sample_period_ms else 0
    s_len, s_hop = m.sensor_window, m.sensor_hop
    if m.sensor_window_s or m.sensor_hop_s:
        if not period_ns:
            raise ValueError("sensor_window_s/sensor_hop_s need sensor_sample_period_ms to convert to samples")
        if m.sensor_window_s:
            s_len = max(2, int(round(m.sensor_window_s * NS_PER_S / period_ns)))
        if m.sensor_hop_s:
            s_hop = max(1, int(round(m.sensor_hop_s * NS_PER_S / period_ns)))
    rate = m.audio_sample_rate
    a_len = int(round(m.audio_window_s * rate)) if m.audio_window_s else m.audio_window
    a_hop = int(round(m.audio_hop_s * rate)) if m.audio_hop_s else m.audio_hop
    return {
        SENSOR: StreamClassConfig(SENSOR, "sensor", WindowSpec(s_len, s_hop, period_ns, m.max_gap_periods)),
        AUDIO: StreamClassConfig(AUDIO, "audio",
                                 WindowSpec(a_len, a_hop, int(round(NS_PER_S / rate)), m.max_gap_periods),
                                 sample_rate=rate),
    }


def likelihood_config(m) -> LikelihoodConfig:
    """``warmup_samples`` (calibration warm-up) becomes a learning period in sensor windows."""
    return LikelihoodConfig(
        historic_window=m.likelihood_history_windows,
        short_window=m.likelihood_short_windows,
        learning_period=math.ceil(m.warmup_samples / m.sensor_hop),
    )


def alert_policy(m) -> AlertPolicy:
    return AlertPolicy(threshold=m.alert_threshold, hysteresis=min(m.alert_hysteresis, m.alert_threshold),
                       open_after=m.alert_open_after, close_after=m.alert_close_after, cooldown_s=m.alert_cooldown_s)


def scalogram_factory(m) -> ModelFactory:
    """A fresh ScalogramPipeline (CWT sized to the class's U-Net preset + the configured scorer)."""

    def make(stream_class: str) -> WindowModel:
        from models.pipeline import ScalogramPipeline
        from models.scorers.base import create_scorer
        from models.training import TrainConfig
        from models.transforms.cwt import CWTConfig
        from models.unet import UNetConfig

        unet = UNetConfig.preset(m.audio_preset if stream_class == AUDIO else m.sensor_preset)
        h, w = unet.sample_size
        cwt = CWTConfig(n_scales=h, out_size=(h, w))
        train = TrainConfig(steps=m.train_steps, batch_size=m.train_batch_size)
        scorer = create_scorer(m.scorer, unet=unet, train=train, device=m.device, **dict(m.scorer_options))
        return ScalogramPipeline(cwt, scorer)

    return make


def scalogram_loader(m) -> ModelLoader:
    def load(directory: Path) -> WindowModel:
        from models.pipeline import ScalogramPipeline

        return ScalogramPipeline.load(directory, device=m.device)

    return load


def build_processor(
    m,
    *,
    factory: ModelFactory | None = None,
    loader: ModelLoader | None = None,
    warmup_for: Callable[[str, str], int] | None = None,
    background: bool = True,
    likelihood: LikelihoodConfig | None = None,
) -> StreamProcessor:
    registry = ModelRegistry(
        m.model_dir, factory or scalogram_factory(m), loader or scalogram_loader(m),
        warmup_windows=m.warmup_windows, warmup_for=warmup_for, shared=m.model_mode == "shared",
        shared_start=m.model_mode == "per_stream_from_shared",
        background=background,
    )
    return StreamProcessor(
        stream_classes(m), registry, policy=alert_policy(m), likelihood=likelihood or likelihood_config(m),
        max_batch=m.batch_max_size, max_wait_s=m.batch_max_wait_ms / 1000.0, snapshots=m.snapshots,
        level_shift=m.level_shift_alerts, state_dir=Path(m.model_dir) / "_state",
        scorer_name=m.scorer,
    )
