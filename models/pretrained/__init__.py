"""Scalogram U-Nets pretrained on many normal windows, shipped with the package: the start that per-stream fitting
fine-tunes (``DetectorConfig.init_model``).

Why: a stream's detector trains its U-Net on its own training part for a few dozen steps (seconds on a CPU), which
leaves it barely trained; six times the steps found more anomalies with the diffusion channel alone
(``benchmarks/README.md``) but costs six times the fitting time of every stream. A model pretrained once on the
training parts of many recordings and on synthetic signals buys that training once. No checkpoint ships today: the
first one (plain denoising on 73,762 windows) lowered the fine-tuning loss and found *fewer* anomalies with the
diffusion channel alone, so it was measured, recorded in ``benchmarks/README.md`` and left out.

Each checkpoint is ``<name>.pt`` (the U-Net's weights) with ``<name>.json``: the U-Net configuration, the
scalogram settings it was trained on, and how it was made (command, commit, data, steps, final loss).
``benchmarks/pretrain_series.py`` reproduces it. Nothing is downloaded: only files in this folder load.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FOLDER = Path(__file__).resolve().parent


@dataclass(frozen=True)
class PretrainedModel:
    name: str
    unet: dict[str, Any]
    """The U-Net configuration (``UNetConfig.to_dict()``) the weights belong to."""
    scalogram: dict[str, Any]
    """``scalogram_normalise`` and ``n_scales`` of the windows it was trained on."""
    state: dict[str, torch.Tensor]
    info: dict[str, Any]


def available(folder: Path | None = None) -> list[str]:
    folder = folder or FOLDER
    return sorted(p.stem for p in folder.glob("*.pt") if p.with_suffix(".json").is_file())


def load_pretrained(name: str, folder: Path | None = None) -> PretrainedModel:
    folder = folder or FOLDER
    weights, meta = folder / f"{name}.pt", folder / f"{name}.json"
    if not weights.is_file() or not meta.is_file():
        raise ValueError(f"no pretrained model {name!r} in {folder}; available: {available(folder) or 'none'}")
    about = json.loads(meta.read_text())
    state = torch.load(weights, map_location="cpu", weights_only=True)
    return PretrainedModel(name, about["unet"], about["scalogram"], state, about.get("info", {}))


def save_pretrained(name: str, model: torch.nn.Module, unet: dict[str, Any], scalogram: dict[str, Any],
                    info: dict[str, Any], folder: Path | None = None) -> Path:
    folder = folder or FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, folder / f"{name}.pt")
    (folder / f"{name}.json").write_text(json.dumps({"unet": unet, "scalogram": scalogram, "info": info},
                                                    indent=2, sort_keys=True, default=str))
    return folder / f"{name}.pt"


__all__ = ["FOLDER", "PretrainedModel", "available", "load_pretrained", "save_pretrained"]
