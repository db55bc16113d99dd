"""Plugin module the bench runner imports (``benchmarks.detectors.PLUGIN_MODULES``): it registers the diffusion
series detectors ``diffusion-recon``, ``diffusion-kl``, ``diffusion-trend``, ``diffusion-dynamic`` and
``diffusion-adversarial`` (see :mod:`models.series_detector`)."""
from __future__ import annotations

import models.series_detector  # noqa: F401  (registers on import)
