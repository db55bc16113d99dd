"""Fitted detectors per stream (or per stream class): load from disk, or fit in the background, save, hand out.

Why background fitting: fitting trains a diffusion model (seconds to minutes); the consumer loop must keep
polling (or Kafka evicts it from the group) and keep scoring every other stream. Fits run one at a time on one
worker thread (a bounded pool: a thousand streams finishing their training part at once queue up instead of
starting a thousand threads); torch releases the GIL in its kernels. The loop asks :meth:`poll` for finished fits.

Layout on disk: ``model_dir/<stream_class>/<stream>/`` (the stream id made filesystem-safe), written to a
temporary sibling and renamed, so a crash mid-save never leaves a half model that a restart would load. Every file
and folder of the new model is fsynced before the rename and the parent folder after it: without that, a power
loss shortly after the rename can leave the renamed folder pointing at files whose data never reached the disk.
``shared`` mode keeps one detector per class in ``model_dir/<stream_class>/_shared/``: put a fitted one there
(``scalowatch train``) or the class's first stream to finish its training part fits it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import queue
import re
import shutil
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from models.detector import DetectorConfig, FittedDetector
from streamer.durable import sync_directory, sync_tree

log = logging.getLogger(__name__)

SHARED = "_shared"
"""The folder of a class's shared detector."""
SHARED_KEY = "\x00shared"
"""The registry key of a class's shared detector: a control character no stream id may contain, so a stream that
happens to be called ``_shared`` can never be mistaken for it."""

ModelKey = tuple[str, str]
"""(stream class, stream id or :data:`SHARED_KEY`)."""

Fitter = Callable[[np.ndarray, DetectorConfig], FittedDetector]
Loader = Callable[[Path], FittedDetector]


def safe_name(stream: str) -> str:
    """A directory name for a stream id. Ids that needed changing, or that start with '_' (reserved for the
    registry's own folders such as ``_shared``), get a short hash so two can never share a folder."""
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", stream).strip(".") or "_"
    if clean != stream or clean.startswith("_"):
        clean = f"{clean[:80]}-{hashlib.sha1(stream.encode()).hexdigest()[:8]}"
    return clean


@dataclass
class FitFailure:
    key: ModelKey
    error: str


FIT_RETRY_FIRST_S = 5.0
FIT_RETRY_MAX_S = 600.0
LOOK_AGAIN_S = 5.0
RELOAD_FAILED_S = 60.0


class DetectorRegistry:
    """Fitted detectors by key: in memory, loaded from ``model_dir``, or fitted in the background.

    A failed fit is tried again after a pause that doubles with each failure (``FIT_RETRY_FIRST_S`` up to
    ``FIT_RETRY_MAX_S``): a fit that fails for good (an unwritable model folder, a training part it refuses)
    would otherwise start again at every round, a training run each time, for ever.
    """

    def __init__(self, model_dir: str | Path, configs: dict[str, DetectorConfig], *, shared: bool = False,
                 background: bool = True, device: str = "auto", fitter: Fitter | None = None,
                 loader: Loader | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.model_dir = Path(model_dir)
        self.configs = dict(configs)
        self.shared = shared
        self.background = background
        self.fitter = fitter or (lambda train, config: FittedDetector.fit(train, config, device=device))
        self.loader = loader or (lambda path: FittedDetector.load(path, device=device))
        self._ready: dict[ModelKey, FittedDetector] = {}
        self._looked: dict[ModelKey, float] = {}  # when the disk was last looked at for a missing key
        self._unloadable: dict[ModelKey, tuple[tuple[int, int], float]] = {}  # folder (inode, mtime), when
        self.clock = clock
        self._failures: dict[ModelKey, int] = {}
        self._retry_at: dict[ModelKey, float] = {}
        self._running: dict[ModelKey, Future] = {}
        self._jobs: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None

    # -- lookup -----------------------------------------------------------------------------------------------
    def key_for(self, stream_class: str, stream: str) -> ModelKey:
        return (stream_class, SHARED_KEY if self.shared else stream)

    def directory(self, key: ModelKey) -> Path:
        return self.model_dir / safe_name(key[0]) / (SHARED if key[1] == SHARED_KEY else safe_name(key[1]))

    def detector(self, key: ModelKey, fresh: bool = False, retry_failed: bool = False) -> FittedDetector | None:
        """The fitted detector of ``key``: in memory, else loaded from disk, else None.

        A miss is looked at again, at most every ``LOOK_AGAIN_S`` (``fresh``, a restore: now, even while this
        registry fits ``key`` itself): another member may publish the stream's detector later, and a stream
        restored here must find it, or its state would be thrown away. Otherwise, while this registry fits ``key``,
        the disk is not looked at: its own result is on the way. A folder that could not be loaded is tried again
        when it changes, or after ``RELOAD_FAILED_S`` (``fresh`` too: one unloadable shared folder must not cost a
        load per restored stream), or at once with ``retry_failed``.
        """
        found = self._ready.get(key)
        if found is not None or (key in self._running and not fresh):
            return found
        now = self.clock()
        last = self._looked.get(key)
        if last is not None and not fresh and now - last < LOOK_AGAIN_S:
            return None
        self._looked[key] = now
        path = self.directory(key)
        try:
            info = path.stat() if path.is_dir() and any(path.iterdir()) else None
        except OSError:
            info = None
        if info is None:
            return None
        stamp = (info.st_ino, info.st_mtime_ns)
        failed = self._unloadable.get(key)
        if failed is not None and failed[0] == stamp and now - failed[1] < RELOAD_FAILED_S and not retry_failed:
            return None
        try:
            found = self._ready[key] = self.loader(path)
            self._unloadable.pop(key, None)
            log.info("loaded detector %s for %s/%s", found.version, *key)
        except Exception:  # corrupt, half written, or from another version: refit rather than stop monitoring
            self._unloadable[key] = (stamp, now)
            log.exception("could not load the detector in %s; it will be fitted again", path)
        return found

    def release(self, key: ModelKey) -> None:
        """Drop ``key``'s detector from memory: no live stream uses it any more. It stays on disk and is loaded
        again when one of its streams comes back. Why: with per-stream models every stream a worker had ever held
        kept its detector (a U-Net and its reference windows) in memory, evicted and revoked streams included, so
        memory grew with the streams seen rather than with the streams held (``max_streams``)."""
        self._ready.pop(key, None)
        self._looked.pop(key, None)

    def loaded(self) -> int:
        """Detectors in memory."""
        return len(self._ready)

    def fitting(self, key: ModelKey) -> bool:
        return key in self._running

    def fit_due(self, key: ModelKey) -> bool:
        """Whether a fit of ``key`` may start now: none running, none ready, and no failure's pause left."""
        return (key not in self._running and key not in self._ready
                and self.clock() >= self._retry_at.get(key, float("-inf")))

    # -- fitting ----------------------------------------------------------------------------------------------
    def fit(self, key: ModelKey, train: np.ndarray) -> None:
        """Fit ``key`` on ``train`` (a stream's training part) in the background; :meth:`poll` reports it."""
        if not self.fit_due(key):
            return
        fut: Future = Future()
        self._running[key] = fut
        log.info("fitting a detector for %s/%s on %d samples", *key, train.size)
        job = (key, np.array(train, dtype=np.float64), fut)
        if not self.background:
            self._run(job)
            return
        self._jobs.put(job)
        if self._worker is None or not self._worker.is_alive():
            # Daemon: a shutdown never waits for a fit; its training samples stay uncommitted and are re-read.
            self._worker = threading.Thread(target=self._work, name="detector-fit", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            self._run(job)

    def _run(self, job) -> None:
        key, train, fut = job
        try:
            fut.set_result(self._publish(key, self.fitter(train, self.configs[key[0]])))
        except BaseException as exc:  # reported by poll(), never raised in the loop's thread
            fut.set_exception(exc)

    def _publish(self, key: ModelKey, fitted: FittedDetector) -> FittedDetector:
        """Move a fitted detector into place; if another worker got there first, use theirs.

        Two members of a group fit the same stream when a rebalance moves it while its fit runs. First writer
        wins, so every point of a stream carries one model version; each writer saves into its own temporary
        folder and publishes with one atomic rename (which fails onto a non-empty folder).
        """
        final = self.directory(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        shutil.rmtree(tmp, ignore_errors=True)
        fitted.save(tmp)
        sync_tree(tmp)
        try:
            tmp.rename(final)
            sync_directory(final.parent)
            return fitted
        except OSError:
            pass
        try:
            theirs = self.loader(final)
            log.info("%s/%s was fitted elsewhere meanwhile: using detector %s", *key, theirs.version)
            shutil.rmtree(tmp, ignore_errors=True)
            return theirs
        except Exception:  # what is there is unreadable (that is why we fitted): replace it
            log.warning("replacing the unreadable detector in %s", final)
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            sync_directory(final.parent)
            return fitted

    def poll(self) -> tuple[list[ModelKey], list[FitFailure]]:
        """Fits that finished since the last call: (ready keys, failures)."""
        ready, failed = [], []
        for key, fut in list(self._running.items()):
            if not fut.done():
                continue
            del self._running[key]
            exc = fut.exception()
            if exc is not None:
                n = self._failures[key] = self._failures.get(key, 0) + 1
                pause = min(FIT_RETRY_MAX_S, FIT_RETRY_FIRST_S * 2 ** (n - 1))
                self._retry_at[key] = self.clock() + pause
                log.error("fitting the detector for %s/%s failed (%d time(s)); trying again in %.0f s: %s: %s",
                          *key, n, pause, type(exc).__name__, exc)
                failed.append(FitFailure(key, f"{type(exc).__name__}: {exc}"))
                continue
            self._ready[key] = fut.result()
            self._failures.pop(key, None)
            self._retry_at.pop(key, None)
            log.info("detector %s ready for %s/%s", self._ready[key].version, *key)
            ready.append(key)
        return ready, failed

    def training(self) -> bool:
        return bool(self._running)

    def wait(self, timeout: float | None = None) -> None:
        """Block until running fits finish (the demo's end of replay, tests)."""
        for fut in list(self._running.values()):
            try:
                fut.result(timeout=timeout)
            except Exception:
                pass  # reported by poll()

    def close(self) -> None:
        """Nothing to release: the fit worker is a daemon (see :meth:`fit`)."""
