"""The `scalowatch` command line: the layer above streamer/, dashboards/ and benchmarks/ that assembles them."""
