"""The HTM-style spatial rule: a value beyond the range of every earlier value (± a tolerance of that range)."""
from __future__ import annotations

import numpy as np
import pytest

from models.spatial_novelty import spatial_novelty


def test_flags_only_values_beyond_the_past_range_plus_tolerance():
    x = np.array([5.0, 5.0, 6.0, 10.0, 9.9, 10.1, 10.5, 0.0, 12.0])
    got = spatial_novelty(x, tolerance=0.05)
    # 6 after a flat [5, 5] says nothing; then range [5, 6]: 10 is beyond 6 + 0.05; [5, 10]: 10.1 is inside
    # 10 + 0.25, 10.5 beyond it; 0 is below 5 - 0.275; [0, 10.5]: 12 is beyond 10.5 + 0.525
    np.testing.assert_array_equal(got, [0, 0, 0, 1, 0, 0, 1, 1, 1])
    # the first point and a flat start (empty range) never fire
    assert spatial_novelty(np.array([3.0, 3.0, 3.0])).sum() == 0


def test_matches_a_brute_force_loop_and_is_causal():
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.standard_normal(400))
    full = spatial_novelty(x, 0.1)
    for t in range(1, 400):
        lo, hi = x[:t].min(), x[:t].max()
        span = hi - lo
        expected = float(span > 0 and (x[t] > hi + 0.1 * span or x[t] < lo - 0.1 * span))
        assert full[t] == expected
    np.testing.assert_array_equal(spatial_novelty(x[:250], 0.1), full[:250])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="tolerance"):
        spatial_novelty(np.arange(5.0), -0.1)
    from models.errors import InputError

    with pytest.raises(InputError):
        spatial_novelty(np.array([1.0, np.nan]))
