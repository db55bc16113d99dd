"""`scalowatch demo`: bundled data through the monitor's processing into SQLite the dashboard can read."""
from __future__ import annotations

import math

import pytest

from streamer.demo import DEMO_DATA, DemoConfig, demo_sources, run_demo
from streamer.points import ALERT, LABEL_WINDOW, WINDOW_SCORE, WINDOW_SNAPSHOT
from streamer.sinks.sqlite import SQLiteSink
from stream_models import WindowStatsModel


def test_bundle_is_small_and_licensed():
    files = [p for p in DEMO_DATA.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 1_000_000
    licence = (DEMO_DATA / "LICENSE.md").read_text()
    assert "MIT" in licence and "CC BY-SA 4.0" in licence
    wav = [s for s in demo_sources() if s.stream_class == "audio"][0]
    assert wav.rate == 16000 and 2 * 16000 <= len(wav.data) <= 3 * 16000


def test_demo_replays_everything_through_the_monitor_code(tmp_path):
    cfg = DemoConfig(out_dir=tmp_path)
    report = run_demo(cfg, progress=False, model_factory=lambda cls: WindowStatsModel(),
                      model_loader=WindowStatsModel.load)
    sources = demo_sources()
    assert report.records == sum(s.message_count() for s in sources) and report.dead_letters == 0
    assert set(report.windows_scored) == {s.stream for s in sources}
    # the audio clip is regular: 15 % of its windows trained the model, the rest were scored
    n = (48000 - cfg.audio_window) // cfg.audio_hop + 1
    assert report.windows_scored["fan/id00"] in (n - math.ceil(0.15 * n), n - math.ceil(0.15 * n) + 1)
    sink = SQLiteSink(report.store_path)
    try:
        assert len(sink.read(WINDOW_SCORE)) == sum(report.windows_scored.values())
        assert len(sink.read(LABEL_WINDOW)) == 8  # the NAB windows of the three bundled files
        alerts = sink.read(ALERT)
        assert alerts and all(a.fields["state"] in ("open", "closed") for a in alerts)
        assert sink.read(WINDOW_SNAPSHOT)
        # the faulty fan starts at 2.0 s: an audio alert opens after that, none before
        fan = [a for a in alerts if a.tags["stream"] == "fan/id00"]
        start = [s for s in sources if s.stream == "fan/id00"][0].start_ns
        assert fan and all(a.time_ns >= start + 2 * 10**9 for a in fan)
    finally:
        sink.close()
    assert "ALERT" in report.text()


@pytest.mark.slow
def test_demo_with_the_real_diffusion_model(tmp_path):
    pytest.importorskip("models.pipeline")
    report = run_demo(DemoConfig(out_dir=tmp_path, train_steps=30), progress=False)
    assert sum(report.windows_scored.values()) > 1500
    assert len(list((tmp_path / "models" / "sensor").iterdir())) == 3
    assert len(list((tmp_path / "models" / "audio").iterdir())) == 1
