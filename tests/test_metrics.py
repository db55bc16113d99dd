"""Metric functions against known values: ROC/AUROC, PRO (MVTec), UCR hit rule."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from models.errors import InputError
from models.metrics.classification import pro_curve, pro_score, roc_auc, roc_curve
from models.metrics.ucr import UcrSpec, is_hit, parse_ucr_name, ucr_accuracy


def test_roc_auc_perfect_inverted_and_random():
    y = np.r_[np.zeros(50), np.ones(50)]
    s = np.r_[np.linspace(0, 1, 50), np.linspace(2, 3, 50)]
    assert roc_auc(y, s) == 1.0
    assert roc_auc(y, -s) == 0.0
    rng = np.random.default_rng(0)
    yr = rng.random(20000) < 0.3
    assert roc_auc(yr, rng.random(20000)) == pytest.approx(0.5, abs=0.02)


def test_roc_auc_equals_mann_whitney_with_ties():
    rng = np.random.default_rng(1)
    y = rng.random(500) < 0.4
    s = np.round(rng.normal(size=500) + y, 1)  # many ties
    u = stats.mannwhitneyu(s[y], s[~y]).statistic
    assert roc_auc(y, s) == pytest.approx(u / (y.sum() * (~y).sum()), abs=1e-12)


def test_roc_curve_shape_and_ends():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    fpr, tpr, thr = roc_curve(y, s)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    assert thr[0] == np.inf and thr[-1] == 0.1
    assert roc_auc(y, s) == pytest.approx(0.75)


def test_roc_rejects_bad_input():
    with pytest.raises(InputError):
        roc_auc(np.ones(5), np.arange(5))
    with pytest.raises(InputError):
        roc_auc(np.array([0, 1, 2]), np.arange(3))
    with pytest.raises(InputError):
        roc_auc(np.array([0, 1]), np.array([0.0, np.nan]))


def _masks():
    gt = np.zeros((3, 32, 32), dtype=bool)
    gt[0, 2:6, 2:6] = True  # 16-pixel region
    gt[0, 20:30, 20:30] = True  # 100-pixel region
    gt[1, 10:12, 5:25] = True
    return gt


def test_pro_perfect_and_random():
    gt = _masks()
    assert pro_score(gt, gt.astype(float)) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    big = np.zeros((20, 64, 64), dtype=bool)
    big[:, 10:30, 10:30] = True
    # Random maps: PRO(fpr) ~ fpr, so the normalised area up to 0.3 is ~0.15.
    assert pro_score(big, rng.random(big.shape)) == pytest.approx(0.15, abs=0.01)


def test_pro_averages_regions_not_pixels():
    gt = _masks()
    amap = np.zeros(gt.shape)
    amap[0, 2:6, 2:6] = 1.0  # find only the small region (16 of 356 anomalous pixels)
    fpr, pro = pro_curve(gt, amap)
    # At the threshold catching just that region: FPR 0, PRO = 1/3 (one region of three, fully).
    assert fpr[1] == 0.0 and pro[1] == pytest.approx(1 / 3)
    # Integrated over FPR in [0, 0.3]: 1/3 flat, then rises linearly to 1 at FPR=1 -> known area.
    expected = (0.3 * 1 / 3 + 0.5 * 0.3 * 0.3 * (2 / 3)) / 0.3
    assert pro_score(gt, amap) == pytest.approx(expected, abs=1e-9)


def test_pro_eight_connectivity_joins_diagonal_pixels():
    gt = np.zeros((1, 8, 8), dtype=bool)
    gt[0, 1, 1] = gt[0, 2, 2] = gt[0, 2, 3] = True
    amap = np.zeros((1, 8, 8))
    amap[0, 1, 1] = 1.0
    _, pro8 = pro_curve(gt, amap, connectivity=2)
    _, pro4 = pro_curve(gt, amap, connectivity=1)
    assert pro8[1] == pytest.approx(1 / 3)  # one 3-pixel region, one pixel found
    assert pro4[1] == pytest.approx(0.5)  # two regions: the single pixel fully found, the pair not at all


def test_pro_needs_regions():
    with pytest.raises(InputError):
        pro_score(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 4)))
    with pytest.raises(InputError):
        pro_score(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 5)))


def test_ucr_name_parsing():
    spec = parse_ucr_name("001_UCR_Anomaly_DISTORTED1sddb40_35000_52000_52620.txt")
    assert spec == UcrSpec("001_UCR_Anomaly_DISTORTED1sddb40_35000_52000_52620", 1, "DISTORTED1sddb40", 35000, 52000, 52620)
    assert parse_ucr_name("dir/x/246_UCR_Anomaly_tilt12755mtable_100211_270800_271070.txt.gz").number == 246
    assert parse_ucr_name("011_UCR_Anomaly_DISTORTEDECG1_10000_11800_12100.txt").length == 300
    with pytest.raises(InputError):
        parse_ucr_name("nab_file.csv")


def test_ucr_hit_rule_edges():
    spec = UcrSpec("s", 1, "n", 1000, 5000, 5050)  # L = 50 -> slack 100
    assert is_hit(spec, 4900) and is_hit(spec, 5150) and is_hit(spec, 5020)
    assert not is_hit(spec, 4899) and not is_hit(spec, 5151)
    long = UcrSpec("s", 2, "n", 1000, 5000, 5600)  # L = 600 -> slack 600
    assert is_hit(long, 4400) and not is_hit(long, 4399)
    assert not is_hit(long, 4400, slack=100)
    acc = ucr_accuracy([(spec, 5000), (long, 4400), (long, 100)])
    assert (acc.n_series, acc.hits, acc.hits_100) == (3, 2, 1)
    assert acc.accuracy == pytest.approx(2 / 3)
