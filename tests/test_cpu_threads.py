"""MonitorSettings.cpu_threads: several workers on one machine must be able to keep their numeric thread pools
(PyTorch's and numpy's BLAS) to their share of the cores. Run in a child process: the limit is process-wide."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import json, numpy, torch
from threadpoolctl import threadpool_info
from scalowatch.cli_stream import limit_cpu_threads
numpy.ones(4) @ numpy.ones(4)  # load numpy's BLAS
limit_cpu_threads(1)
print(json.dumps({"torch": torch.get_num_threads(),
                  "pools": sorted({p["internal_api"]: p["num_threads"] for p in threadpool_info()}.items())}))
"""


def test_limit_cpu_threads_limits_every_numeric_pool():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120,
                         check=True)
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["torch"] == 1
    assert probe["pools"], "threadpoolctl found no BLAS/OpenMP pool to limit"
    assert all(n == 1 for _, n in probe["pools"]), probe["pools"]


def test_cpu_threads_defaults_to_the_libraries_choice():
    from streamer.config import MonitorSettings

    assert MonitorSettings().cpu_threads == 0
    assert MonitorSettings(cpu_threads=1).cpu_threads == 1


def test_the_monitor_caps_pytorchs_threads_where_scores_stop_depending_on_micro_batches(torch_threads, tmp_path):
    """With more than two intra-op threads the model's kernels split a batch by its size: a window scored in a batch
    of 80 moved by 6e-5 in z against the same window alone (four threads). Every processor (monitor, demo, bench
    --via monitor) caps them."""
    import torch

    from streamer.assemble import build_processor, limit_model_threads
    from streamer.config import MonitorSettings

    torch.set_num_threads(4)
    build_processor(MonitorSettings(model_dir=tmp_path / "models"), background=False)
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    limit_model_threads()  # fewer is left alone
    assert torch.get_num_threads() == 1
