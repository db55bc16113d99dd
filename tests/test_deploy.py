"""The deployment files agree with the code: settings names, required settings, hosts/ports, Dockerfile paths."""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from streamer.config import CONFIG_FILE_ENV, Settings, env_names

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
_VAR = re.compile(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?(?::?\?(?P<required>[^}]*))?\}")
DEPLOYER_SECRET = "a-token-the-deployer-sets"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _env(service: dict) -> dict[str, str]:
    """A service's environment with ${VAR:-default} replaced by its default (as compose would with VAR unset) and
    ${VAR:?message} — a variable compose refuses to start without — by a value the deployer would set."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: _VAR.sub(lambda m: DEPLOYER_SECRET if m.group("required") is not None else m.group("default") or "",
                        str(v)) for k, v in env.items()}


def _ports(service: dict) -> list[str]:
    """Published ports as host:container, with the bind address variable at its default."""
    return [_VAR.sub(lambda m: m.group("default") or "", str(p)) for p in service.get("ports", [])]


def _settings_from(env: dict[str, str], monkeypatch) -> Settings:
    import os

    for name in list(os.environ):
        if name.upper().startswith("SCALOWATCH_"):
            monkeypatch.delenv(name)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def _must_be_deployed(model: type[BaseModel] = Settings, prefix: str = "SCALOWATCH_") -> set[str]:
    """Settings a deployment must set: no default, a default that points at localhost, or an empty secret."""
    names: set[str] = set()
    for name, info in model.model_fields.items():
        annotation, env = info.annotation, f"{prefix}{name.upper()}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _must_be_deployed(annotation, env + "__")
            continue
        default = info.get_default(call_default_factory=True)
        if info.is_required() or "localhost" in str(default) or (
                isinstance(default, SecretStr) and not default.get_secret_value()):
            names.add(env)
    return names


def test_services_present(compose):
    assert {"kafka", "kafka-init", "influxdb", "monitor", "dashboard", "replay"} <= set(compose["services"])
    assert compose["services"]["monitor"]["deploy"]["replicas"] == 3
    assert compose["services"]["replay"]["profiles"] == ["replay"]
    assert "container_name" not in compose["services"]["monitor"]  # would forbid replicas
    import base64

    cluster_id = _env(compose["services"]["kafka"])["CLUSTER_ID"]  # KRaft wants a 16-byte base64url UUID
    assert len(cluster_id) == 22 and len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_depends_on_existing_services(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}) or {}:
            assert dependency in services, f"{name} depends on unknown service {dependency}"


def test_every_scalowatch_env_name_is_a_setting(compose):
    known = env_names() | {CONFIG_FILE_ENV}
    for name, service in compose["services"].items():
        unknown = {k for k in _env(service) if k.startswith("SCALOWATCH_")} - known
        assert not unknown, f"{name}: not settings in streamer/config.py: {sorted(unknown)}"


def test_monitor_gets_every_setting_without_a_safe_default(compose, monkeypatch):
    required = _must_be_deployed()
    assert "SCALOWATCH_KAFKA__BOOTSTRAP_SERVERS" in required and "SCALOWATCH_INFLUX__TOKEN" in required
    for name in ("monitor", "dashboard", "replay"):
        env = _env(compose["services"][name])
        missing = required - set(env)
        assert not missing, f"{name} lacks {sorted(missing)}"
        settings = _settings_from(env, monkeypatch)  # and the values validate
        assert settings.store.kind == "influx"
        assert settings.influx.token.get_secret_value()


def test_the_monitor_is_given_time_to_score_write_and_commit_when_stopped(compose, monkeypatch):
    """Docker's default stop grace (10 s) kills a worker before its shutdown's scoring limit (20 s) is over, and so
    before its last write, checkpoint and commit."""
    service = compose["services"]["monitor"]
    grace = float(str(service["stop_grace_period"]).removesuffix("s"))
    settings = _settings_from(_env(service), monkeypatch)
    assert grace >= settings.monitor.shutdown_scoring_s + 15


def test_the_monitor_holds_no_more_streams_than_its_memory_limit_fits(compose, monkeypatch):
    """With the default cap (10,000 live streams, ~2.3 MB each with per-stream models) a 4 GiB worker was killed
    for memory after about 1,400 busy streams, and again after every restart."""
    service = compose["services"]["monitor"]
    settings = _settings_from(_env(service), monkeypatch)
    limit = str(service["deploy"]["resources"]["limits"]["memory"]).lower()
    gib = float(limit.removesuffix("g")) if limit.endswith("g") else float(limit.removesuffix("m")) / 1024
    from streamer.memory import streams_that_fit

    cap = settings.monitor.max_streams
    assert cap is None or cap <= streams_that_fit(int(gib * 2**30), settings.monitor.model_mode == "per_stream")


def test_hosts_and_ports_agree_between_services(compose, monkeypatch):
    services = compose["services"]
    settings = _settings_from(_env(services["monitor"]), monkeypatch)

    kafka_env = _env(services["kafka"])
    advertised = {urlparse(item).netloc for item in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for server in settings.kafka.bootstrap_servers.split(","):
        assert server in advertised, f"{server} is not an advertised Kafka listener {advertised}"
        assert server.split(":")[0] in services
    listener_ports = {urlparse(item).port for item in kafka_env["KAFKA_LISTENERS"].split(",")}
    for address in advertised:
        assert int(address.rsplit(":", 1)[1]) in listener_ports
    host_listener = next(a for a in advertised if a.startswith("localhost:"))
    assert f"127.0.0.1:{host_listener.split(':')[1]}:{host_listener.split(':')[1]}" in _ports(services["kafka"])

    influx_url = urlparse(settings.influx.url)
    assert influx_url.hostname in services and influx_url.hostname == "influxdb"
    assert any(p.endswith(f":{influx_url.port}") for p in _ports(services["influxdb"]))
    influx_env = _env(services["influxdb"])
    assert influx_env["DOCKER_INFLUXDB_INIT_ORG"] == settings.influx.org
    assert influx_env["DOCKER_INFLUXDB_INIT_BUCKET"] == settings.influx.bucket
    assert influx_env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] == settings.influx.token.get_secret_value()
    assert settings.influx.read_database == settings.influx.bucket  # the DBRP script maps db = bucket name

    command = services["dashboard"]["command"]
    port = command[command.index("--port") + 1]
    assert f"127.0.0.1:{port}:{port}" in _ports(services["dashboard"])

    init_script = " ".join(services["kafka-init"]["command"])
    for topic in (settings.kafka.sensor_topic, settings.kafka.audio_topic, settings.kafka.alerts_topic,
                  settings.kafka.dead_letter_topic):
        assert f"{topic}:" in init_script, f"kafka-init does not create {topic}"
    partitions = [int(n) for n in re.findall(r"scalowatch\.(?:sensors|audio):(\d+)", init_script)]
    assert min(partitions) >= services["monitor"]["deploy"]["replicas"]  # every worker gets a partition


def test_build_contexts_and_mounted_paths_exist(compose):
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert context == REPO
            assert (context / build["dockerfile"]).is_file()
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles_copy_existing_paths_and_pin_torch(dockerfile):
    text = (DEPLOY / dockerfile).read_text()
    copies = [shlex.split(line)[1:] for line in text.splitlines() if line.startswith("COPY ")]
    assert copies
    for args in copies:
        for source in [a for a in args if not a.startswith("--")][:-1]:
            assert (REPO / source).exists(), f"{dockerfile}: COPY source {source} missing"
    packages = {p.split(".")[0] for p in _pyproject_packages()}
    copied = {Path(a[0]).name for a in copies}
    assert packages <= copied, f"{dockerfile} does not copy {packages - copied}"
    torch_install = text.index('pip install "torch==${TORCH_VERSION}"')
    # the image gets the tested versions: the lock file (less its torch pin) constrains what the project pulls in
    assert "grep -v '^torch==' requirements.lock > /tmp/constraints.txt" in text
    assert torch_install < text.index("pip install -c /tmp/constraints.txt ."), "torch first, then the pinned project"
    assert "ARG TORCH_VERSION=2.13.0" in text
    assert ("whl/cpu" in text) == (dockerfile == "Dockerfile")
    assert re.search(r"^ENTRYPOINT \[\"scalowatch\"\]", text, re.M)


def test_cli_commands_used_by_compose_exist(compose):
    from typer.main import get_command

    from scalowatch.cli import app

    commands = set(get_command(app).commands)
    for name in ("dashboard", "replay"):
        assert compose["services"][name]["command"][0] in commands
    # `monitor` is registered by scalowatch/cli_stream.py; it must exist once that command is in.
    if "monitor" not in commands:
        pytest.skip("`scalowatch monitor` not registered yet")


def _pyproject_packages() -> list[str]:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def test_every_dependency_is_pinned_in_the_lock_file_make_install_uses():
    """Issue 9 item 12: lower bounds alone let kafka-python 2 or 3 in (they differ in the rebalance threading)."""
    import re
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    names = {re.split(r"[\[<>=!~ ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in wanted}
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line!r}"
            pins[name.lower().replace("_", "-")] = version
    assert names <= set(pins), f"not pinned: {sorted(names - set(pins))}"
    assert pins["kafka-python"].startswith("3.") and pins["torch"] == "2.13.0"
    makefile = (REPO / "Makefile").read_text()
    assert "-r requirements.lock" in makefile and "--no-deps -e" in makefile
    # ... and so is what each pinned package needs (torch installs with --no-deps first): setuptools, which
    # `pip freeze` leaves out without --all, was missing
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    unpinned = set()
    for name in pins:
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                dep = req.name.lower().replace("_", "-")
                if dep not in pins:
                    unpinned.add(f"{name} -> {dep}")
    assert not unpinned, f"needed but not pinned: {sorted(unpinned)}"
    # torch is installed first, from where its CPU build is (plain PyPI's torch==2.13.0 is the CUDA build)
    assert "TORCH_INDEX := --no-deps --extra-index-url https://download.pytorch.org/whl/cpu" in makefile
    assert "$(BIN)/pip install --quiet $(TORCH_INDEX) $(TORCH_PIN)" in makefile


def test_secrets_have_no_default_and_ports_bind_to_localhost(compose):
    """Issue 9 #11: no fallback token or password (compose must refuse to start without them), and nothing
    published on all interfaces by default (Kafka is PLAINTEXT, the dashboard has no login)."""
    text = COMPOSE.read_text()
    for secret in ("SCALOWATCH_INFLUX_TOKEN", "INFLUXDB_ADMIN_PASSWORD"):
        uses = re.findall(r"\$\{" + secret + r"([^}]*)\}", text)
        assert uses and all(use.startswith(":?") for use in uses), f"{secret} has a default: {uses}"
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("${SCALOWATCH_BIND_ADDRESS:-127.0.0.1}:"), f"{name} publishes {port}"
