"""Alert state machine: threshold, hysteresis, cooldown, consecutive counts, re-delivery."""
from __future__ import annotations

import pytest

from streamer.alerts import AlertMachine, AlertPolicy, AlertState

S = 1_000_000_000


def run(machine, scores, step_s=1):
    events, flags = [], []
    for i, s in enumerate(scores):
        d = machine.update(i * step_s * S, s, raw_score=10 * s)
        flags.append(d.in_alert)
        if d.changed is not None:
            events.append((i, d.changed))
    return events, flags


def test_hysteresis_keeps_one_alert_while_score_hovers():
    m = AlertMachine("s", AlertPolicy(threshold=0.9, hysteresis=0.1, close_after=1))
    events, flags = run(m, [0.1, 0.95, 0.85, 0.92, 0.88, 0.5, 0.1])
    assert [(i, e.state) for i, e in events] == [(1, AlertState.OPEN), (5, AlertState.CLOSED)]
    assert flags == [False, True, True, True, True, False, False]
    closed = events[1][1]
    assert closed.start_ns == 1 * S and closed.end_ns == 5 * S
    assert closed.severity == pytest.approx(0.95) and closed.peak_raw_score == pytest.approx(9.5)
    assert closed.duration_s == pytest.approx(4.0)


def test_without_hysteresis_hovering_makes_several_alerts():
    m = AlertMachine("s", AlertPolicy(threshold=0.9, hysteresis=0.0, close_after=1))
    events, _ = run(m, [0.95, 0.85, 0.92, 0.88])
    assert [e.state for _, e in events] == [AlertState.OPEN, AlertState.CLOSED] * 2


def test_cooldown_suppresses_reopening_in_stream_time():
    m = AlertMachine("s", AlertPolicy(threshold=0.9, hysteresis=0.0, close_after=1, cooldown_s=3))
    events, flags = run(m, [0.95, 0.1, 0.95, 0.95, 0.95, 0.1])
    # closes at t=1, cooldown until t=4: the window at t=4 may open again
    assert [(i, e.state) for i, e in events] == [(0, AlertState.OPEN), (1, AlertState.CLOSED),
                                                  (4, AlertState.OPEN), (5, AlertState.CLOSED)]
    assert flags[2:4] == [False, False]


def test_open_after_requires_consecutive_windows():
    m = AlertMachine("s", AlertPolicy(threshold=0.9, open_after=3, close_after=1, hysteresis=0.0))
    events, _ = run(m, [0.95, 0.95, 0.1, 0.95, 0.95, 0.95])
    assert [(i, e.state) for i, e in events] == [(5, AlertState.OPEN)]


def test_redelivered_window_is_not_counted_twice():
    m = AlertMachine("s", AlertPolicy(threshold=0.9, open_after=2))
    assert not m.update(1 * S, 0.95, 1.0).in_alert
    assert not m.update(1 * S, 0.95, 1.0).in_alert  # same window again after a restart
    assert m.update(2 * S, 0.95, 1.0).changed is not None


def test_close_open_ends_alert():
    m = AlertMachine("s", AlertPolicy(threshold=0.5))
    m.update(5 * S, 0.9, 1.0)
    a = m.close_open(9 * S)
    assert a is not None and a.state is AlertState.CLOSED and a.end_ns == 9 * S
    assert m.current is None and m.close_open(10 * S) is None


def test_policy_validation():
    with pytest.raises(ValueError):
        AlertPolicy(threshold=-0.5)
    with pytest.raises(ValueError):
        AlertPolicy(threshold=0.5, hysteresis=0.6)
