"""How many streams a worker's memory holds: the default stream cap.

Why: the cap (``MAX_STREAMS``) was 10,000 whatever the machine. A busy stream holds ~0.8 MB of detector state
(likelihood histories) and, with per-stream models, ~1.5 MB of fitted detector, so 10,000 streams need ~25 GB; a
smaller worker was killed for memory once enough streams had arrived, and again after every restart, which brought
the same streams back — a crash loop rather than a refusal. Without an explicit cap the worker now holds no more
streams than its memory limit fits (its container's cgroup limit, else the machine's memory), and a new stream
beyond that evicts a saved one or is dead-lettered (``too_many_streams``) instead of costing the worker. A stream
still collecting a long training part (audio: 100 s of samples) counts as as many streams as its buffer's memory
(:func:`training_weight`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MAX_STREAMS = 10_000
PROCESS_BASE_MB = 600.0
"""The worker without streams: torch, one detector per class, buffers (about 450 MB RSS in the streaming
benchmark)."""
STREAM_STATE_MB = 0.8
"""One busy ``nab`` stream's detector state, measured 2026-12-06 with tracemalloc and the saved checkpoint's size."""
STREAM_MODEL_MB = 1.5
"""One fitted per-stream detector in memory (U-Net and reference windows), measured alike."""
BUFFERED_SAMPLE_BYTES = 32
"""A training sample a stream holds until its detector is fitted: its int64 timestamp and float64 value with up to
half again of room for the buffer to grow (:mod:`streamer.pending`), and the float64 copy its queued fit holds (fits
run one at a time, so many streams may wait with both). A sensor that sends one reading per record adds 28 bytes
per record (42 with room: where it ends, its origin, its stamp) — 32 kB for the ``nab`` preset's 750-sample
training part, inside one stream's unit; before the buffer kept records in arrays it added about 425."""
USABLE_FRACTION = 0.85
"""Of the memory limit, what the streams may fill: fits and write batches need room beside them."""

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_limit_files(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = _CGROUP_ROOT) -> list[Path]:
    """The memory-limit files of this process's cgroup and of every group above it, v2 (``memory.max``) and v1
    (``memory.limit_in_bytes``): a container sees its own group at the root, a systemd unit (``MemoryMax=``) or a
    host's cgroup namespace only below it, and a parent's limit binds its children."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    files = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, group = parts
        if controllers == "":
            base, name = root, "memory.max"
        elif "memory" in controllers.split(","):
            base, name = root / "memory", "memory.limit_in_bytes"
        else:
            continue
        rel = Path(group.lstrip("/"))
        files += [base / p / name for p in (rel, *rel.parents)]
    return files or [root / "memory.max", root / "memory" / "memory.limit_in_bytes"]


def memory_limit_bytes(cgroup_files: list[Path] | None = None) -> int | None:
    """The memory this process may use: the tightest limit of its cgroups (v2 or v1) when one is set, else the
    machine's physical memory; None where neither can be read."""
    physical = _physical_bytes()
    limits = [] if physical is None else [physical]
    for path in cgroup_limit_files() if cgroup_files is None else cgroup_files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # v2 says "max" where there is no limit; v1 a number near 2**63
            limits.append(int(text))
    return min(limits) if limits else None


def _physical_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def streams_that_fit(limit_bytes: int, per_stream_models: bool) -> int:
    """Live streams a worker with ``limit_bytes`` of memory holds (at least one)."""
    per_stream = STREAM_STATE_MB + (STREAM_MODEL_MB if per_stream_models else 0.0)
    room = limit_bytes / 2**20 * USABLE_FRACTION - PROCESS_BASE_MB
    return max(1, int(room // per_stream))


def training_weight(train_samples: int, per_stream_models: bool = True) -> int:
    """How many streams' room a stream collecting its training part takes, in the cap's units.

    Why: the cap counts busy ``nab`` streams, whose training part (750 samples, 24 kB) is nothing beside their state
    and model. An ``audio`` stream collects 100 s at 16 kHz before it fits — 1.6 M samples, 24 MB (up to 37 MB with
    the buffer's room to grow), and 12 MB more while its fit waits in the queue: about twenty-two busy streams'
    worth — and with each counted as one, a few hundred new audio streams would fill a worker sized for the cap past
    its memory. Once fitted it counts as one again, and its buffer is gone once scored (the fit's copy of the training
    part, kept with the fit's window scores until then: :class:`models.detector.fitted.TrainingPass`). With a shared
    model (a unit is then one stream's state, no model) only the streams that arrive before their class's one
    detector is ready collect samples — all of them until the first fit is done, each a training part's worth and
    more: a fleet of audio streams starting together could outgrow its worker before that fit ended —; the streams
    that come after collect nothing and count as one (:meth:`StreamProcessor._weight`)."""
    buffered = train_samples * BUFFERED_SAMPLE_BYTES / 2**20
    return 1 + int(buffered // (STREAM_STATE_MB + (STREAM_MODEL_MB if per_stream_models else 0.0)))


def fitted_weight(model_bytes: int, per_stream_models: bool = True) -> int:
    """How many streams' room a stream with its fitted detector takes, in the cap's units: one, and more where its
    own detector is larger than the ``nab`` detector the unit was measured on.

    Why: :data:`STREAM_MODEL_MB` is a ``nab`` stream's detector. A detector keeps every training window of its
    discord channels, so it grows with its training part: the ``ucr`` preset's on UCR's training parts of
    15,000–100,000 samples holds 48–295 MB (measured 2026-12-07: :attr:`models.detector.FittedDetector.nbytes`),
    and a 4 GiB worker whose cap let in 1,252 streams would run out of memory after about twenty of them. With a
    shared model the detector is the class's one, part of the process's base, and a stream counts as one."""
    if not per_stream_models:
        return 1
    extra = max(0.0, model_bytes / 2**20 - STREAM_MODEL_MB)
    return 1 + int(extra // (STREAM_STATE_MB + STREAM_MODEL_MB))


def default_max_streams(per_stream_models: bool, limit_bytes: int | None = None) -> int:
    """The stream cap without an explicit ``MAX_STREAMS``: 10,000, or fewer where the memory limit fits fewer."""
    limit = memory_limit_bytes() if limit_bytes is None else limit_bytes
    if limit is None:
        return DEFAULT_MAX_STREAMS
    fit = streams_that_fit(limit, per_stream_models)
    if fit < DEFAULT_MAX_STREAMS:
        log.info("stream cap %d: what %.1f GiB of memory holds (%s; set MAX_STREAMS to choose)", fit, limit / 2**30,
                 "per-stream models" if per_stream_models else "a shared model")
    return min(DEFAULT_MAX_STREAMS, fit)
