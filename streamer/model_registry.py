"""Per-stream models: load from disk, or collect a warm-up, train in the background, save, then score.

Why background training: a diffusion model takes seconds to minutes to train; the consumer loop must keep
polling (or Kafka evicts it from the group) and keep scoring every other stream. Training runs in one worker
thread (torch releases the GIL in its kernels); the loop asks :meth:`ModelRegistry.poll` for finished models.

Layout on disk: ``model_dir/<stream_class>/<stream>/`` (the stream id made filesystem-safe), written to a
temporary sibling and renamed, so a crash mid-save never leaves a half model that a restart would load.

Two modes:

- ``per_stream`` (default): every stream gets its own model, trained on its own first ``warmup_windows``
  windows. Those warm-up windows are training data; they are not scored.
- ``shared``: one model per stream class at ``model_dir/<stream_class>/_shared/``. When it exists (e.g. a
  pretrained model put there by ``scalowatch train``) every stream scores from its first window; otherwise it is
  trained once on the pooled first ``warmup_windows`` windows of the class. Windows of different streams then
  share forward passes, which is what the throughput benchmark needs.

Windows waiting here (warm-up data, or windows that arrived while their model trains) keep their offsets held:
warm-up windows are released only once the model is safely on disk, so a crash during training re-reads them.
"""
from __future__ import annotations

import hashlib
import logging
import re
import shutil
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from models.types import ScoreBatch
from streamer.windowing import Holds, Window

log = logging.getLogger(__name__)

SHARED = "_shared"


class WindowModel(Protocol):
    """What the streamer needs from a model (models.pipeline.ScalogramPipeline provides it)."""

    version: str

    def fit_windows(self, windows: np.ndarray) -> Any: ...

    def score_windows(self, windows: np.ndarray) -> ScoreBatch: ...

    def save(self, directory: str | Path) -> None: ...


ModelFactory = Callable[[str], WindowModel]
"""stream class -> a fresh, untrained model."""
ModelLoader = Callable[[Path], WindowModel]
"""directory -> a trained model."""


class ModelStatus(str, Enum):
    COLLECTING = "collecting"
    TRAINING = "training"
    READY = "ready"


ModelKey = tuple[str, str]
"""(stream class, stream id or ``_shared``): also the micro-batching key."""


@dataclass
class _Entry:
    key: ModelKey
    status: ModelStatus = ModelStatus.COLLECTING
    warmup: list[Window] = field(default_factory=list)
    waiting: list[Window] = field(default_factory=list)
    target: int = 0
    model: WindowModel | None = None
    future: Future | None = None
    failures: int = 0


def safe_name(stream: str) -> str:
    """A directory name for a stream id; ids that needed changing get a short hash so two cannot collide."""
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", stream).strip(".") or "_"
    if clean != stream:
        clean = f"{clean[:80]}-{hashlib.sha1(stream.encode()).hexdigest()[:8]}"
    return clean


class ModelRegistry:
    def __init__(
        self,
        model_dir: str | Path,
        factory: ModelFactory,
        loader: ModelLoader,
        *,
        warmup_windows: int = 64,
        warmup_for: Callable[[str, str], int] | None = None,
        shared: bool = False,
        shared_start: bool = False,
        background: bool = True,
    ):
        if warmup_windows < 1:
            raise ValueError("warmup_windows must be >= 1")
        self.model_dir = Path(model_dir)
        self.factory = factory
        self.loader = loader
        self.warmup_windows = warmup_windows
        self.warmup_for = warmup_for
        self.shared = shared
        self.shared_start = shared_start and not shared
        self._starting_points: dict[str, ModelKey | None] = {}
        self._entries: dict[ModelKey, _Entry] = {}
        self.background = background
        # One training at a time (two would only fight over the same cores). Daemon threads: a shutdown never
        # waits for a training to finish; the model is saved atomically and its warm-up offsets stay uncommitted.
        self._train_lock = threading.Lock()

    # -- lookup -----------------------------------------------------------------------------------------------
    def key_for(self, stream_class: str, stream: str) -> ModelKey:
        return (stream_class, SHARED if self.shared else stream)

    def directory(self, key: ModelKey) -> Path:
        return self.model_dir / safe_name(key[0]) / (SHARED if key[1] == SHARED else safe_name(key[1]))

    def status(self, key: ModelKey) -> ModelStatus:
        return self._entry(key).status

    def model(self, key: ModelKey) -> WindowModel:
        entry = self._entry(key)
        if entry.model is None:
            raise KeyError(f"no model ready for {key}")
        return entry.model

    def _entry(self, key: ModelKey) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(key=key, target=self._target(key))
            path = self.directory(key)
            if (path / "config.json").exists() or any(path.glob("*.json")):
                try:
                    entry.model = self.loader(path)
                    entry.status = ModelStatus.READY
                    log.info("loaded model %s for %s/%s", getattr(entry.model, "version", "?"), *key)
                except Exception:  # a corrupt or incompatible checkpoint: retrain rather than stop monitoring
                    log.exception("could not load the model in %s; it will be retrained", path)
        return entry

    def _target(self, key: ModelKey) -> int:
        if self.warmup_for is not None and key[1] != SHARED:
            return max(1, int(self.warmup_for(*key)))
        return self.warmup_windows

    # -- windows of streams without a ready model -------------------------------------------------------------
    def ensure(self, stream_class: str, stream: str) -> ModelStatus:
        return self._entry(self.key_for(stream_class, stream)).status

    def starting_point(self, stream_class: str) -> ModelKey | None:
        """With ``shared_start``: the key of the class's shared model on disk (``_shared/``), which scores a
        stream's windows until its own model is trained; None when the option is off or there is none."""
        if not self.shared_start:
            return None
        if stream_class not in self._starting_points:
            key = (stream_class, SHARED)
            path = self.directory(key)
            found = None
            if (path / "pipeline.json").exists() or any(path.glob("*.json")):
                try:
                    entry = _Entry(key=key, status=ModelStatus.READY, model=self.loader(path))
                    self._entries[key] = entry
                    found = key
                    log.info("streams of class %s start on the shared model %s", stream_class,
                             getattr(entry.model, "version", "?"))
                except Exception:
                    log.exception("could not load the shared starting model in %s", path)
            self._starting_points[stream_class] = found
        return self._starting_points[stream_class]

    def collect(self, window: Window) -> None:
        """Keep a window as warm-up data if its stream still collects (it is scored elsewhere meanwhile)."""
        entry = self._entry(self.key_for(window.stream_class, window.stream))
        if entry.status is ModelStatus.COLLECTING and len(entry.warmup) < entry.target:
            entry.warmup.append(window)
            if len(entry.warmup) >= entry.target:
                self._start_training(entry)

    def offer(self, window: Window) -> None:
        """A window whose model is not ready: keep it as warm-up data or queue it until training ends."""
        entry = self._entry(self.key_for(window.stream_class, window.stream))
        if entry.status is ModelStatus.READY:
            raise RuntimeError(f"model {entry.key} is ready; score the window instead of offering it")
        if entry.status is ModelStatus.COLLECTING and len(entry.warmup) < entry.target:
            entry.warmup.append(window)
            if len(entry.warmup) >= entry.target:
                self._start_training(entry)
        else:
            entry.waiting.append(window)

    def _start_training(self, entry: _Entry) -> None:
        entry.status = ModelStatus.TRAINING
        data = np.stack([w.values for w in entry.warmup]).astype(np.float32)
        log.info("training a model for %s/%s on %d warm-up windows", *entry.key, len(data))
        fut: Future = Future()
        entry.future = fut

        def job() -> None:
            with self._train_lock:
                try:
                    fut.set_result(self._train(entry.key, data))
                except BaseException as exc:  # reported by poll(), never raised in the loop's thread
                    fut.set_exception(exc)

        if self.background:
            threading.Thread(target=job, name=f"train-{entry.key[1]}", daemon=True).start()
        else:
            job()

    def _train(self, key: ModelKey, data: np.ndarray) -> WindowModel:
        model = self.factory(key[0])
        model.fit_windows(data)
        final = self.directory(key)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        model.save(tmp)
        shutil.rmtree(final, ignore_errors=True)
        try:
            tmp.rename(final)
        except OSError as exc:  # another worker (same group, after a rebalance) saved one at the same moment
            log.warning("could not move the new model into %s (%s); keeping the one there", final, exc)
            shutil.rmtree(tmp, ignore_errors=True)
        return model

    def poll(self) -> list[tuple[ModelKey, list[Window]]]:
        """Finished trainings: (key, windows that waited for the model and must now be scored).

        The warm-up windows of a finished model are released here (they were training data).
        """
        out: list[tuple[ModelKey, list[Window]]] = []
        for entry in self._entries.values():
            if entry.status is not ModelStatus.TRAINING or entry.future is None or not entry.future.done():
                continue
            fut, entry.future = entry.future, None
            exc = fut.exception()
            if exc is not None:
                entry.failures += 1
                log.error("training for %s/%s failed (%s: %s); collecting a fresh warm-up and retrying", *entry.key,
                          type(exc).__name__, exc)
                # The failed warm-up is given up (logged above); what arrived meanwhile becomes the new warm-up.
                queued, entry.warmup, entry.waiting = entry.waiting, [], []
                entry.status = ModelStatus.COLLECTING
                for w in queued:
                    self.offer(w)
                continue
            entry.model = fut.result()
            entry.status = ModelStatus.READY
            log.info("model %s ready for %s/%s", getattr(entry.model, "version", "?"), *entry.key)
            entry.warmup = []
            waiting, entry.waiting = entry.waiting, []
            out.append((entry.key, waiting))
        return out

    def training(self) -> bool:
        return any(e.status is ModelStatus.TRAINING for e in self._entries.values())

    def wait(self, timeout: float | None = None) -> None:
        """Block until running trainings finish (the demo's end of replay, tests)."""
        for entry in list(self._entries.values()):
            if entry.future is not None:
                try:
                    entry.future.result(timeout=timeout)
                except Exception:
                    pass  # reported by poll()

    def holds(self) -> Iterator[Holds]:
        for entry in self._entries.values():
            for w in entry.warmup:
                yield w.holds
            for w in entry.waiting:
                yield w.holds

    def drop_streams(self, streams: set[str]) -> int:
        """Forget queued windows of streams whose partitions were revoked (their new owner re-reads them)."""
        n = 0
        for entry in self._entries.values():
            before = len(entry.warmup) + len(entry.waiting)
            entry.warmup = [w for w in entry.warmup if w.stream not in streams]
            entry.waiting = [w for w in entry.waiting if w.stream not in streams]
            n += before - len(entry.warmup) - len(entry.waiting)
        return n

    def pending_windows(self) -> int:
        """Warm-up and queued windows (all held offsets)."""
        return sum(len(e.warmup) + len(e.waiting) for e in self._entries.values())

    def queued_windows(self) -> int:
        """Windows waiting for a model that is training: the part of the backlog that pausing input relieves
        (warm-up windows are not: a collecting stream needs more input, so they must never pause it)."""
        return sum(len(e.waiting) for e in self._entries.values())

    def close(self) -> None:
        """Nothing to release: training threads are daemons (see __init__)."""
