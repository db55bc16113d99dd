"""Run the real monitor in a child process for the crash/restart test (``python tests/monitor_runner.py``).

Settings come from SCALOWATCH_* environment variables exactly as for ``scalowatch monitor``; this wrapper only
adds ``--idle-exit-s`` and logs to stderr. It exists so the test can SIGKILL a real consumer mid-stream.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scalowatch.cli_stream import _stop_on_signals, run_monitor  # noqa: E402
from streamer.config import Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle-exit-s", type=float, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_monitor(Settings(), stop=_stop_on_signals(), idle_exit_s=args.idle_exit_s)


if __name__ == "__main__":
    main()
