"""Scored samples and alerts → store points (docs/store-schema.md). One function per measurement."""
from __future__ import annotations

import base64
import io

import numpy as np

from streamer.alerts import Alert
from streamer.points import ALERT, WINDOW_SCORE, WINDOW_SNAPSHOT, Point

SNAPSHOT_MAX_SAMPLES = 4096
"""InfluxDB 1.x caps string fields at 64 KiB: long audio windows are decimated in the snapshot."""


def score_point(stream_class: str, stream: str, time_ns: int, value: float, score: float, decided_by: str,
                channel_value: float, threshold: float, in_alert: bool, scorer: str, model_version: str) -> Point:
    """The detector's score of one sample (audio: of one window end). ``raw_score`` is the value of the channel
    that decided the score (``decided_by``), so a person can see *why* a point scored what it did."""
    return Point(
        measurement=WINDOW_SCORE,
        tags={"stream": stream, "stream_class": stream_class},
        fields={
            "value": float(value),
            "raw_score": float(channel_value),
            "score": float(score),
            "decided_by": decided_by,
            "threshold": float(threshold),
            "alert": int(bool(in_alert)),
            "scorer": scorer,
            "model_version": model_version,
        },
        time_ns=int(time_ns),
    )


def alert_point(alert: Alert, stream_class: str) -> Point:
    return Point(
        measurement=ALERT,
        tags={"stream": alert.stream, "stream_class": stream_class},
        fields={
            "severity": float(alert.severity),
            "peak_raw_score": float(alert.peak_raw_score),
            "end_ns": int(alert.end_ns),
            "duration_s": float(alert.duration_s),
            "state": alert.state.value,
            "model_version": alert.model_version,
            "decided_by": alert.decided_by,
        },
        time_ns=int(alert.start_ns),
    )


def snapshot_payload(scalogram: np.ndarray, reconstruction: np.ndarray | None, anomaly_map: np.ndarray,
                     samples: np.ndarray, sample_rate: float) -> str:
    """base64 of an .npz with the arrays the window inspector draws."""
    scalogram = _plane(scalogram)
    anomaly_map = _plane(anomaly_map)
    recon = _plane(reconstruction) if reconstruction is not None else np.zeros_like(scalogram)
    samples = np.asarray(samples, dtype=np.float32).ravel()
    rate = float(sample_rate)
    if samples.size > SNAPSHOT_MAX_SAMPLES:
        step = -(-samples.size // SNAPSHOT_MAX_SAMPLES)
        samples = samples[::step]
        rate = rate / step
    buf = io.BytesIO()
    np.savez_compressed(buf, scalogram=scalogram, reconstruction=recon, anomaly_map=anomaly_map,
                        samples=samples, sample_rate=np.float64(rate))
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_snapshot(payload: str) -> dict[str, np.ndarray]:
    """The inverse of :func:`snapshot_payload` (the dashboard reads snapshots with it)."""
    with np.load(io.BytesIO(base64.b64decode(payload, validate=False)), allow_pickle=False) as data:
        return {k: np.asarray(data[k]) for k in data.files}


def snapshot_point(stream: str, time_ns: int, payload: str) -> Point:
    return Point(
        measurement=WINDOW_SNAPSHOT,
        tags={"stream": stream},
        fields={"payload": payload},
        time_ns=int(time_ns),
    )


def _plane(a: np.ndarray) -> np.ndarray:
    """(C, H, W) or (1, H, W) or (H, W) → (H, W) float32 (first channel)."""
    a = np.asarray(a, dtype=np.float32)
    while a.ndim > 2:
        a = a[0]
    return a
