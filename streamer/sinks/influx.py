"""InfluxDB writer: points -> line protocol (ns precision) -> ``/api/v2/write`` via influxdb-client's WriteApi.

SYNCHRONOUS mode on purpose: ``write`` returning means the server acknowledged the batch (HTTP 204), which is
the promise the monitor needs before committing offsets. The client's own retries are switched off; the monitor
backs off. Works against InfluxDB 2.x/3.x and 1.8+ (1.x through its v2 compatibility endpoint).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client import Point as InfluxPoint
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException
from pydantic import SecretStr
from urllib3.exceptions import HTTPError as Urllib3Error

from streamer.points import Point
from streamer.sinks.base import SinkRejected, SinkUnavailable, field_value, validate_point

log = logging.getLogger(__name__)

# Statuses that mean "this batch is bad" (retrying it cannot help). Everything else (5xx, 429, 401/403, 404 for a
# missing bucket) is an availability or configuration problem: the data is kept and retried.
_REJECT_STATUSES = {400, 413, 422}


def to_line_protocol(point: Point) -> str:
    """One point as an InfluxDB line, by influxdb-client's own encoder (escaping, integer ``i`` suffix, fields
    in its order; time in ns): the project's one line-protocol encoder, the dashboard's feedback writes included.
    Validates first (non-finite numbers, bad names and times are :class:`SinkRejected`)."""
    validate_point(point)
    out = InfluxPoint(point.measurement)
    for key in sorted(point.tags):
        out.tag(key, point.tags[key])
    for key, value in point.fields.items():
        out.field(key, field_value(value, point, key))
    out.time(int(point.time_ns), WritePrecision.NS)
    return out.to_line_protocol()


class InfluxSink:
    """Writes points to one bucket. ``bucket`` may be ``db/rp`` on InfluxDB 1.8+."""

    def __init__(self, url: str, bucket: str, org: str = "", token: str | SecretStr = "", timeout_ms: int = 10_000,
                 max_points_per_request: int = 5_000):
        secret = token.get_secret_value() if isinstance(token, SecretStr) else token
        if max_points_per_request < 1:
            raise ValueError("max_points_per_request must be >= 1")
        # InfluxDB's guidance is ~5000 lines per request; bigger batches are split (a failure part-way leaves the
        # earlier requests written, which is harmless: the retry rewrites the same point keys).
        self.max_points_per_request = max_points_per_request
        self.url = url
        self.bucket = bucket
        self.org = org
        self._client = InfluxDBClient(url=url, token=secret or "unused", org=org, timeout=timeout_ms, retries=False)
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    @classmethod
    def from_settings(cls, influx) -> "InfluxSink":
        """From ``Settings().influx``."""
        return cls(url=influx.url, bucket=influx.bucket, org=influx.org, token=influx.token,
                   timeout_ms=influx.timeout_ms)

    def write(self, points: Sequence[Point]) -> None:
        if not points:
            return
        lines = [to_line_protocol(p) for p in points]  # SinkRejected before anything is sent
        step = self.max_points_per_request
        for start in range(0, len(lines), step):
            self._post(lines[start:start + step])

    def _post(self, lines: list[str]) -> None:
        try:
            self._write_api.write(bucket=self.bucket, org=self.org, record=lines, write_precision=WritePrecision.NS)
        except ApiException as exc:
            message = _api_message(exc)
            if exc.status in _REJECT_STATUSES:
                raise SinkRejected(f"InfluxDB rejected {len(lines)} point(s): {message}", status=exc.status) from exc
            raise SinkUnavailable(f"InfluxDB at {self.url} answered {exc.status}: {message}") from exc
        except (Urllib3Error, OSError) as exc:
            raise SinkUnavailable(f"InfluxDB at {self.url} unreachable: {exc}") from exc

    def ping(self) -> bool:
        """True when the server answers (for readiness checks; not a write guarantee)."""
        try:
            return bool(self._client.ping())
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False

    def close(self) -> None:
        self._write_api.close()
        self._client.close()

    def __enter__(self) -> "InfluxSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"InfluxSink(url={self.url!r}, bucket={self.bucket!r}, org={self.org!r})"


def _api_message(exc: ApiException) -> str:
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else (exc.body or exc.reason or "")
    return str(body).strip()[:500]
