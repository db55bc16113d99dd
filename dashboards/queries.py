"""Cached access to the store for the Streamlit pages.

Why a cache: every widget change reruns the page script, and the live panels rerun every few seconds; a short
TTL (``SCALOWATCH_DASHBOARD_CACHE_TTL_S``, default 2 s) lets many viewers and reruns share one database query
while new points still appear within a refresh or two. Errors are never cached (Streamlit re-raises them), so a
store that comes back is noticed on the next rerun.
"""
from __future__ import annotations

import os
from typing import Any

import streamlit as st

from dashboards.store import AlertFeedback, Store, store_from_environment

CACHE_TTL_S = float(os.environ.get("SCALOWATCH_DASHBOARD_CACHE_TTL_S", "2"))
REFRESH_S = float(os.environ.get("SCALOWATCH_DASHBOARD_REFRESH_S", "5"))


@st.cache_resource(show_spinner=False, max_entries=16)
def _store_for(config_key: str) -> Store:
    return store_from_environment()


def get_store() -> Store:
    """The store named by the environment the CLI set up: one object per distinct configuration, keyed on
    every ``SCALOWATCH_*`` variable (hashed, so the token is not kept in the cache key in clear)."""
    import hashlib

    config = sorted((k, v) for k, v in os.environ.items() if k.startswith("SCALOWATCH_"))
    return _store_for(hashlib.sha256(repr(config).encode()).hexdigest())


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=512)
def _cached(store_key: str, method: str, args: tuple, kwargs: tuple, _store: Store) -> Any:
    return getattr(_store, method)(*args, **dict(kwargs))


def query(store: Store, method: str, *args: Any, **kwargs: Any) -> Any:
    """``store.<method>(*args, **kwargs)`` through the short-lived cache (arguments must be hashable)."""
    return _cached(store.key, method, tuple(args), tuple(sorted(kwargs.items())), store)


def write_feedback(store: Store, feedback: AlertFeedback) -> None:
    """Write, then drop cached reads so the verdict shows at once."""
    store.write_feedback(feedback)
    _cached.clear()
