"""Device resolution and the autocast policy."""
from __future__ import annotations

import pytest
import torch

from models.device import autocast, autocast_dtype, cpu_supports_bf16, resolve_device


def test_resolve_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_unknown_device_rejected():
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


def test_cpu_always_runs_fp32_whatever_the_cpu_supports():
    """Issue 11: a score must not depend on the CPU model, so the CPU never autocasts to bf16."""
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with autocast("cpu"):
        out = a @ b
    assert autocast_dtype("cpu") is None
    assert out.dtype == torch.float32
    cpu_supports_bf16()  # still answers (the speed benchmarks describe the machine with it)
    with autocast("cpu", enabled=False):
        assert (a @ b).dtype == torch.float32


def test_bf16_detection_agrees_with_cpuinfo():
    from pathlib import Path

    info = Path("/proc/cpuinfo")
    if not info.is_file():
        pytest.skip("no /proc/cpuinfo")
    text = info.read_text()
    if "avx512_bf16" in text or "amx_bf16" in text:
        assert cpu_supports_bf16()
