"""Scalowatch live dashboard (Streamlit) and its store query layer."""
