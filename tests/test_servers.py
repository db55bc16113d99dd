"""The integration-test servers themselves behave like the real services the product talks to."""
from __future__ import annotations

import re
import uuid

import pytest
from influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException
from kafka import KafkaConsumer, KafkaProducer
from kafka_read import read_topic

from servers import port_open, render_template, TEMPLATES

pytestmark = pytest.mark.integration


def test_templates_fill_every_field_and_leave_nginx_variables(tmp_path):
    text = render_template(TEMPLATES / "nginx.conf.template", {
        "state_dir": tmp_path, "influx_port": 1, "front_port": 2, "user_directive": ""})
    assert re.search(r"\$\{\w+\}", text) is None
    assert "$arg_bucket" in text
    with pytest.raises(KeyError, match="front_port"):
        render_template(TEMPLATES / "nginx.conf.template", {"state_dir": tmp_path, "influx_port": 1,
                                                             "user_directive": ""})


def test_broker_round_trip_with_key_and_headers(kafka_broker):
    topic = f"servers-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=kafka_broker, acks="all")
    for i in range(5):
        producer.send(topic, value=f"v{i}".encode(), key=b"stream-a", headers=[("h", b"1")])
    producer.flush()
    producer.close()
    records = read_topic(KafkaConsumer(bootstrap_servers=kafka_broker, enable_auto_commit=False), topic, 5)
    assert [r.value for r in records] == [b"v0", b"v1", b"v2", b"v3", b"v4"]  # one key -> one partition, in order
    assert all(r.key == b"stream-a" and r.headers == [("h", b"1")] for r in records)


@pytest.mark.parametrize("precision,stamp,expected_ns", [
    ("ns", 1_700_000_000_123_456_789, 1_700_000_000_123_456_789),
    ("us", 1_700_000_000_123_456, 1_700_000_000_123_456_000),
    ("ms", 1_700_000_000_123, 1_700_000_000_123_000_000),
    ("s", 1_700_000_000, 1_700_000_000_000_000_000),
])
def test_influx_front_maps_v2_write_precisions(influx_server, precision, stamp, expected_ns):
    measurement = f"prec_{precision}"
    with InfluxDBClient(url=influx_server.url, token="unused", org="unused") as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket=influx_server.database, record=f"{measurement},stream=a value=1.5 {stamp}",
            write_precision=precision)
    rows = influx_server.rows(f"SELECT value FROM {measurement}")
    assert [(r["time"], r["value"]) for r in rows] == [(expected_ns, 1.5)]


def test_influx_front_maps_bucket_with_retention_policy(influx_server):
    with InfluxDBClient(url=influx_server.url, token="unused", org="unused") as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        write.write(bucket=f"{influx_server.database}/autogen", record="with_rp value=2i 5")
        with pytest.raises(ApiException) as missing:
            write.write(bucket="no_such_db", record="m value=1 1")
        with pytest.raises(ApiException) as bad_line:
            write.write(bucket=influx_server.database, record="m value= 1")
    assert influx_server.rows("SELECT value FROM with_rp") == [{"time": 5, "value": 2}]
    assert missing.value.status == 404
    assert bad_line.value.status == 400


def test_influx_outage_refuses_connections_and_restart_keeps_data(influx_server):
    with InfluxDBClient(url=influx_server.url, token="unused", org="unused") as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket=influx_server.database, record="outage_check value=7 123")
    influx_server.stop()
    try:
        assert not port_open(influx_server.front_port)
    finally:
        influx_server.start()
    assert influx_server.rows("SELECT value FROM outage_check") == [{"time": 123, "value": 7}]
