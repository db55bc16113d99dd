"""The short fault suite (issue 9) in the test run: real broker, real InfluxDB, real monitor processes, SIGKILLs,
members joining and leaving, a store outage, an unreachable broker and a few hundred bad records of every kind.
Nothing may be lost, differ from the detector's offline scores, or crash (benchmarks/faults.py)."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


def test_short_fault_run_loses_nothing_crashes_nothing_and_dead_letters_every_bad_record(kafka_broker,
                                                                                         influx_server, tmp_path):
    # the fixtures prove the servers can start here; the suite starts its own (it stops and restarts them)
    from benchmarks.faults import main

    result = main(["--short", "--out", str(tmp_path)])
    summary = json.dumps({k: result[k] for k in ("faults", "windows", "bad_records", "unexpected_exits")},
                         default=str)[:4000]
    assert result["faults"]["kills"] >= 2 and result["faults"]["rebalances"] >= 4, summary
    assert result["windows"]["expected"] > 0 and result["windows"]["missing"] == 0, summary
    assert result["windows"]["differing"] == 0, summary
    assert result["bad_records"]["missing"] == 0 and result["bad_records"]["wrong_reason"] == 0, summary
    assert result["unexpected_exits"] == 0, summary
    assert (tmp_path / "faults.json").is_file()
