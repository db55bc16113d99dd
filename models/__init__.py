"""Scalowatch model core: pure PyTorch/numpy (no Kafka, InfluxDB or Streamlit here)."""
