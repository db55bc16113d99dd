"""The dashboard in a real browser: headless Debian Chromium driven by Playwright, against a real Streamlit
server started by ``launch_dashboard`` (what ``scalowatch dashboard`` and ``scalowatch demo`` run).

The store is filled by replaying the bundled labelled NAB series and fan recording through the monitor's own
processing (streamer.demo.run_demo: windowing → model → calibration → alerts → SQLiteSink). The model is the small
window-statistics model of the streamer tests, so the test checks the dashboard, not diffusion training time.
If the demo pipeline cannot be imported, the store is filled with the synthetic scenario through the sink.

Waits are on elements (``stDataFrame``, ``stVegaLiteChart``), never on time. A screenshot goes to the test's tmp
dir; with SCALOWATCH_UPDATE_SCREENSHOT=1 it also refreshes docs/img/dashboard.png (the README's picture), so a
plain test run never leaves the tree modified.
"""
from __future__ import annotations

import os
import shutil
import socket
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from dashboards.store import SQLiteStore

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[1]
README_SHOT = REPO / "docs" / "img" / "dashboard.png"
WAIT_MS = 120_000  # the first page load on two busy cores can be slow; this bounds a hang, it is not a sleep


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def populate(tmp_path: Path) -> tuple[Path, str]:
    """(store path, how it was filled)."""
    try:
        from stream_models import quick_fit
        from streamer.demo import DemoConfig, run_demo
    except ImportError:
        from dashboard_data import scenario, write_sqlite

        path = tmp_path / "store.sqlite"
        write_sqlite(path, scenario().points)
        return path, "synthetic scenario through the sink"
    report = run_demo(DemoConfig(out_dir=tmp_path / "demo"), progress=False, fitter=quick_fit)
    return report.store_path, "bundled NAB + fan replay through streamer.demo"


def write_alert(store_path: Path, stream: str, time_ns: int) -> None:
    from streamer.points import ALERT, Point
    from streamer.sinks.sqlite import SQLiteSink

    with SQLiteSink(store_path) as sink:
        sink.write([Point(ALERT, {"stream": stream, "stream_class": "sensor"}, {
            "severity": 0.999, "peak_raw_score": 9.0, "end_ns": 0, "duration_s": 0.0, "state": "open",
            "model_version": "browser-test"}, time_ns)])


def wait_healthy(base: str, proc, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dashboard exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as resp:
                if resp.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("dashboard did not become healthy")


@pytest.fixture
def dashboard(tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium; `make test` does)")
    pytest.importorskip("playwright.sync_api")
    from dashboards.cli import launch_dashboard

    store_path, how = populate(tmp_path)
    port = free_port()
    proc = launch_dashboard("sqlite", store_path, port=port, host="127.0.0.1", block=False)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        yield base, SQLiteStore(store_path), how
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except Exception:  # noqa: BLE001
            proc.kill()
            proc.wait()


def test_alert_in_live_table_and_stream_chart_renders(dashboard, tmp_path):
    from playwright.sync_api import sync_playwright

    base, store, how = dashboard
    alerts = store.alerts()
    assert not alerts.empty, f"the replay ({how}) raised no alert"
    newest = alerts.iloc[0]
    labelled = sorted({w.stream for w in store.labels()} & set(alerts["stream"]))
    shown = (labelled or [newest["stream"]])[:2]
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1500, "height": 1000}, device_scale_factor=1)
        try:
            page = ctx.new_page()
            page.goto(f"{base}/", wait_until="domcontentloaded")
            page.wait_for_selector('[data-testid="stDataFrame"]', timeout=WAIT_MS)
            # The grid is drawn on a canvas; its cells are mirrored in an accessible table in the DOM.
            page.wait_for_function(
                "name => document.querySelector('[data-testid=\"stDataFrame\"]').textContent.includes(name)",
                arg=str(newest["stream"]), timeout=WAIT_MS)
            assert page.get_by_text("Page not found").count() == 0  # deep links resolve on a fresh load
            open_count = int((alerts["state"] == "open").sum())
            metric = page.locator('[data-testid="stMetricValue"]').first
            assert metric.inner_text().strip() == str(open_count)
            page.screenshot(path=str(tmp_path / "alerts.png"), full_page=True)

            # Liveness: a new alert written by the monitor's sink shows up without reloading the page
            # (st.fragment(run_every=...) re-queries once the short cache TTL has passed).
            write_alert(store.path, "live/new-stream", int(alerts["time_ns"].max()) + 1)
            page.wait_for_function(
                "() => document.querySelector('[data-testid=\"stDataFrame\"]').textContent.includes('live/new-stream')",
                timeout=WAIT_MS)

            query = urllib.parse.urlencode([("stream", s) for s in shown] + [("range", "all")])
            page.goto(f"{base}/streams?{query}", wait_until="domcontentloaded")
            page.wait_for_selector('[data-testid="stVegaLiteChart"] svg, [data-testid="stVegaLiteChart"] canvas',
                                   timeout=WAIT_MS)
            page.wait_for_function(
                "n => document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]').length >= n",
                arg=2 * len(shown), timeout=WAIT_MS)
            page.wait_for_selector('[data-testid="stDataFrame"]', timeout=WAIT_MS)  # the sparkline overview
            charts = page.locator('[data-testid="stVegaLiteChart"]')
            assert charts.count() == 2 * len(shown)
            box = charts.first.bounding_box()
            assert box and box["width"] > 300 and box["height"] > 100
            assert shown[0] in charts.first.inner_html()  # the chart's title names the stream
            assert not page.locator('[data-testid="stException"]').count()
            assert page.get_by_text("Page not found").count() == 0
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            ctx.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("SCALOWATCH_UPDATE_SCREENSHOT") == "1":
        README_SHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, README_SHOT)
    print(f"store filled with: {how}; screenshots in {tmp_path}")
