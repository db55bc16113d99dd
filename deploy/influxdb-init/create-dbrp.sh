#!/bin/sh
# Runs once, when the influxdb:2 container sets itself up (DOCKER_INFLUXDB_INIT_MODE=setup).
# The dashboard reads with InfluxQL (GET /query?db=...), which InfluxDB 2.x serves only through a DBRP mapping
# from a database/retention-policy name to a bucket. Map db "scalowatch" (the bucket's name) to the bucket.
set -eu
influx v1 dbrp create \
  --org "${DOCKER_INFLUXDB_INIT_ORG}" \
  --token "${DOCKER_INFLUXDB_INIT_ADMIN_TOKEN}" \
  --db "${DOCKER_INFLUXDB_INIT_BUCKET}" \
  --rp autogen \
  --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
  --default
