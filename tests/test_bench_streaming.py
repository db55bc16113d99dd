"""The streaming benchmark's measuring parts: the latency histogram a soak relies on, and the detector-only figure."""
from __future__ import annotations

import numpy as np

from benchmarks.streaming import LatencyHistogram, detector_throughput


def test_histogram_percentiles_are_never_optimistic_by_more_than_a_bin():
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, 0.15, size=20_000)
    hist = LatencyHistogram()
    for part in np.array_split(values, 7):
        hist.add(part)
    assert hist.count == values.size
    for q in (50, 99):
        exact = float(np.percentile(values, q))
        assert exact - 1e-9 <= hist.percentile(q) <= exact + LatencyHistogram.RESOLUTION_S + 1e-9
    assert hist.summary()["max"] == round(float(values.max()), 4)
    hist.add(np.array([500.0]))  # beyond two minutes: the overflow bin, and the true maximum
    assert hist.count == values.size + 1 and hist.max == 500.0
    assert LatencyHistogram().summary() == {"count": 0, "p50": None, "p99": None, "max": None}


def test_detector_throughput_feeds_every_stream_every_round():
    import torch

    threads = torch.get_num_threads()
    out = detector_throughput("nab", "sensor", rate=50.0, streams=3, seconds=1.0)
    assert torch.get_num_threads() == threads  # it measures on one thread and must hand the process back as it was
    assert out["streams"] == 3 and out["samples"] == 3 * 50
    assert out["samples_per_s_per_core"] > 0 and out["window"] >= 16


def test_member_histograms_merge_exactly_in_the_parent():
    """Each monitor process sends its latencies as a sparse histogram; the parent's sum must be the histogram of
    all latencies together (the multi-member soak's p99 comes from it)."""
    rng = np.random.default_rng(1)
    parts = [rng.gamma(2.0, 0.4, size=n) for n in (3_000, 5_000, 0)]
    merged, together = LatencyHistogram(), LatencyHistogram()
    for part in parts:
        member = LatencyHistogram()
        member.add(part)
        merged.add_sparse(*member.sparse())
        together.add(part)
    assert np.array_equal(merged.counts, together.counts)
    assert merged.summary() == together.summary()
