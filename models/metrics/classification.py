"""Threshold-free detection metrics: ROC curve / AUROC (image and pixel level) and MVTec's PRO score.

Written in numpy so the same code serves image scores (hundreds of values) and pixel maps (millions):
every metric is one sort plus cumulative sums, exact at every distinct threshold (ties switch on together).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from models.errors import InputError


def _flat_pair(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise InputError(f"labels and scores differ in size: {y.size} vs {s.size}")
    if s.size == 0:
        raise InputError("no samples to evaluate")
    if not np.all(np.isfinite(s)):
        raise InputError("scores contain NaN or inf")
    if y.dtype != bool and not np.all(np.isin(y, (0, 1))):
        raise InputError("labels must be 0/1 (or boolean)")
    yb = y.astype(bool)
    if yb.all() or not yb.any():
        raise InputError("ROC needs both positive and negative samples")
    return yb, s


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): one point per distinct score (descending) plus the (0, 0) start.

    ``thresholds[k]`` is the lowest score counted positive at point k; ``thresholds[0] = +inf``.
    """
    y, s = _flat_pair(labels, scores)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tps = np.cumsum(y_sorted)
    fps = np.cumsum(~y_sorted)
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tpr = np.r_[0.0, tps[last] / tps[-1]]
    fpr = np.r_[0.0, fps[last] / fps[-1]]
    thresholds = np.r_[np.inf, s_sorted[last]]
    return fpr, tpr, thresholds


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (= probability a random positive outscores a random negative, ties 1/2)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def pro_curve(
    masks: np.ndarray, anomaly_maps: np.ndarray, connectivity: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, pro) over all thresholds, as MVTec AD defines PRO (Bergmann et al., 2019/2021).

    PRO at a threshold is the mean, over every connected ground-truth region of every image, of the
    fraction of that region's pixels above the threshold; FPR is over all normal pixels. Regions are
    found with ``scipy.ndimage.label``; ``connectivity=2`` is 8-connectivity (MVTec's evaluation code).
    """
    gt = np.asarray(masks)
    amap = np.asarray(anomaly_maps, dtype=np.float64)
    if gt.ndim == 2:
        gt, amap = gt[None], amap[None]
    if gt.shape != amap.shape or gt.ndim != 3:
        raise InputError(f"masks and anomaly maps must both be (N, H, W); got {gt.shape} and {amap.shape}")
    if not np.all(np.isfinite(amap)):
        raise InputError("anomaly maps contain NaN or inf")
    gt = gt.astype(bool)
    structure = ndimage.generate_binary_structure(2, connectivity)
    region = np.zeros(gt.shape, dtype=np.int64)  # 0 = normal pixel, k > 0 = region k (global numbering)
    n_regions = 0
    for i in range(gt.shape[0]):
        lab, k = ndimage.label(gt[i], structure=structure)
        region[i] = np.where(lab > 0, lab + n_regions, 0)
        n_regions += k
    n_normal = int((~gt).sum())
    if n_regions == 0 or n_normal == 0:
        raise InputError("PRO needs at least one anomalous region and one normal pixel")
    region_size = np.bincount(region.ravel(), minlength=n_regions + 1).astype(np.float64)

    flat_region = region.ravel()
    flat_score = amap.ravel()
    order = np.argsort(-flat_score, kind="stable")
    r_sorted = flat_region[order]
    s_sorted = flat_score[order]
    # Each anomalous pixel adds 1/|region| / n_regions to PRO; each normal pixel 1/n_normal to FPR.
    pro_step = np.where(r_sorted > 0, 1.0 / region_size[r_sorted] / n_regions, 0.0)
    fpr_step = np.where(r_sorted == 0, 1.0 / n_normal, 0.0)
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    pro = np.r_[0.0, np.cumsum(pro_step)[last]]
    fpr = np.r_[0.0, np.cumsum(fpr_step)[last]]
    return fpr, pro


def pro_score(
    masks: np.ndarray, anomaly_maps: np.ndarray, fpr_limit: float = 0.3, connectivity: int = 2
) -> float:
    """Area under the PRO curve up to ``fpr_limit`` divided by ``fpr_limit`` (1.0 = perfect)."""
    if not 0.0 < fpr_limit <= 1.0:
        raise InputError("fpr_limit must be in (0, 1]")
    fpr, pro = pro_curve(masks, anomaly_maps, connectivity)
    return float(_partial_area(fpr, pro, fpr_limit) / fpr_limit)


def _partial_area(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area of a monotone curve from x=0 to x_max, interpolating the point at x_max."""
    inside = x <= x_max
    xs, ys = x[inside], y[inside]
    if xs[-1] < x_max and inside.sum() < x.size:
        j = int(np.argmax(~inside))  # first point beyond the limit
        x0, x1, y0, y1 = x[j - 1], x[j], y[j - 1], y[j]
        y_lim = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        xs, ys = np.r_[xs, x_max], np.r_[ys, y_lim]
    return float(np.trapezoid(ys, xs))
