"""Synthetic store contents for the dashboard tests, written exactly as docs/store-schema.md lays them out.

Three streams on a one-minute grid: ``pump-1`` (sensor, one closed alert inside a known label window),
``fan-a`` (audio, one open alert with a window snapshot) and ``boiler`` (sensor, quiet). Values are derived
from the index so the tests can compute the expected answers themselves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamer.point_builders import snapshot_payload
from streamer.sinks.sqlite import SQLiteSink
from streamer.points import (
    ALERT, ALERT_FEEDBACK, LABEL_WINDOW, WINDOW_SCORE, WINDOW_SNAPSHOT, Point,
)

T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
MINUTE = 60_000_000_000
N_POINTS = 600
THRESHOLD = 0.8


@dataclass(frozen=True)
class Scenario:
    points: list[Point]
    pump_alert_ns: int
    pump_alert_end_ns: int
    fan_alert_ns: int
    label_start_ns: int
    label_end_ns: int


def score_of(stream: str, i: int) -> float:
    """Calibrated score: low, with a burst over the threshold for pump-1 (i 300..309) and fan-a (i 590..)."""
    base = 0.1 + 0.05 * math.sin(i / 7.0)
    if stream == "pump-1" and 300 <= i < 310:
        return 0.95
    if stream == "fan-a" and i >= 590:
        return 0.9
    return base


def window_points(stream: str, stream_class: str, n: int = N_POINTS, t0: int = T0, step: int = MINUTE) -> list[Point]:
    points = []
    for i in range(n):
        score = score_of(stream, i)
        points.append(Point(
            WINDOW_SCORE, {"stream": stream, "stream_class": stream_class},
            {"value": float(10 + i % 17), "raw_score": score * 3.0, "score": score, "threshold": THRESHOLD,
             "alert": int(score > THRESHOLD), "scorer": "recon", "model_version": "m1",
             "window_start_ns": t0 + (i - 8) * step},
            t0 + i * step,
        ))
    return points


def scenario() -> Scenario:
    points: list[Point] = []
    points += window_points("pump-1", "sensor")
    points += window_points("fan-a", "audio")
    points += window_points("boiler", "sensor")
    pump_alert = T0 + 300 * MINUTE
    pump_end = T0 + 309 * MINUTE
    fan_alert = T0 + 590 * MINUTE
    points.append(Point(ALERT, {"stream": "pump-1", "stream_class": "sensor"}, {
        "severity": 0.95, "peak_raw_score": 2.85, "end_ns": pump_end, "duration_s": 540.0, "state": "closed",
        "model_version": "m1"}, pump_alert))
    points.append(Point(ALERT, {"stream": "fan-a", "stream_class": "audio"}, {
        "severity": 0.9, "peak_raw_score": 2.7, "end_ns": 0, "duration_s": 540.0, "state": "open",
        "model_version": "m1"}, fan_alert))
    label_start, label_end = T0 + 290 * MINUTE, T0 + 320 * MINUTE
    points.append(Point(LABEL_WINDOW, {"stream": "pump-1"}, {"end_ns": label_end, "source": "nab:test/pump.csv"},
                        label_start))
    rng = np.random.default_rng(0)
    scalogram = rng.random((32, 48)).astype(np.float32)
    samples = np.sin(np.linspace(0, 50 * np.pi, 4000)).astype(np.float32)  # 0.25 s: under the codec's 4,096 cap
    payload = snapshot_payload(scalogram, scalogram * 0.5, np.abs(scalogram - scalogram * 0.5), samples,
                                      16000.0)
    points.append(Point(WINDOW_SNAPSHOT, {"stream": "fan-a"}, {"payload": payload}, fan_alert))
    points.append(Point(WINDOW_SNAPSHOT, {"stream": "pump-1"}, {"payload": payload}, pump_alert + MINUTE))
    return Scenario(points, pump_alert, pump_end, fan_alert, label_start, label_end)


def image_points(folder: Path) -> list[Point]:
    """Two MVTec-style results with real files on disk (PNG images, .npy maps, one mask), as the product encodes
    them."""
    from PIL import Image

    from streamer.image_results import ImageResult, image_result_points

    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for i, (defect, score) in enumerate((("good", 0.12), ("broken_large", 0.87))):
        img = (np.random.default_rng(i).random((64, 64, 3)) * 255).astype(np.uint8)
        path = folder / f"{defect}_{i:03d}.png"
        Image.fromarray(img).save(path)
        amap = np.zeros((16, 16), dtype=np.float32)
        amap[4:8, 4:8] = score
        map_path = folder / f"{defect}_{i:03d}_map.npy"
        np.save(map_path, amap)
        mask_file = None
        if defect != "good":
            mask = np.zeros((64, 64), dtype=np.uint8)
            mask[16:32, 16:32] = 255
            mask_file = folder / f"{defect}_{i:03d}_mask.png"
            Image.fromarray(mask).save(mask_file)
        results.append(ImageResult("bottle", defect, path, score, map_path, mask_file))
    return image_result_points(results, T0)  # what `scalowatch score --store` writes


def feedback_point(stream: str, alert_ns: int, verdict: str, note: str = "") -> Point:
    return Point(ALERT_FEEDBACK, {"stream": stream}, {"verdict": verdict, "note": note, "at_ns": T0}, alert_ns)


def write_sqlite(path: Path, points: list[Point]) -> None:
    """Write with the monitor's SQLiteSink: the dashboard is tested on what the real writer produces."""
    sink = SQLiteSink(path)
    try:
        sink.write(points)
    finally:
        sink.close()
