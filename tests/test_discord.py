"""TrainingDiscord: nearest-neighbour distances to the training windows, against a brute-force reference, and
its training-normalised z-scores on a series with one distorted period."""
from __future__ import annotations

import numpy as np
import pytest

from models.discord import TrainingDiscord, nearest_distances, znormalized_windows
from models.errors import InputError, NotFittedError


def periodic(n: int, period: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.sin(2 * np.pi * t / period) + 0.3 * np.sin(6 * np.pi * t / period) + 0.05 * rng.standard_normal(n)


def brute_force(x: np.ndarray, w: int, q_ends, r_ends, exclusion: int = 0) -> np.ndarray:
    def z(e):
        v = x[e - w + 1 : e + 1]
        return (v - v.mean()) / v.std()

    out = []
    for qe in q_ends:
        ds = [np.linalg.norm(z(qe) - z(re)) for re in r_ends if abs(qe - re) >= exclusion]
        out.append(min(ds) if ds else np.inf)
    return np.array(out)


def test_nearest_distances_match_brute_force_with_and_without_exclusion():
    x = periodic(600, seed=3) + np.linspace(0, 2, 600)
    w = 30
    q, r = np.arange(w - 1, 600, 37), np.arange(w - 1, 400, 3)
    got = nearest_distances(znormalized_windows(x, w, q), znormalized_windows(x, w, r), chunk=17)
    # float32 products: an exact match (d = 0) comes out as sqrt(rounding) ~ 2e-3
    np.testing.assert_allclose(got, brute_force(x, w, q, r), rtol=1e-3, atol=5e-3)
    got_ex = nearest_distances(znormalized_windows(x, w, q), znormalized_windows(x, w, r), query_pos=q, ref_pos=r,
                               exclusion=w, chunk=17)
    np.testing.assert_allclose(got_ex, brute_force(x, w, q, r, exclusion=w), rtol=1e-3, atol=5e-3)


def test_constant_windows_follow_the_matrix_profile_convention():
    x = np.concatenate([np.full(50, 3.0), np.sin(np.arange(50))])
    w = 10
    zc, zv = znormalized_windows(x, w, np.array([20, 30])), znormalized_windows(x, w, np.array([90]))
    assert np.allclose(zc, 0.0)
    assert nearest_distances(zc[:1], zc[1:])[0] == pytest.approx(0.0)
    assert nearest_distances(zv, zc[:1])[0] == pytest.approx(np.sqrt(w), rel=1e-5)


def test_zscores_peak_on_the_distorted_period_and_ignore_normal_ones():
    period, n, train_end = 40, 3000, 1200
    x = periodic(n, period)
    x[2000:2020] = x[2000:2020][::-1]  # one reversed half period: plausible values, unseen shape
    disc = TrainingDiscord().fit(x[:train_end], period)
    ends = np.arange(train_end + period, n, 5)
    z = disc.zscores(x, ends)
    hit = (ends >= 2000) & (ends - period + 1 < 2020)
    assert z[hit].max() > 5 * max(z[~hit].max(), 1.0)
    assert abs(np.median(z[~hit])) < 2.0  # normal windows look like the training part's own distances
    assert disc.stats is not None and disc.stats.window == period and disc.stats.std > 0


def test_query_blocks_and_reference_chunks_do_not_change_the_answer():
    x = periodic(3000, seed=5)
    w = 40
    q, r = np.arange(w - 1, 3000, 3), np.arange(w - 1, 1500)
    Q, R = znormalized_windows(x, w, q), znormalized_windows(x, w, r)
    whole = nearest_distances(Q, R, query_pos=q, ref_pos=r, exclusion=w, chunk=100_000, query_block=100_000)
    small = nearest_distances(Q, R, query_pos=q, ref_pos=r, exclusion=w, chunk=97, query_block=13)
    np.testing.assert_allclose(whole, small, atol=1e-4)  # float32 BLAS blocking differs in the last bits
    with pytest.raises(ValueError, match="query_pos"):
        nearest_distances(Q, R, exclusion=w)


def test_window_ends_outside_the_series_are_refused_not_wrapped():
    x = periodic(500)
    with pytest.raises(InputError, match="window ends"):
        znormalized_windows(x, 40, np.array([5]))  # would silently read the series' last points
    with pytest.raises(InputError, match="window ends"):
        znormalized_windows(x, 40, np.array([500]))


def test_clean_or_constant_training_parts_do_not_explode_the_z_scores():
    clean = np.sin(2 * np.pi * np.arange(2000) / 40)  # noise-free: the training part's own distances are ~0
    disc = TrainingDiscord().fit(clean[:1200], 40)
    assert disc.stats is not None and disc.stats.std >= 1e-2 * np.sqrt(40)
    z = disc.zscores(clean * 1.01, np.arange(1300, 1900, 7))  # 1 % louder: identical z-normalised shape
    assert np.all(np.abs(z) < 3)
    flat = TrainingDiscord().fit(np.full(600, 7.0), 40)
    varying = flat.zscores(np.r_[np.full(600, 7.0), np.sin(np.arange(200))], np.array([790]))
    assert np.all(np.isfinite(varying)) and 10 < varying[0] < 1e4  # clearly anomalous, not 1e6


def test_reference_stride_bounds_memory_and_scores_stay_causal():
    x = periodic(5000)
    disc = TrainingDiscord(max_references=500).fit(x[:4000], 40)
    assert disc.stats is not None and disc.stats.references <= 500 and disc.stats.reference_stride == 8
    ends = np.arange(4100, 4900, 7)
    longer = np.concatenate([x, np.random.default_rng(1).standard_normal(500)])
    np.testing.assert_array_equal(disc.zscores(x, ends), disc.zscores(longer, ends))  # appending changes nothing


def test_errors_are_clear():
    with pytest.raises(NotFittedError):
        TrainingDiscord().zscores(np.zeros(100), np.array([50]))
    with pytest.raises(InputError, match="needs a training part"):
        TrainingDiscord().fit(np.zeros(100), 40)
    with pytest.raises(InputError, match=">= 3 samples"):
        TrainingDiscord().fit(np.zeros(100), 2)
    with pytest.raises(ValueError):
        TrainingDiscord(max_references=1)


def test_value_discords_keep_level_and_match_brute_force():
    """normalize=False: windows standardised with the training part's fixed mean/std, so a pure level shift of an
    otherwise normal shape is far from every training window — and invisible to the z-normalised discord."""
    x = periodic(900, seed=5)
    x[700:740] += 2.0  # same shape, higher level
    w, train = 8, x[:400]
    raw = TrainingDiscord(normalize=False).fit(train, w)
    shape = TrainingDiscord().fit(train, w)
    ends = np.arange(w - 1, x.size)
    z_raw, z_shape = raw.zscores(x, ends), shape.zscores(x, ends)
    inside = (ends >= 700 + w) & (ends < 740)  # windows wholly inside the shifted part
    normal = ends >= 420
    normal &= ~((ends >= 700) & (ends < 740 + w))
    assert z_raw[inside].min() > 3 * max(z_raw[normal].max(), 1.0)
    assert z_shape[inside].max() < z_shape[normal].max() + 1.0  # the shape-only view cannot tell

    def brute(e):  # distance to the nearest training window outside an exclusion zone of w
        q = (x[e - w + 1 : e + 1] - train.mean()) / train.std()
        ds = [np.linalg.norm(q - (train[r - w + 1 : r + 1] - train.mean()) / train.std())
              for r in range(w - 1, train.size) if abs(e - r) >= w]
        return min(ds)

    some = np.array([w - 1, 150, 398, 405, 720, 899])
    stats = raw.stats
    assert stats is not None
    np.testing.assert_allclose(raw.zscores(x, some) * stats.std + stats.mean, [brute(e) for e in some],
                               rtol=1e-3, atol=5e-3)
    with pytest.raises(InputError, match=">= 2"):
        TrainingDiscord(normalize=False).fit(train, 1)
    flat = TrainingDiscord(normalize=False).fit(np.full(400, 7.0), 2)  # a flat training part is a valid reference
    z_flat = flat.zscores(np.r_[np.full(400, 7.0), 7.0, 7.0, 9.0], np.array([401, 402]))
    assert z_flat[0] <= 0.0 < 10.0 < z_flat[1]  # the same value again is normal, a new one is far out


@pytest.mark.parametrize("normalize", [True, False])
def test_saved_discords_keep_the_training_part_and_cut_the_same_windows_at_load(normalize):
    """The reference windows are the training part repeated ``window`` times over (a ``ucr`` detector's
    discords.npz was 48–295 MB); saved as the samples they are cut again at load, to the bit."""
    x = periodic(3000, 40)
    disc = TrainingDiscord(normalize=normalize).fit(x[:2000], 40)
    x_train = x[:2000].copy()
    x[:2000] = 0.0  # the caller's array may change after the fit: the detector keeps its own copy
    arrays = disc.arrays("d0_")
    assert "d0_refs" not in arrays and arrays["d0_train"].nbytes == x_train.nbytes
    assert sum(a.nbytes for a in arrays.values()) < disc._refs.nbytes / 10
    loaded = TrainingDiscord.from_arrays(arrays, "d0_")
    np.testing.assert_array_equal(loaded._refs, disc._refs)
    series = np.concatenate([x_train, x[2000:]])
    ends = np.arange(2100, 3000, 7)
    np.testing.assert_array_equal(loaded.zscores(series, ends), disc.zscores(series, ends))
    # files written before: the windows themselves
    old = {"d0_refs": disc._refs, "d0_ref_ends": arrays["d0_ref_ends"], "d0_meta": arrays["d0_meta"]}
    np.testing.assert_array_equal(TrainingDiscord.from_arrays(old, "d0_").zscores(series, ends),
                                  disc.zscores(series, ends))
    assert "d0_refs" in TrainingDiscord.from_arrays(old, "d0_").arrays("d0_")  # and saved again as they were
