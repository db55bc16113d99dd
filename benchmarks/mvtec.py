"""MVTec AD benchmark: train on ``train/good``, score ``test/*``, report image AUROC, pixel AUROC and PRO.

Scorers compared in one run, on the same images and the same frozen EfficientNet-Lite0:

* ``scalowatch`` — the product's image detector (:mod:`models.image_detector`), exactly as ``scalowatch train``/
  ``score`` run it on an image folder: a clean-start feature-space diffusion channel fused with a patch-kNN
  channel. ``ablate=True`` adds its variants ``without_diffusion`` and ``diffusion_only`` from the same fit.
* ``patchcore`` — the representation baseline (:mod:`models.baselines.patchcore`).
* ``recon``, ``trend``, ``kl``, ``dynamic``, ``adversarial`` — the diffusion scorers, in *feature space*
  (``space="feature"``): the U-Net runs on standardised EfficientNet block maps (40×28×28 for 224-px images),
  as the dynamic-implicit-conditioning paper runs its diffusion in a VAE latent. Pixel-space diffusion on
  224×224×3 images does not fit two CPU cores.
* ``<name>+knn`` — each diffusion map fused with the PatchCore kNN map: 0.5·z(diffusion) + 0.5·z(kNN), each
  z-scored with statistics from *training* images only (diffusion: a fixed subset of training images;
  kNN: leave-one-image-out distances), image score = max of the fused map. The dynamic paper uses a KNN
  model of CNN features beside its reconstruction for the same reason: feature distances localise defects
  that a reconstruction only half removes. The weight 0.5 is fixed a priori, never tuned on the test set.

One U-Net is trained and shared by ``recon``, ``trend``, ``kl`` and ``dynamic`` (they differ only in how they
*score*); ``adversarial`` trains its own with the ADDM loss. Sharing is what keeps the whole bench within the
CPU budget; it is done by the scorers' own ``fit(train, reuse=shared)``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.errors import InputError
from models.metrics.classification import pro_score, roc_auc
from models.transforms.image import ImageConfig, MVTecSplit, load_mvtec_test, load_mvtec_train, mask_file
from models.types import ScoreBatch
from streamer.image_results import ImageResult, write_image_results

log = logging.getLogger(__name__)

PRODUCT = "scalowatch"
BASELINES = ("patchcore",)
DIFFUSION_SCORERS = ("recon", "trend", "kl", "dynamic", "adversarial")
ALL_SCORERS = (PRODUCT, *BASELINES, *DIFFUSION_SCORERS)
ABLATION_VARIANTS = ("without_diffusion", "diffusion_only")
FUSION_SUFFIX = "+knn"
SHARED_MODEL_SCORERS = ("recon", "trend", "kl", "dynamic")
#: Published bottle numbers the README compares with (I-AUROC / P-AUROC / PRO, %).
TARGETS = {"image_auroc": 1.00, "pixel_auroc": 0.991, "pro": 0.972}


RESEARCH_TRAIN_STEPS = 500
"""Training steps of the five papers' scorers' shared U-Net unless ``--train-steps`` says otherwise."""


@dataclass(frozen=True)
class MVTecBenchConfig:
    """Everything that decides the numbers; saved into ``mvtec.json``.

    ``train_steps`` / ``train_batch`` / ``unet_base``: the feature-space U-Net (the ``feature`` preset with a
    narrower base and attention only at the 7×7 level, sized for two CPU cores). ``space_layers``: the
    EfficientNet blocks the diffusion model runs on. ``fusion_weight``: weight of the diffusion map in the
    ``+knn`` variants. ``fusion_calibration_images``: training images scored to standardise diffusion maps.
    ``calibration_samples``: training images each diffusion scorer uses for its per-term statistics (the
    scorers' default of 256 would mean every training image through trend's 8 forward+backward passes).
    ``ablate``: also report the product's ``without_diffusion`` and ``diffusion_only`` variants.
    The product (``scalowatch``) takes ``image_size``, ``score_batch``, ``seed``, ``patchcore`` and ``train_steps``
    (when given) from here and everything else from :class:`models.image_detector.ImageDetectorConfig`'s defaults.
    ``train_steps`` None: each model's own default — the product's (what ``scalowatch train`` uses), and
    :data:`RESEARCH_TRAIN_STEPS` for the research scorers.
    """

    image_size: int = 224
    device: str = "auto"
    train_steps: int | None = None
    train_batch: int = 16
    unet_base: int = 16
    space_layers: tuple[int, ...] = (4,)
    fusion: bool = True
    fusion_weight: float = 0.5
    fusion_calibration_images: int = 20
    calibration_samples: int = 32
    score_batch: int = 16
    train_limit: int | None = None
    test_limit_per_type: int | None = None
    seed: int = 0
    patchcore: dict[str, Any] = field(default_factory=dict)
    ablate: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["space_layers"] = list(self.space_layers)
        d["product"] = self.detector_config().to_dict()
        return d

    def detector_config(self):
        from models.image_detector import ImageDetectorConfig

        steps = {} if self.train_steps is None else {"train_steps": self.train_steps}
        return ImageDetectorConfig(image_size=self.image_size, score_batch=self.score_batch, seed=self.seed,
                                   patchcore=dict(self.patchcore), **steps)


@dataclass
class ScorerRun:
    """One scorer's outputs on the test split, plus its metrics and costs."""

    name: str
    scores: np.ndarray
    maps: np.ndarray
    fit_seconds: float
    score_seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class MVTecReport:
    category: str
    data: Path
    config: MVTecBenchConfig
    n_train: int
    test: MVTecSplit
    runs: list[ScorerRun]

    def relative_paths(self) -> list[str]:
        """``<defect>/<file>`` of every test image, e.g. ``broken_large/000.png``."""
        return [f"{t}/{Path(f).name}" for t, f in zip(self.test.defect_types, self.test.files)]


def resolve_scorers(names: list[str] | None) -> list[str]:
    """CLI names → ordered list; ``all`` expands to every scorer; unknown names raise InputError.

    Default: the product's image detector first — what ``scalowatch train``/``score`` run on an image folder — so
    ``scores.csv`` and ``maps/`` are the product's, then the PatchCore-style baseline."""
    if not names:
        return [PRODUCT, "patchcore"]
    out: list[str] = []
    for name in names:
        for n in (ALL_SCORERS if name == "all" else [name]):
            if n not in ALL_SCORERS:
                raise InputError(f"unknown scorer {n!r}; choose from {', '.join(ALL_SCORERS)} or 'all'")
            if n not in out:
                out.append(n)
    return out


def evaluate(labels: np.ndarray, masks: np.ndarray, scores: np.ndarray, maps: np.ndarray) -> dict[str, float]:
    """Image AUROC, pixel AUROC and PRO (MVTec: regions, FPR ≤ 0.3, normalised)."""
    masks = np.asarray(masks, dtype=bool)
    out = {"image_auroc": roc_auc(labels, scores)}
    if masks.any() and (~masks).any():
        out["pixel_auroc"] = roc_auc(masks, maps)
        out["pro"] = pro_score(masks, maps, fpr_limit=0.3)
    return out


# ---------------------------------------------------------------------------------------------------- scorers
def _score_in_batches(scorer, images: torch.Tensor, batch: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    parts = []
    for i in tqdm(range(0, images.shape[0], batch), desc=desc, disable=not progress, leave=False):
        parts.append(scorer.score(images[i : i + batch]))
    return ScoreBatch(
        scores=np.concatenate([p.scores for p in parts]),
        maps=np.concatenate([p.maps for p in parts]).astype(np.float32),
    )


def diffusion_kwargs(config: MVTecBenchConfig, progress: bool) -> dict[str, Any]:
    from models.training import TrainConfig
    from models.unet import UNetConfig

    unet = UNetConfig.preset("feature", base_channels=config.unet_base, attention_levels=(2,))
    train = TrainConfig(steps=config.train_steps or RESEARCH_TRAIN_STEPS, batch_size=config.train_batch, lr=1e-3,
                        seed=config.seed)
    return {"unet": unet, "train": train, "space": "feature", "space_layers": config.space_layers,
            "device": config.device, "progress": progress, "batch_size": config.score_batch,
            "calibration_samples": config.calibration_samples}


def _fit_diffusion(names: list[str], train: torch.Tensor, config: MVTecBenchConfig, progress: bool):
    """Fit the requested diffusion scorers (sharing one U-Net where allowed) → {name: (scorer, seconds)}."""
    from models.scorers import create_scorer

    fitted: dict[str, tuple[Any, float]] = {}
    shared = None
    for name in names:
        t0 = time.perf_counter()
        scorer = create_scorer(name, **diffusion_kwargs(config, progress))
        if name in SHARED_MODEL_SCORERS and shared is not None:
            log.info("%s reuses the U-Net trained for %s", name, shared.name)
            scorer.fit(train, reuse=shared)
        else:
            scorer.fit(train)
            if name in SHARED_MODEL_SCORERS:
                shared = scorer
        fitted[name] = (scorer, time.perf_counter() - t0)
    return fitted


def run_mvtec(data: str | Path, scorers: list[str], config: MVTecBenchConfig | None = None,
              progress: bool = True) -> MVTecReport:
    """Fit every scorer on ``train/good`` and score ``test/*``; metrics for each (and each ``+knn`` fusion)."""
    config = config or MVTecBenchConfig()
    data = Path(data)
    torch.manual_seed(config.seed)
    img_cfg = ImageConfig(size=config.image_size)
    log.info("loading %s at %d px", data, config.image_size)
    train = load_mvtec_train(data, img_cfg, limit=config.train_limit)
    test = load_mvtec_test(data, img_cfg, limit_per_type=config.test_limit_per_type)
    if len(set(test.labels.tolist())) < 2:
        raise InputError(f"{data}/test needs both good and defective images to compute AUROC")
    masks = test.masks.numpy()
    runs: list[ScorerRun] = []

    knn = _run_product(train, test.images, config, progress, runs) if PRODUCT in scorers else None
    want_knn = "patchcore" in scorers or (config.fusion and any(s in DIFFUSION_SCORERS for s in scorers))
    patchcore = None
    if want_knn:
        knn = knn or _run_knn(train, test.images, config, progress)
        patchcore = knn.model
        if "patchcore" in scorers:
            details: dict[str, Any] = {"config": patchcore.config.to_dict(), "bank_size": int(patchcore.bank.shape[0]),
                                       "train_map_mean_std": list(patchcore.map_stats)}
            if knn.from_product:
                details["fit"] = "the product's kNN channel (same configuration and seed), scored in the same pass"
            runs.append(ScorerRun("patchcore", knn.test.scores, knn.test.maps, knn.fit_seconds, knn.score_seconds,
                                  details=details))
        knn_z = patchcore.standardise(knn.test.maps)

    diff_names = [s for s in scorers if s in DIFFUSION_SCORERS]
    if diff_names:
        fitted = _fit_diffusion(diff_names, train, config, progress)
        calib_idx = np.linspace(0, train.shape[0] - 1, min(config.fusion_calibration_images, train.shape[0]))
        calib = train[np.unique(calib_idx.round().astype(int))]
        for name in diff_names:
            scorer, fit_s = fitted[name]
            t0 = time.perf_counter()
            sb = _score_in_batches(scorer, test.images, config.score_batch, name, progress)
            details = {"params": scorer.params.to_dict(), "unet": scorer.unet_config.to_dict(),
                       "train": scorer.train_config.to_dict(),
                       "train_seconds": scorer.train_seconds,
                       "final_loss": float(np.mean(scorer.train_losses[-20:])) if scorer.train_losses else None,
                       "shares_unet_with": ("recon/trend/kl/dynamic" if name in SHARED_MODEL_SCORERS else None)}
            runs.append(ScorerRun(name, sb.scores, sb.maps, fit_s, time.perf_counter() - t0, details=details))
            if config.fusion and patchcore is not None:
                t0 = time.perf_counter()
                ref = _score_in_batches(scorer, calib, config.score_batch, f"{name} (train stats)", progress).maps
                mean, std = float(ref.mean()), float(max(ref.std(), 1e-8))
                w = config.fusion_weight
                fused = (w * (sb.maps - mean) / std + (1 - w) * knn_z).astype(np.float32)
                runs.append(ScorerRun(
                    name + FUSION_SUFFIX, fused.reshape(fused.shape[0], -1).max(axis=1).astype(np.float64), fused,
                    fit_s, time.perf_counter() - t0 + runs[-1].score_seconds,
                    details={"fusion": f"{w}*z({name}) + {1 - w}*z(patchcore)", "diffusion_train_map_mean_std":
                             [mean, std], "knn_train_map_mean_std": list(patchcore.map_stats),
                             "image_score": "max of fused map"}))

    for run in runs:
        run.metrics = evaluate(test.labels, masks, run.scores, run.maps)
        log.info("%s: %s", run.name, {k: round(v, 4) for k, v in run.metrics.items()})
    return MVTecReport(category=data.name, data=data, config=config, n_train=int(train.shape[0]), test=test,
                       runs=runs)


@dataclass
class KnnRun:
    """The PatchCore-style kNN model with its test-image output: the ``patchcore`` row and the ``+knn`` fusions."""

    model: Any  # models.baselines.patchcore.PatchCore
    fit_seconds: float
    test: ScoreBatch
    score_seconds: float
    from_product: bool


def _run_knn(train: torch.Tensor, test_images: torch.Tensor, config: MVTecBenchConfig, progress: bool) -> KnnRun:
    """A kNN model of its own, for runs without the product (same configuration and seed as the product's)."""
    from models.baselines.patchcore import PatchCore

    t0 = time.perf_counter()
    model = PatchCore(device=config.device, progress=progress, **{"seed": config.seed, **config.patchcore}).fit(train)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    test = _score_in_batches(model, test_images, config.score_batch, "patchcore", progress)
    return KnnRun(model, fit_s, test, time.perf_counter() - t0, from_product=False)


def _run_product(train: torch.Tensor, test_images: torch.Tensor, config: MVTecBenchConfig, progress: bool,
                 runs: list[ScorerRun]) -> KnnRun:
    """Fit the product's image detector, score the test images: the ``scalowatch`` row (and the ablation rows).

    Returns its kNN channel with that channel's own test output: the ``patchcore`` baseline row and the ``+knn``
    fusions reuse both (one fit, one pass over the test images)."""
    from models.image_detector import ImageDetector

    detector = ImageDetector(config.detector_config(), device=config.device, progress=progress).fit(train)
    fit_s = sum(detector.fit_seconds.values())
    t0 = time.perf_counter()
    channels = detector.channel_maps(test_images)
    channel_s = time.perf_counter() - t0
    members = detector.diffusion
    details = {"config": detector.config.to_dict(), "fit_seconds_by_channel": dict(detector.fit_seconds),
               "train_seconds": [m.train_seconds for m in members],
               "final_loss": [float(np.mean(m.train_losses[-20:])) if m.train_losses else None for m in members],
               "diffusion_train_map_mean_std": list(detector.diffusion_stats),
               "knn_train_map_mean_std": list(detector.knn.map_stats)}
    for variant in ("product", *(ABLATION_VARIANTS if config.ablate else ())):
        sb = detector.fuse(channels, variant)
        name = PRODUCT if variant == "product" else variant
        runs.append(ScorerRun(name, sb.scores, sb.maps, fit_s, channel_s, details={**details, "variant": variant}))
    # PatchCore on its own would run the EfficientNet pass the two channels share.
    return KnnRun(detector.knn, detector.fit_seconds["knn"], channels.knn_raw,
                  channels.seconds["knn"] + channels.seconds.get("backbone", 0.0), from_product=True)


# ---------------------------------------------------------------------------------------------------- outputs
def write_scores_and_maps(report: MVTecReport, out: Path) -> dict[str, Path]:
    """``scores.csv`` + ``maps/`` for the first scorer, ``scorers/<name>/`` for all, ``image_results.csv``.

    ``scores.csv`` columns: ``path,score`` (the first scorer), then one column per scorer by name.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rel = report.relative_paths()
    primary = report.runs[0]
    names = [r.name for r in report.runs]
    lines = [",".join(["path", "score", *names])]
    for i, p in enumerate(rel):
        lines.append(",".join([p, f"{primary.scores[i]:.6g}", *(f"{r.scores[i]:.6g}" for r in report.runs)]))
    (out / "scores.csv").write_text("\n".join(lines) + "\n")
    written = {"scores": out / "scores.csv"}
    for run in report.runs:
        targets = [out / "scorers" / _safe(run.name)]
        if run is primary:
            targets.append(out)
        for base in targets:
            for i, p in enumerate(rel):
                dest = base / "maps" / Path(p).with_suffix(".npy")
                dest.parent.mkdir(parents=True, exist_ok=True)
                np.save(dest, run.maps[i].astype(np.float32))
            if base != out:
                body = ["path,score"] + [f"{p},{run.scores[i]:.6g}" for i, p in enumerate(rel)]
                (base / "scores.csv").write_text("\n".join(body) + "\n")
    # The dashboard's Images page opens this (the product's scores and maps).
    results = []
    for i, p in enumerate(rel):
        defect = report.test.defect_types[i]
        mask = mask_file(report.data, defect, p)
        results.append(ImageResult(report.category, defect, Path(report.test.files[i]), float(primary.scores[i]),
                                   out / "maps" / Path(p).with_suffix(".npy"),
                                   mask if defect != "good" and mask.exists() else None))
    written["image_results"] = write_image_results(out, results)
    return written


def _safe(name: str) -> str:
    return name.replace("+", "_plus_")


def summary_table(report: MVTecReport) -> dict[str, dict[str, float]]:
    return {r.name: {k: round(float(v), 4) for k, v in r.metrics.items()} for r in report.runs}


def report_payload(report: MVTecReport, run_info: dict[str, Any], plots: list[Path]) -> dict[str, Any]:
    test = report.test
    counts: dict[str, int] = {}
    for t in test.defect_types:
        counts[t] = counts.get(t, 0) + 1
    return {
        "benchmark": "mvtec",
        "category": report.category,
        "data": str(report.data.resolve()),
        "run": run_info,
        "protocol": {
            "training": f"{report.n_train} images of train/good (normal only)",
            "test": counts,
            "image_size": report.config.image_size,
            "image_auroc": "ROC AUC of image scores (good = 0, any defect = 1)",
            "pixel_auroc": "ROC AUC over all test pixels at image_size against the resized ground-truth masks",
            "pro": "MVTec per-region overlap: mean over connected GT regions (8-connectivity) of the covered "
                   "fraction, integrated over FPR in [0, 0.3] and divided by 0.3",
            "fusion": "<name>+knn = w*z(diffusion map) + (1-w)*z(patchcore map), z from training images only",
            "diffusion_space": f"EfficientNet-Lite0 blocks {list(report.config.space_layers)}, standardised",
        },
        "config": report.config.to_dict(),
        "targets": TARGETS,
        "metrics": summary_table(report),
        "scorers": {r.name: {"metrics": r.metrics, "fit_seconds": round(r.fit_seconds, 2),
                             "score_seconds": round(r.score_seconds, 2), **r.details} for r in report.runs},
        "plots": [str(p) for p in plots],
    }
