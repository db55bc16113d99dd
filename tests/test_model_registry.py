"""DetectorRegistry's publishing of fitted detectors: durable on disk, first writer wins, unreadable ones replaced.

The fitter and loader are plain callables here (a tiny object that writes two files): what is under test is the
registry's file handling, not the detector, which tests/test_detector.py covers.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from streamer import durable
from streamer.model_registry import DetectorRegistry


class _Saved:
    def __init__(self, version: str) -> None:
        self.version = version

    def save(self, directory: Path) -> None:
        (directory / "weights").mkdir(parents=True)
        (directory / "weights" / "w.bin").write_bytes(b"\0" * 64)
        (directory / "detector.json").write_text(f'{{"version": "{self.version}"}}')


def _load(path: Path) -> _Saved:
    text = (path / "detector.json").read_text()
    if "version" not in text:
        raise ValueError("unreadable")
    return _Saved(text.split('"')[3])


def _registry(tmp_path, version="v1"):
    return DetectorRegistry(tmp_path / "models", {"sensor": None}, background=False,
                            fitter=lambda train, config: _Saved(version), loader=_load)


def test_every_file_and_folder_is_synced_before_the_rename_and_the_parent_after(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, Path.rename
    monkeypatch.setattr(durable.os, "fsync",
                        lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd))[1])
    monkeypatch.setattr(Path, "rename", lambda self, target: (events.append(("rename", str(target))),
                                                              real_rename(self, target))[1])
    reg = _registry(tmp_path)
    key = reg.key_for("sensor", "pump-1")
    reg.fit(key, np.zeros(64))
    ready, failed = reg.poll()
    assert ready == [key] and failed == []
    final = reg.directory(key)
    renamed = [i for i, (kind, _) in enumerate(events) if kind == "rename"]
    assert len(renamed) == 1 and events[renamed[0]][1] == str(final)
    before = {Path(p).name for kind, p in events[: renamed[0]] if kind == "fsync"}
    assert {"w.bin", "detector.json", "weights"} <= before  # files and subfolder, under their temporary names' tree
    assert any(Path(p).name.startswith(final.name + ".tmp-") for kind, p in events[: renamed[0]] if kind == "fsync")
    after = [p for kind, p in events[renamed[0] + 1:] if kind == "fsync"]
    assert after == [str(final.parent)]


def test_first_writer_wins_and_an_unreadable_model_is_replaced(tmp_path):
    first = _registry(tmp_path, "v1")
    key = first.key_for("sensor", "pump-1")
    first.fit(key, np.zeros(64))
    first.poll()
    second = _registry(tmp_path, "v2")
    second.fit(key, np.zeros(64))
    second.poll()
    assert second.detector(key).version == "v1"  # the second fit found v1 in place and took it
    assert not list(first.directory(key).parent.glob("*.tmp-*"))

    (first.directory(key) / "detector.json").write_text("garbage")
    third = _registry(tmp_path, "v3")
    assert third.detector(key) is None  # unreadable on disk: fitted again rather than stopping
    third.fit(key, np.zeros(64))
    third.poll()
    assert _load(first.directory(key)).version == "v3"


@pytest.mark.parametrize("stream", ["pump/1", "../etc", "_shared"])
def test_stream_names_cannot_escape_or_collide_with_the_registry_folders(tmp_path, stream):
    reg = _registry(tmp_path)
    path = reg.directory(reg.key_for("sensor", stream))
    assert path.parent == reg.model_dir / "sensor" and path.name not in ("_shared", "..", ".")


def test_a_failed_fit_is_tried_again_after_a_pause_that_doubles(tmp_path):
    """A fit that fails for good (here: every time) started again at every round of the monitor, a training run
    each time, and the stream's samples piled up behind it."""
    now = [0.0]
    calls = []

    def failing(train, config):
        calls.append(now[0])
        raise OSError("model folder is read-only")

    reg = DetectorRegistry(tmp_path / "models", {"sensor": None}, background=False, fitter=failing, loader=_load,
                           clock=lambda: now[0])
    key = reg.key_for("sensor", "pump-1")
    for t in (0.0, 1.0, 4.9, 5.0, 10.0, 14.9, 15.0):
        now[0] = t
        reg.fit(key, np.zeros(64))
        reg.poll()
    assert calls == [0.0, 5.0, 15.0]  # pauses of 5 s, then 10 s
    assert not reg.fit_due(key)


def test_a_detector_another_member_publishes_after_a_miss_is_found(tmp_path):
    """A miss was remembered for good: when the stream's state (written by the member that fitted it) came back
    to this member, its restore found 'no detector' and deleted the state file. Misses are looked at again (at
    most every few seconds on the scoring path; at once for a restore)."""
    now = [0.0]
    mine = DetectorRegistry(tmp_path / "models", {"sensor": None}, background=False, loader=_load,
                            fitter=lambda train, config: _Saved("mine"), clock=lambda: now[0])
    key = mine.key_for("sensor", "pump-1")
    assert mine.detector(key) is None and mine.detector(key) is None
    theirs = _registry(tmp_path, "theirs")
    theirs.fit(key, np.zeros(64))
    theirs.poll()
    now[0] = 1.0
    assert mine.detector(key) is None  # looked at a second ago: not yet again
    assert mine.detector(key, fresh=True).version == "theirs"  # a restore looks at once
    other = mine.key_for("sensor", "pump-2")
    assert mine.detector(other) is None
    theirs.fit(other, np.zeros(64))
    theirs.poll()
    now[0] = 7.0
    assert mine.detector(other).version == "theirs"


def test_an_unloadable_folder_is_tried_again_when_it_changes_not_at_every_look(tmp_path):
    now = [0.0]
    loads = []

    def loader(path):
        loads.append(now[0])
        return _load(path)

    reg = DetectorRegistry(tmp_path / "models", {"sensor": None}, background=False, loader=loader,
                           fitter=lambda train, config: _Saved("v1"), clock=lambda: now[0])
    key = reg.key_for("sensor", "pump-1")
    folder = reg.directory(key)
    folder.mkdir(parents=True)
    (folder / "detector.json").write_text("half written")
    for t in (0.0, 6.0, 12.0):
        now[0] = t
        assert reg.detector(key) is None
    assert loads == [0.0]  # unchanged: not loaded again at every look
    (folder / "extra").write_text("")  # the writer goes on: the folder changes
    (folder / "detector.json").write_text('{"version": "v2"}')
    now[0] = 18.0
    assert reg.detector(key).version == "v2"


def test_a_restore_looks_at_the_disk_even_while_this_member_fits_the_key(tmp_path):
    """Found in review: a member fitting stream a, which a rebalance moved away and back meanwhile, answered 'no
    detector' to the restore of the state the other member had saved with its detector, and the state was
    deleted."""
    def slow_fit(train, config):
        time.sleep(0.5)
        return _Saved("mine")

    mine = DetectorRegistry(tmp_path / "models", {"sensor": None}, background=True, loader=_load, fitter=slow_fit)
    key = mine.key_for("sensor", "a")
    mine.fit(key, np.zeros(64))
    theirs = _registry(tmp_path, "theirs")
    theirs.fit(key, np.zeros(64))
    theirs.poll()
    assert mine.fitting(key)
    assert mine.detector(key) is None  # the scoring path waits for its own fit
    assert mine.detector(key, fresh=True).version == "theirs"
    mine.wait()
