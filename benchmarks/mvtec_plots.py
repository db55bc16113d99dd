"""Pictures of an MVTec run: ROC curves (image and pixel level) and a sheet of anomaly-map overlays.

The overlay colour scale is fixed per scorer over the whole test set (1st–99.9th percentile), never per image:
a per-image scale would paint every good image's noise as bright as a real defect.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.mvtec import MVTecReport
from models.metrics.classification import roc_curve


def _plt():
    """pyplot on the Agg backend, imported on first use (the report module must not need matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _thin(fpr: np.ndarray, tpr: np.ndarray, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """At most ~n points of a long (pixel-level) curve, always keeping both ends."""
    if fpr.size <= n:
        return fpr, tpr
    idx = np.unique(np.r_[np.linspace(0, fpr.size - 1, n).astype(int), fpr.size - 1])
    return fpr[idx], tpr[idx]


def plot_roc(report: MVTecReport, path: Path) -> Path:
    plt = _plt()
    from benchmarks.plots import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    masks = report.test.masks.numpy().astype(bool)
    for run in report.runs:
        fpr, tpr, _ = roc_curve(report.test.labels, run.scores)
        axes[0].plot(fpr, tpr, label=f"{run.name} ({run.metrics['image_auroc']:.3f})", lw=1.4)
        if "pixel_auroc" in run.metrics:
            pf, pt, _ = roc_curve(masks, run.maps)
            pf, pt = _thin(pf, pt)
            axes[1].plot(pf, pt, label=f"{run.name} ({run.metrics['pixel_auroc']:.3f})", lw=1.4)
    for ax, title in zip(axes, ("image-level ROC", "pixel-level ROC")):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(f"MVTec {report.category}: {title}")
        ax.legend(fontsize=7, loc="lower right")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
    return save_figure(fig, path, dpi=90)


def pick_examples(defect_types: list[str], per_type: int = 2) -> list[int]:
    """The first ``per_type`` images of every test type (good included), in folder order."""
    seen: dict[str, int] = {}
    picked = []
    for i, t in enumerate(defect_types):
        if seen.get(t, 0) < per_type:
            picked.append(i)
            seen[t] = seen.get(t, 0) + 1
    return picked


def plot_overlays(report: MVTecReport, path: Path, per_type: int = 2) -> Path:
    from models.transforms.image import denormalise_imagenet

    plt = _plt()
    from benchmarks.plots import save_figure

    test = report.test
    rows = pick_examples(test.defect_types, per_type)
    runs = report.runs
    cols = 1 + len(runs)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.55 * cols, 1.6 * len(rows)), squeeze=False)
    images = denormalise_imagenet(test.images[rows]).permute(0, 2, 3, 1).numpy()
    masks = test.masks[rows].numpy()
    scales = {r.name: (float(np.percentile(r.maps, 1)), float(np.percentile(r.maps, 99.9))) for r in runs}
    for ri, idx in enumerate(rows):
        ax = axes[ri, 0]
        ax.imshow(images[ri])
        if masks[ri].any():
            ax.contour(masks[ri], levels=[0.5], colors="lime", linewidths=0.8)
        ax.set_ylabel(f"{test.defect_types[idx]}\n{Path(test.files[idx]).name}", fontsize=6)
        for ci, run in enumerate(runs, start=1):
            ax = axes[ri, ci]
            ax.imshow(images[ri], alpha=1.0)
            lo, hi = scales[run.name]
            ax.imshow(run.maps[idx], cmap="jet", alpha=0.5, vmin=lo, vmax=hi)
            if masks[ri].any():
                ax.contour(masks[ri], levels=[0.5], colors="white", linewidths=0.6)
            ax.set_xlabel(f"{run.scores[idx]:.3g}", fontsize=6)
            if ri == 0:
                ax.set_title(run.name, fontsize=7)
    axes[0, 0].set_title("input + GT", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"MVTec {report.category}: anomaly maps (colour scale fixed per scorer; score under each)",
                 fontsize=8)
    return save_figure(fig, path, dpi=80)
