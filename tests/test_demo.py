"""`scalowatch demo`: bundled data through the monitor's processing into SQLite the dashboard can read."""
from __future__ import annotations

import numpy as np
import pytest

from models.detector import PRESETS

from streamer.demo import DEMO_DATA, DemoConfig, demo_sources, run_demo
from streamer.points import ALERT, LABEL_WINDOW, WINDOW_SCORE, WINDOW_SNAPSHOT
from streamer.sinks.sqlite import SQLiteSink
from stream_models import quick_fit


def test_bundle_is_small_and_licensed():
    files = [p for p in DEMO_DATA.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 1_000_000
    licence = (DEMO_DATA / "LICENSE.md").read_text()
    assert "MIT" in licence and "CC BY-SA 4.0" in licence
    wav = [s for s in demo_sources() if s.stream_class == "audio"][0]
    assert wav.rate == 16000 and 2 * 16000 <= len(wav.data) <= 3 * 16000


def test_demo_replays_everything_through_the_monitor_code_with_the_nab_preset(tmp_path):
    report = run_demo(DemoConfig(out_dir=tmp_path), progress=False, fitter=quick_fit)
    sources = demo_sources()
    assert report.records == sum(s.message_count() for s in sources) and report.dead_letters == 0
    assert set(report.windows_scored) == {s.stream for s in sources}
    # every NAB row is scored (training part included); the fan clip gets a score per window end
    for s in sources:
        if s.stream_class != "audio":
            assert report.windows_scored[s.stream] == len(np.unique(s.times_ns))
    audio = PRESETS["audio"].config
    n_audio = (len(sources[-1].data) - audio.window) // audio.hop + 1
    assert abs(report.windows_scored["fan/id00"] - n_audio) <= 1
    sink = SQLiteSink(report.store_path)
    try:
        assert len(sink.read(WINDOW_SCORE)) == sum(report.windows_scored.values())
        assert len(sink.read(LABEL_WINDOW)) == 8  # the NAB windows of the three bundled files
        alerts = sink.read(ALERT)
        assert alerts and all(a.fields["state"] in ("open", "closed") for a in alerts)
        assert all(a.fields["decided_by"] for a in alerts)
        assert sink.read(WINDOW_SNAPSHOT)
        sensor = [p for p in sink.read(WINDOW_SCORE) if p.tags["stream_class"] == "sensor"]
        assert sensor[0].fields["threshold"] == PRESETS["nab"].alert_threshold  # the benchmarked threshold
    finally:
        sink.close()
    assert "ALERT" in report.text()


@pytest.mark.slow
def test_demo_with_the_real_detector(tmp_path):
    report = run_demo(DemoConfig(out_dir=tmp_path), progress=False)
    assert sum(report.windows_scored.values()) > 9000
    assert len(list((tmp_path / "models" / "sensor").iterdir())) == 3
    assert len(list((tmp_path / "models" / "audio").iterdir())) == 1
