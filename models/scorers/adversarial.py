"""``adversarial``: recon scoring on a model trained with the ADDM loss (Kim et al. 2023, arXiv 2312.04382).

ADDM is a *training* variant: a time-conditioned discriminator judges the denoiser's x_{t−1} against the true
posterior sample, weight 0.05 on the generator side (``models.training``). The paper's claim is that the
adversarially trained denoiser reconstructs normal detail better with fewer sampling steps, which is exactly
what the one-step / short-DDIM recon score needs. So this scorer is ``recon`` with
``TrainConfig.adversarial_weight = 0.05`` by default; every other scorer takes ``adversarial=True`` (or an
explicit ``adversarial_weight`` in its TrainConfig) for the same training.

An explicit TrainConfig with ``adversarial_weight = 0`` is raised to 0.05: an "adversarial" scorer without the
adversarial term would be ``recon`` under another name.
"""
from __future__ import annotations

from dataclasses import replace

from models.scorers.base import register
from models.scorers.diffusion import ADDM_WEIGHT
from models.scorers.recon import ReconScorer
from models.training import TrainConfig


@register("adversarial")
class AdversarialScorer(ReconScorer):
    default_train = TrainConfig(steps=1500, batch_size=64, lr=1e-3, adversarial_weight=ADDM_WEIGHT)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.train_config.adversarial_weight <= 0:
            self.train_config = replace(self.train_config, adversarial_weight=ADDM_WEIGHT)
