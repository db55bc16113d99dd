"""Checkpoints: weights in ``weights.safetensors``, hyperparameters in ``config.json`` beside them.

safetensors rather than pickle: loading a checkpoint never executes code, and the file can be memory-mapped.
A checkpoint holds several named modules (e.g. ``{"unet": ..., "ema": ..., "discriminator": ...}``); they are
stored flat as ``"<group>/<tensor name>"`` keys. The JSON config is the contract: ``load_checkpoint`` with an
``expected_config`` refuses weights written for a different model and says which keys differ, instead of
failing later with an opaque shape error (or, worse, silently scoring with the wrong model).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from models.errors import CheckpointMismatchError

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
_SEP = "/"


def _flatten(tensors: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    flat: dict[str, torch.Tensor] = {}
    for group, state in tensors.items():
        if _SEP in group:
            raise ValueError(f"group name {group!r} must not contain {_SEP!r}")
        for name, tensor in state.items():
            if not torch.is_tensor(tensor):
                raise TypeError(f"{group}/{name} is a {type(tensor).__name__}, not a tensor")
            # safetensors needs contiguous, non-shared storage on the CPU
            flat[f"{group}{_SEP}{name}"] = tensor.detach().to("cpu").contiguous().clone()
    return flat


def _unflatten(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        group, _, name = key.partition(_SEP)
        out.setdefault(group, {})[name] = tensor
    return out


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def save_checkpoint(
    directory: str | Path, tensors: dict[str, dict[str, torch.Tensor]], config: dict[str, Any]
) -> Path:
    """Write ``weights.safetensors`` and ``config.json`` into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        config_text = json.dumps(config, indent=2, sort_keys=True)
    except TypeError as exc:
        raise TypeError(f"checkpoint config must be JSON-serialisable: {exc}") from exc
    flat = _flatten(tensors)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{WEIGHTS_FILE}.")
    os.close(fd)
    save_file(flat, tmp, metadata={"groups": ",".join(sorted(tensors))})
    os.replace(tmp, directory / WEIGHTS_FILE)
    _atomic_write_text(directory / CONFIG_FILE, config_text + "\n")
    log.info("saved checkpoint to %s (%d tensors)", directory, len(flat))
    return directory


def config_differences(expected: Any, actual: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON-like configs differ (tuples and lists compare equal)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        diffs: list[str] = []
        for key in sorted(set(expected) | set(actual), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in expected or key not in actual:
                diffs.append(path)
            else:
                diffs.extend(config_differences(expected[key], actual[key], path))
        return diffs
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        same = len(expected) == len(actual) and not any(
            config_differences(a, b, prefix) for a, b in zip(expected, actual)
        )
        return [] if same else [prefix or "<root>"]
    return [] if expected == actual else [prefix or "<root>"]


def read_config(directory: str | Path) -> dict[str, Any]:
    """Only the ``config.json`` of a checkpoint (cheap: no weights are read)."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint config at {path} (expected {CONFIG_FILE} beside {WEIGHTS_FILE})")
    return json.loads(path.read_text(encoding="utf-8"))


def load_checkpoint(
    directory: str | Path, expected_config: dict[str, Any] | None = None, device: str | torch.device = "cpu"
) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """Read a checkpoint; with ``expected_config`` raise :class:`CheckpointMismatchError` if it differs."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint {directory} has no {WEIGHTS_FILE}")
    config = read_config(directory)
    if expected_config is not None:
        # round-trip through JSON so tuples/lists and int/float keys compare the way they were stored
        expected = json.loads(json.dumps(expected_config))
        diffs = config_differences(expected, config)
        if diffs:
            raise CheckpointMismatchError(
                f"checkpoint at {directory} was written for a different configuration; differing keys: "
                + ", ".join(diffs)
            )
    flat = load_file(str(weights), device=str(device))
    return config, _unflatten(flat)


def version_of(directory: str | Path) -> str:
    """12 hex digits of a SHA-256 over a saved model's files: tags every result it scores, so a stored score says
    which model made it (a retrained model gets another version)."""
    directory = Path(directory)
    h = hashlib.sha256()
    for f in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(directory)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]
