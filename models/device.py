"""Where the model runs and in which precision.

One place decides "cpu or cuda" and "bf16 or fp32", so training, scoring and the benchmarks agree. On the CPU
everything runs in fp32: bf16 autocast was faster on CPUs with native bf16 dot products, but it made a window's
score depend on the CPU model (a fresh clone on another CPU trained and scored different models) and on the
micro-batch the window landed in. CUDA keeps AMP (bf16, else fp16). ``cpu_supports_bf16`` stays for the speed
benchmarks' machine description.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Iterator

import torch

log = logging.getLogger(__name__)

_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 matmul (AVX512-BF16 or AMX-BF16)."""
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # pragma: no cover - very old torch
        capability = ""
    if "AMX" in capability.upper():
        return True
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        try:
            flags = cpuinfo.read_text(errors="ignore")
        except OSError:  # pragma: no cover
            return False
        return any(flag in flags for flag in _BF16_CPU_FLAGS)
    return False


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn "auto" / "cpu" / "cuda" / "cuda:1" into a device, failing clearly if CUDA is asked for but absent."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {spec!r} requested but no CUDA GPU is available (torch {torch.__version__}, "
                f"cuda build: {torch.version.cuda}); use --device cpu or auto"
            )
        device = torch.device(spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return device
    if spec == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {spec!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The reduced precision autocast would use on ``device``, or None if it would be a no-op."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None  # CPU: always fp32, so a score never depends on the CPU model or on the batch (see module doc)


@contextlib.contextmanager
def autocast(device: torch.device | str, enabled: bool = True) -> Iterator[None]:
    """AMP (bf16, else fp16) on CUDA; nothing on a CPU, where everything stays fp32 (module doc: scores must not
    depend on the CPU model or the micro-batch)."""
    device = torch.device(device)
    dtype = autocast_dtype(device) if enabled else None
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
