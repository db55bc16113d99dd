"""Settings → the objects of the processing step (stream classes with their detectors and alert rule, registry).

Kept apart from the loops so the monitor, the demo and ``bench --via monitor`` build the processor the same way.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from models.detector import PRESETS, DetectorConfig, preset
from streamer.alerts import AlertPolicy
from streamer.memory import default_max_streams, fitted_weight, training_weight
from streamer.messages import AUDIO, SENSOR
from streamer.model_registry import DetectorRegistry, Fitter, Loader
from streamer.pipeline import StreamClassConfig, StreamProcessor

log = logging.getLogger(__name__)


def detector_configs(m) -> dict[str, DetectorConfig]:
    """The detector configuration of each stream class: its preset with the configured overrides."""
    return {SENSOR: preset(m.sensor_preset, **dict(m.sensor_detector_options)),
            AUDIO: preset(m.audio_preset, **dict(m.audio_detector_options))}


def alert_policy(m, preset_name: str) -> AlertPolicy:
    threshold = m.alert_threshold if m.alert_threshold is not None else PRESETS[preset_name].alert_threshold
    return AlertPolicy(threshold=threshold, hysteresis=min(m.alert_hysteresis, threshold),
                       open_after=m.alert_open_after, close_after=m.alert_close_after, cooldown_s=m.alert_cooldown_s)


def stream_classes(m) -> dict[str, StreamClassConfig]:
    configs = detector_configs(m)
    return {
        SENSOR: StreamClassConfig(SENSOR, "sensor", configs[SENSOR], alert_policy(m, m.sensor_preset)),
        AUDIO: StreamClassConfig(AUDIO, "audio", configs[AUDIO], alert_policy(m, m.audio_preset),
                                 sample_rate=m.audio_sample_rate),
    }


def limit_model_threads() -> None:
    """PyTorch's intra-op threads at most :data:`~models.detector.fitted.BATCH_INDEPENDENT_THREADS` (2).

    Why: with more, the model's kernels split a batch across threads by its size, so a window's score would depend
    on which windows share its micro-batch (6e-5 in z with four threads) and a stream would no longer be scored the
    same however its samples arrive. The tiny scalogram models gain little from more threads; a machine with more
    cores runs more workers of the group (``docs/streaming.md``). Process-wide, as PyTorch's setting is."""
    import torch

    from models.detector.fitted import BATCH_INDEPENDENT_THREADS

    if torch.get_num_threads() > BATCH_INDEPENDENT_THREADS:
        log.info("PyTorch intra-op threads %d -> %d (scores independent of micro-batches)", torch.get_num_threads(),
                 BATCH_INDEPENDENT_THREADS)
        torch.set_num_threads(BATCH_INDEPENDENT_THREADS)


def build_processor(
    m,
    *,
    train_samples_for: Callable[[str, str], int] | None = None,
    background: bool = True,
    fitter: Fitter | None = None,
    loader: Loader | None = None,
) -> StreamProcessor:
    limit_model_threads()  # every processor: the monitor, the demo, bench --via monitor
    classes = stream_classes(m)
    registry = DetectorRegistry(m.model_dir, {name: c.detector for name, c in classes.items()},
                                shared=m.model_mode == "shared", background=background, device=m.device,
                                fitter=fitter, loader=loader)
    per_stream = m.model_mode == "per_stream"
    max_streams = m.max_streams or default_max_streams(per_stream)
    # A stream collecting its training part counts as its buffer, or as the detector it will be fitted into where
    # that is larger (per-stream models; a long training part's discord windows): streams that arrive together are
    # let in before any of them is fitted, so the cap counts what they will hold.
    weights = {name: max(training_weight(c.detector.train_samples, per_stream),
                         fitted_weight(c.detector.discord_bytes_bound(), per_stream)) for name, c in classes.items()}
    for name, weight in weights.items():
        if weight > max_streams:
            log.warning("stream cap %d is below what one %s stream collecting its training part takes (%d): each new "
                        "%s stream will evict every stream it can; raise MAX_STREAMS", max_streams, name, weight,
                        name)
    return StreamProcessor(classes, registry, snapshots=m.snapshots, state_dir=Path(m.model_dir) / "_state",
                           train_samples_for=train_samples_for, max_skew_s=m.max_timestamp_skew_s,
                           max_streams=max_streams, training_weights=weights,
                           max_step_samples=m.max_samples_per_round)
