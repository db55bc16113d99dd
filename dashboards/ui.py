"""Small pieces every page shares: the error guard, time formatting, the time-range picker.

Why a guard: the dashboard is watched by people, not developers. An empty store, an unknown stream or a database
that is down must read as a sentence on the page, never as a traceback.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Callable, TypeVar

import pandas as pd
import streamlit as st

from dashboards.store import StoreError, StoreUnavailable

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., None])

SPANS: dict[str, int | None] = {
    "Last 15 minutes": 15 * 60 * 10**9,
    "Last hour": 3600 * 10**9,
    "Last 6 hours": 6 * 3600 * 10**9,
    "Last day": 24 * 3600 * 10**9,
    "Last week": 7 * 24 * 3600 * 10**9,
    "Everything": None,
}


# Short names for links (?range=7d): the same choices as SPANS.
SPAN_PARAMS = {"15m": "Last 15 minutes", "1h": "Last hour", "6h": "Last 6 hours", "1d": "Last day",
               "7d": "Last week", "all": "Everything"}


def guarded(render: F) -> F:
    """Run a page (or a panel of one) and turn store failures into messages."""

    @functools.wraps(render)
    def wrapper(*args, **kwargs):
        try:
            return render(*args, **kwargs)
        except StoreUnavailable as exc:
            st.error(f"**The store is unavailable.** {exc}\n\nThe page retries on the next refresh.",
                     icon=":material/cloud_off:")
        except StoreError as exc:
            st.error(f"**The store answered with an error.** {exc}", icon=":material/error:")
        except Exception as exc:  # noqa: BLE001 - last line of defence: log it, say it, keep the page up
            if type(exc).__module__.startswith("streamlit"):
                raise  # reruns, page switches and stops are Streamlit's control flow, not failures
            log.exception("dashboard panel %s failed", getattr(render, "__name__", render))
            st.error(f"This panel failed: {type(exc).__name__}: {exc}. Details are in the dashboard log.",
                     icon=":material/error:")
        return None

    return wrapper  # type: ignore[return-value]


def to_datetime(ns: int | pd.Series) -> pd.Timestamp | pd.Series:
    return pd.to_datetime(ns, unit="ns", utc=True)


def fmt_time(ns: int) -> str:
    return to_datetime(int(ns)).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_duration(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "–"
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class TimeWindow:
    start_ns: int
    end_ns: int  # exclusive


def span_picker(first_ns: int, last_ns: int, key: str, default: str = "Last day") -> TimeWindow:
    """A range ending at the newest point (replayed data may be years old, so 'now' is the data's now)."""
    labels = list(SPANS)
    choice = st.selectbox("Time range", labels, index=labels.index(default), key=key,
                          help="Ends at the newest point of the data shown.")
    span = SPANS[choice]
    end = int(last_ns) + 1
    start = int(first_ns) if span is None else max(int(first_ns), end - span)
    return TimeWindow(start, end)
