"""AnomalyLikelihood: causal, bounded, and it flags a level shift in raw scores after a stable period."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from models.calibration import AnomalyLikelihood, LikelihoodConfig, log_likelihood
from models.errors import InputError


def _stable_then_spike(n_stable: int = 600, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = 0.2 + 0.02 * rng.standard_normal(n_stable + 40)
    raw[n_stable : n_stable + 15] = 1.0
    return raw


def test_output_is_causal_prefix_invariant():
    raw = np.random.default_rng(1).gamma(2.0, 1.0, size=800)
    full = AnomalyLikelihood(learning_period=50, historic_window=300).transform(raw)
    for cut in (1, 60, 333, 799):
        prefix = AnomalyLikelihood(learning_period=50, historic_window=300).transform(raw[:cut])
        np.testing.assert_array_equal(prefix, full[:cut])


def test_future_values_do_not_change_past_outputs():
    raw = np.random.default_rng(2).random(400)
    altered = raw.copy()
    altered[300:] = 100.0
    a = AnomalyLikelihood(learning_period=20).transform(raw)
    b = AnomalyLikelihood(learning_period=20).transform(altered)
    np.testing.assert_array_equal(a[:300], b[:300])
    assert b[305] > a[305]


@pytest.mark.parametrize("log_scale", [False, True])
def test_range_is_unit_interval(log_scale):
    raw = np.random.default_rng(3).standard_cauchy(2000)
    out = AnomalyLikelihood(learning_period=10, log_scale=log_scale).transform(raw)
    assert out.shape == raw.shape
    assert np.all(out >= 0.0) and np.all(out <= 1.0)


def test_learning_period_outputs_learning_value():
    raw = _stable_then_spike()
    out = AnomalyLikelihood(learning_period=100, learning_value=0.5).transform(raw)
    assert np.all(out[:100] == 0.5)
    out0 = AnomalyLikelihood(learning_period=100, learning_value=0.0).transform(raw)
    assert np.all(out0[:100] == 0.0)


def test_spike_after_stable_period_scores_near_one():
    raw = _stable_then_spike()
    al = AnomalyLikelihood(learning_period=300, historic_window=2000)
    out = al.transform(raw)
    stable = out[300:600]
    assert np.median(stable) < 0.9
    assert out[600:615].max() > 0.999
    # The short average needs a few spike points; by the 5th it is certain.
    assert out[604] > 0.999
    logged = AnomalyLikelihood(learning_period=300, historic_window=2000, log_scale=True).transform(raw)
    assert logged[604] > 0.3
    assert np.median(logged[300:600]) < 0.1


def test_state_roundtrip_continues_identically():
    raw = np.random.default_rng(4).random(900)
    whole = AnomalyLikelihood(learning_period=30, historic_window=200).transform(raw)
    first = AnomalyLikelihood(learning_period=30, historic_window=200)
    first.transform(raw[:450])
    state = json.loads(json.dumps(first.state_dict()))
    resumed = AnomalyLikelihood()
    resumed.load_state_dict(state)
    rest = resumed.transform(raw[450:])
    np.testing.assert_allclose(rest, whole[450:], rtol=0, atol=1e-9)


def test_bad_input_gets_clear_error():
    al = AnomalyLikelihood()
    with pytest.raises(InputError):
        al.update(float("nan"))
    with pytest.raises(InputError):
        al.transform([0.1, np.inf])
    with pytest.raises(InputError):
        al.load_state_dict({"config": {}})
    with pytest.raises(ValueError):
        LikelihoodConfig(short_window=0)


def test_log_likelihood_known_values():
    assert log_likelihood(0.0) == pytest.approx(0.0, abs=1e-9)
    assert log_likelihood(1.0) == pytest.approx(1.0, abs=1e-9)
    assert log_likelihood(0.99999) == pytest.approx(0.5, abs=1e-3)


def _reference(x: np.ndarray, cfg: LikelihoodConfig) -> np.ndarray:
    """The HTM definition, point by point from scratch (exact sums, no running state)."""
    short = np.array([x[max(0, t - cfg.short_window + 1):t + 1].mean() for t in range(x.size)])
    out = np.full(x.size, cfg.learning_value)
    for t in range(x.size):
        until = t if cfg.history_until is None else min(t, cfg.history_until)
        history = short[cfg.skip_first:until][-cfg.historic_window:]
        if t < cfg.learning_period or history.size < 2:
            continue
        mean = history.mean()
        std = max(history.std(), cfg.min_std, cfg.relative_min_std * abs(mean))
        z = (short[t] - mean) / std
        value = 0.5 * math.erfc(-(abs(z) if cfg.two_sided else z) / math.sqrt(2.0))
        out[t] = min(max(log_likelihood(value) if cfg.log_scale else value, 0.0), 1.0)
    return out


OPTIONS = [{}, {"two_sided": True},
           {"log_scale": True, "learning_period": 50, "skip_first": 10, "historic_window": 37, "short_window": 3},
           {"relative_min_std": 0.1, "min_std": 0.001},
           {"history_until": 900, "skip_first": 100, "learning_period": 200},  # the history stops growing at 900
           {"history_until": 60, "skip_first": 100}]  # ... or never holds anything: the learning value throughout


@pytest.mark.parametrize("options", OPTIONS)
def test_matches_the_definition_in_any_chunking(options):
    """transform() is vectorised with running sums: it must give the definition's numbers (to float rounding),
    one value at a time, in odd chunks, whole, and for several channels at once."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(1500), rng.standard_normal(300) * 5 + 3])
    options = {"historic_window": 400, **options}
    one, chunked, whole = (AnomalyLikelihood(**options) for _ in range(3))
    expected = _reference(x, one.config)
    singly = np.array([one.update(v) for v in x])
    got = np.concatenate([chunked.transform(x[i:i + 137]) for i in range(0, x.size, 137)])
    for out in (singly, got, whole.transform(x)):
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    both = AnomalyLikelihood(**options, channels=2)
    pair = np.stack([x, x[::-1]])
    together = np.concatenate([both.transform(pair[:, i:i + 61]) for i in range(0, x.size, 61)], axis=1)
    np.testing.assert_allclose(together[0], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(together[1], _reference(x[::-1], one.config), rtol=0, atol=1e-12)
    assert one.state_dict() == chunked.state_dict()
    first = both.channel_states()[0]
    assert first["history"].values.tolist() == one.state_dict()["history"] and first["count"] == one.state_dict()["count"]


def test_the_saved_history_says_which_elements_of_the_growing_series_it_holds():
    """A checkpoint appends only the history's new elements (streamer/state_files.py): ``end`` must count every
    short mean that ever entered it — not the scores skipped at the start — and ``values`` must be its newest."""
    cfg = LikelihoodConfig(historic_window=50, short_window=3, learning_period=5, skip_first=7)
    x = np.random.default_rng(2).random(130)
    like = AnomalyLikelihood(cfg)
    ends = []
    for i in range(0, 130, 13):
        like.transform(x[i:i + 13])
        ends.append(like.channel_states()[0]["history"])
    short = np.convolve(x, np.ones(3) / 3)[:130]
    short[:2] = [x[0], x[:2].mean()]
    for k, series in enumerate(ends):
        seen = 13 * (k + 1)
        assert series.end == max(0, seen - 7) and series.values.size == min(series.end, 50)
        np.testing.assert_allclose(series.values, short[7:seen][-50:], rtol=0, atol=1e-12)


def test_a_history_that_stops_keeps_a_lasting_change_anomalous():
    """``history_until``: the distribution stops growing there, so a change that lasts stays as unusual as at its
    start; a history that follows the stream takes it in and the likelihood falls back (HTM's behaviour). Its saved
    state says how many short means entered (the checkpoint appends only new ones) and omits the setting when it
    is not set, so a release from before it reads the states it writes."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.random(1000), rng.random(3000) + 2.0])  # a lasting step at 1,000
    follows = AnomalyLikelihood(learning_period=500, skip_first=250).transform(x)
    stops = AnomalyLikelihood(learning_period=500, skip_first=250, history_until=500)
    fixed = stops.transform(x)
    assert follows[1020] > 0.999 and fixed[1020] > 0.999
    assert follows[-500:].max() < 0.9 and fixed[-500:].min() > 0.999
    (state,) = stops.channel_states()
    assert state["history"].end == 250 and state["config"]["history_until"] == 500
    assert "history_until" not in AnomalyLikelihood().channel_states()[0]["config"]
    with pytest.raises(ValueError, match="history_until"):
        LikelihoodConfig(history_until=-1)


def test_channel_states_round_trip_in_the_one_channel_format():
    rng = np.random.default_rng(5)
    pair = rng.random((2, 700))
    whole = AnomalyLikelihood(learning_period=30, historic_window=200, channels=2).transform(pair)
    first = AnomalyLikelihood(learning_period=30, historic_window=200, channels=2)
    first.transform(pair[:, :350])
    states = json.loads(json.dumps(first.channel_states(), default=lambda a: getattr(a, "values", a).tolist()))
    single = AnomalyLikelihood()
    single.load_state_dict(states[1])
    np.testing.assert_allclose(single.transform(pair[1, 350:]), whole[1, 350:], rtol=0, atol=1e-12)
    resumed = AnomalyLikelihood(channels=2)
    resumed.load_channel_states(states)
    np.testing.assert_allclose(resumed.transform(pair[:, 350:]), whole[:, 350:], rtol=0, atol=1e-12)
    with pytest.raises(InputError):
        resumed.transform(pair[0])
    with pytest.raises(InputError):
        resumed.load_channel_states(states[:1])
