"""Shared pytest configuration: markers, data locations, GPU skipping."""
from __future__ import annotations

import os
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: the tests run beside server processes (broker, InfluxDB,
# nginx, Streamlit) on two cores, where spinning workers slow every forward pass several-fold. Must be set
# before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none present")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # the marker, not a parametrize id containing "gpu"
            item.add_marker(skip_gpu)


@pytest.fixture
def torch_threads(request):
    """PyTorch's intra-op threads for one test, handed back afterwards: 1 unless the test parametrizes it
    (``@pytest.mark.parametrize("torch_threads", [1, 2], indirect=True)``: batch-independence must hold with each)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(getattr(request, "param", 1))
    yield torch.get_num_threads()
    torch.set_num_threads(before)


@pytest.fixture
def one_torch_thread(torch_threads):
    """Tiny models and tensors gain nothing from intra-op threads, and on a shared 2-core box the spinning hurts;
    test modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


# --- Real servers for integration tests (tests/servers.py). Missing binaries: skip locally, fail in CI. ---
def _start_server(factory):
    from servers import ServerMissing

    try:
        server = factory()
    except ServerMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(f"integration server missing in CI: {exc}")
        pytest.skip(f"integration server missing: {exc}")
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


@pytest.fixture(scope="session")
def kafka_broker():
    """Bootstrap string ("127.0.0.1:PORT") of a Tansu Kafka-protocol broker (in-memory) for the whole session."""
    from servers import TansuBroker

    broker = _start_server(TansuBroker)
    try:
        yield broker.bootstrap
    finally:
        broker.close()


@pytest.fixture(scope="session")
def influx_server():
    """InfluxServer (tests/servers.py): `.url` (nginx front, 2.x write API), `.query_url`, `.database`,
    `.stop()`/`.start()` for outages. Tests that stop it must start it again (try/finally)."""
    from servers import InfluxServer

    server = _start_server(InfluxServer)
    try:
        yield server
    finally:
        server.close()
