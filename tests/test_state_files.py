"""Per-stream state files with an append-only journal (streamer/state_files.py): exact round trips, only new
elements written, and a readable state whatever point a crash interrupts a write at."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from models.calibration import AnomalyLikelihood
from models.detector.online import OnlineGaussian
from models.types import AppendOnlySeries
from models.detector.state_json import pack_state
from streamer.state_files import COMPACT_RATIO, StateFileError, StateFiles, encode_samples, read_journal


class Stream:
    """A detector-like state: nine likelihood histories, a Gaussian buffer, small inline parts."""

    def __init__(self, seed: int = 0, window: int = 500) -> None:
        self.rng = np.random.default_rng(seed)
        self.likelihood = AnomalyLikelihood(historic_window=window, learning_period=20, channels=9)
        self.gaussian = OnlineGaussian(window=window // 2, step=10)
        self.n = 0

    def feed(self, n: int) -> None:
        self.likelihood.transform(self.rng.random((9, n)))
        self.gaussian.update(self.rng.normal(size=n))
        self.n += n

    def state(self) -> dict:
        return {"received": self.n, "tail": self.rng.random(5), "label": "x",
                "likelihoods": self.likelihood.channel_states(), "gaussian": self.gaussian.state_dict()}


def same(read: dict, state: dict) -> None:
    """``read`` holds exactly ``state``'s numbers (series as arrays, everything else as the inline encoding)."""
    def walk(a, b):
        if isinstance(b, AppendOnlySeries):
            np.testing.assert_array_equal(np.asarray(a), b.values)
        elif isinstance(b, np.ndarray):
            np.testing.assert_array_equal(np.asarray(a), b)
        elif isinstance(b, dict):
            assert set(a) == set(b)
            for k in b:
                walk(a[k], b[k])
        elif isinstance(b, list):
            assert len(a) == len(b)
            for x, y in zip(a, b):
                walk(x, y)
        else:
            assert a == b
    walk(read, state)


def journals(folder):
    return sorted(p for p in folder.iterdir() if p.name.endswith(".journal"))


def saved_once(tmp_path, n: int):
    """A stream of ``n`` samples written once: (the writer, the state written)."""
    s = Stream()
    s.feed(n)
    state = s.state()
    files = StateFiles()
    files.write([(tmp_path / "a.json", state, 1)])
    return files, state


def test_a_state_reads_back_bit_for_bit(tmp_path):
    files, state = saved_once(tmp_path, 700)
    same(files.read(tmp_path / "a.json"), state)
    same(StateFiles().read(tmp_path / "a.json"), state)  # another process reads it too
    assert len(journals(tmp_path)) == 1
    assert (tmp_path / "a.json").stat().st_size < 5_000  # the series are in the journal, not the JSON


def test_a_checkpoint_appends_only_what_is_new(tmp_path):
    s = Stream()
    s.feed(600)
    files = StateFiles()
    files.write([(tmp_path / "a.json", s.state(), 1)])
    (journal,) = journals(tmp_path)
    before = journal.stat().st_size
    s.feed(7)
    state = s.state()
    files.write([(tmp_path / "a.json", state, 1)])
    assert journals(tmp_path) == [journal]
    grown = journal.stat().st_size - before
    assert 10 * 7 * 8 <= grown < 10 * 7 * 8 + 10 * 120  # ten series x 7 new elements (+ record headers)
    same(files.read(tmp_path / "a.json"), state)
    s.feed(0)
    files.write([(tmp_path / "a.json", s.state(), 1)])  # nothing new: nothing appended
    assert journal.stat().st_size == before + grown


def test_a_grown_journal_is_replaced_by_a_new_generation(tmp_path):
    s = Stream(window=200)
    files = StateFiles()
    seen = set()
    for _ in range(40):
        s.feed(37)
        state = s.state()
        files.write([(tmp_path / "a.json", state, 1)])
        (journal,) = journals(tmp_path)  # the old generation is gone once the JSON left it
        seen.add(journal.name)
        needed = 8 * (9 * 200 + 211)
        assert journal.stat().st_size <= (COMPACT_RATIO + 1) * max(needed, 64 * 1024) + 10 * (37 * 8 + 120)
        same(files.read(tmp_path / "a.json"), state)
    assert len(seen) > 1


def saved_twice(tmp_path, first: int, then: int):
    """A stream written twice by one writer: (the writer, the stream, the second — durable — state)."""
    s = Stream()
    s.feed(first)
    files = StateFiles()
    files.write([(tmp_path / "a.json", s.state(), 1)])
    s.feed(then)
    durable = s.state()
    files.write([(tmp_path / "a.json", durable, 1)])
    return files, s, durable


def test_a_crash_between_journal_and_json_leaves_the_previous_state_readable(tmp_path, monkeypatch):
    files, s, durable = saved_twice(tmp_path, 600, 50)
    s.feed(50)

    def crash(self, target):
        raise OSError("power cut")
    with monkeypatch.context() as m:
        m.setattr(type(tmp_path), "replace", crash)
        with pytest.raises(OSError):
            files.write([(tmp_path / "a.json", s.state(), 1)])  # the journal got the new records, the JSON not
    same(StateFiles().read(tmp_path / "a.json"), durable)
    s.feed(50)
    state = s.state()
    files.write([(tmp_path / "a.json", state, 1)])  # the same process goes on: a new generation
    same(StateFiles().read(tmp_path / "a.json"), state)
    assert len(journals(tmp_path)) == 1


def test_a_torn_record_ends_the_journal_and_a_corrupt_referenced_one_is_an_error(tmp_path):
    files, state = saved_once(tmp_path, 600)
    (journal,) = journals(tmp_path)
    whole = journal.read_bytes()
    with open(journal, "ab") as fh:  # a crash mid-append: half a record after what the JSON references
        fh.write(whole[:100])
    same(files.read(tmp_path / "a.json"), state)
    assert len(read_journal(journal)) == 10
    broken = bytearray(whole)
    broken[len(whole) // 2] ^= 0xFF
    journal.write_bytes(bytes(broken))
    with pytest.raises(StateFileError, match="lacks"):
        files.read(tmp_path / "a.json")


def test_a_new_lineage_never_continues_the_old_ones_series(tmp_path):
    """A stream refitted (or re-created) in the same process has new series that may be longer than the old:
    appending only the elements past the old end would splice two histories."""
    old, new = Stream(seed=1), Stream(seed=2)
    old.feed(300)
    files = StateFiles()
    files.write([(tmp_path / "a.json", old.state(), 1)])
    new.feed(320)
    state = new.state()
    files.write([(tmp_path / "a.json", state, 2)])
    same(files.read(tmp_path / "a.json"), state)
    assert len(journals(tmp_path)) == 1


def test_a_state_without_series_leaves_no_journal_behind(tmp_path):
    s = Stream()
    s.feed(300)
    files = StateFiles()
    files.write([(tmp_path / "a.json", s.state(), 1)])
    training = {"detector": None, "training": encode_samples(np.arange(3), np.ones(3)), "received": 3}
    StateFiles().write([(tmp_path / "a.json", training, 0)])  # another process: finds the old one from the JSON
    assert journals(tmp_path) == []
    assert StateFiles().read(tmp_path / "a.json") == json.loads(json.dumps(training))


def test_an_inline_state_from_before_the_journal_still_reads(tmp_path):
    s = Stream()
    s.feed(300)
    state = s.state()
    (tmp_path / "a.json").write_text(json.dumps(pack_state(state)))
    same(StateFiles().read(tmp_path / "a.json"), state)
    files = StateFiles()
    files.write([(tmp_path / "a.json", state, 1)])  # and is replaced by the journaled form
    same(files.read(tmp_path / "a.json"), state)


def test_remove_takes_only_this_streams_files(tmp_path):
    files = StateFiles()
    for name, seed in (("a", 1), ("a.b", 2)):
        s = Stream(seed=seed)
        s.feed(100)
        files.write([(tmp_path / f"{name}.json", s.state(), seed)])
    files.remove(tmp_path / "a.json")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".journal")) == ["a.b.json"]
    assert len(journals(tmp_path)) == 1
    StateFiles().read(tmp_path / "a.b.json")


def test_a_journal_reference_cannot_leave_the_state_folder(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"journal": "../x.journal", "received": 1}))
    with pytest.raises(StateFileError, match="invalid journal"):
        StateFiles().read(tmp_path / "a.json")


def test_a_failed_write_raises_and_the_next_one_starts_clean(tmp_path, monkeypatch):
    files, s, durable = saved_twice(tmp_path, 300, 10)

    def full_disk(fd):
        raise OSError(28, "No space left on device")
    s.feed(10)
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full_disk)
        with pytest.raises(OSError, match="No space"):
            files.write([(tmp_path / "a.json", s.state(), 1)])
    same(StateFiles().read(tmp_path / "a.json"), durable)
    s.feed(10)
    state = s.state()
    files.write([(tmp_path / "a.json", state, 1)])
    same(StateFiles().read(tmp_path / "a.json"), state)
    assert len(journals(tmp_path)) == 1


def test_streams_that_started_together_rewrite_their_journals_at_different_checkpoints(tmp_path):
    streams = [Stream(seed=k, window=2000) for k in range(8)]
    files = StateFiles()
    rewrites: dict[int, int] = {}
    for checkpoint in range(60):
        for k, s in enumerate(streams):
            s.feed(100)
            before = {p.name for p in journals(tmp_path) if p.name.startswith(f"s{k}.")}
            files.write([(tmp_path / f"s{k}.json", s.state(), k)])
            after = {p.name for p in journals(tmp_path) if p.name.startswith(f"s{k}.")}
            if before and after != before:
                rewrites.setdefault(k, checkpoint)
    assert len(rewrites) == 8 and len(set(rewrites.values())) >= 4  # the first rewrite of each, spread out


def test_more_new_elements_than_a_series_holds_are_written_from_its_oldest(tmp_path):
    s = Stream(window=200)
    s.feed(300)
    files = StateFiles()
    files.write([(tmp_path / "a.json", s.state(), 1)])
    s.feed(500)  # the history dropped values that were never written
    state = s.state()
    files.write([(tmp_path / "a.json", state, 1)])
    same(StateFiles().read(tmp_path / "a.json"), state)


def test_the_old_generation_stays_until_the_json_has_left_it(tmp_path, monkeypatch):
    s = Stream(window=200)
    files = StateFiles()
    s.feed(300)
    durable = s.state()
    files.write([(tmp_path / "a.json", durable, 1)])

    def crash(self, target):
        raise OSError("power cut")
    s.feed(10)
    with monkeypatch.context() as m:
        m.setattr(type(tmp_path), "replace", crash)
        with pytest.raises(OSError):
            files.write([(tmp_path / "a.json", s.state(), 2)])  # a new lineage: a new generation, then the crash
    same(StateFiles().read(tmp_path / "a.json"), durable)
    assert len(journals(tmp_path)) == 1  # the unreferenced new generation was removed


def test_after_a_failed_write_the_next_one_starts_a_new_generation(tmp_path, monkeypatch):
    s = Stream()
    s.feed(300)
    files = StateFiles()
    files.write([(tmp_path / "a.json", s.state(), 1)])
    (before,) = journals(tmp_path)
    real = os.fsync
    calls = []

    def fail_second(fd):  # the journal's append is synced, the JSON's write is not
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(5, "I/O error")
        real(fd)
    s.feed(10)
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", fail_second)
        with pytest.raises(OSError):
            files.write([(tmp_path / "a.json", s.state(), 1)])
    s.feed(10)
    state = s.state()
    files.write([(tmp_path / "a.json", state, 1)])
    (after,) = journals(tmp_path)
    assert after != before  # what the failed write appended is never built on
    same(StateFiles().read(tmp_path / "a.json"), state)


@pytest.mark.parametrize("change", ["fewer series", "a series went back"])
def test_a_state_that_does_not_continue_the_journal_gets_a_new_generation(tmp_path, change):
    s = Stream(window=200)
    s.feed(300)
    files = StateFiles()
    files.write([(tmp_path / "a.json", s.state(), 1)])
    (before,) = journals(tmp_path)
    state = s.state()
    if change == "fewer series":
        del state["gaussian"]
    else:
        old = state["likelihoods"][0]["history"]
        state["likelihoods"][0]["history"] = AppendOnlySeries(old.values[:-5], end=old.end - 5)
    files.write([(tmp_path / "a.json", state, 1)])
    (after,) = journals(tmp_path)
    assert after != before
    same(StateFiles().read(tmp_path / "a.json"), state)


def test_a_stream_handed_to_another_worker_and_back_reads_and_leaves_one_journal(tmp_path):
    """Two workers share the folder: A saves a stream, a rebalance gives it to B, which restores and saves it
    (a new generation), then it comes back to A, whose memory of the journal is stale."""
    a, b = StateFiles(), StateFiles()
    s = Stream()
    s.feed(300)
    first = s.state()
    a.write([(tmp_path / "a.json", first, 1)])
    same(b.read(tmp_path / "a.json"), first)
    s.feed(20)
    b.write([(tmp_path / "a.json", s.state(), 7)])
    s.feed(20)
    state = s.state()
    a.write([(tmp_path / "a.json", state, 1)])  # A's stale save (same lineage): must not append to B's file
    same(StateFiles().read(tmp_path / "a.json"), state)
    assert len(journals(tmp_path)) == 1


def test_a_late_save_never_recreates_a_deleted_journal_half_empty(tmp_path, monkeypatch):
    """A's checkpoint still in flight when B, the stream's new owner, has switched it to a new generation."""
    a, b = StateFiles(), StateFiles()
    s = Stream()
    s.feed(300)
    a.write([(tmp_path / "a.json", s.state(), 1)])
    s.feed(20)
    b.write([(tmp_path / "a.json", s.state(), 7)])  # deletes A's generation
    s.feed(20)
    state = s.state()
    monkeypatch.setattr(StateFiles, "_continues", staticmethod(lambda *args: True))  # A checked before B switched
    a.write([(tmp_path / "a.json", state, 1)])
    same(StateFiles().read(tmp_path / "a.json"), state)


def test_a_reader_follows_the_json_to_a_new_generation(tmp_path, monkeypatch):
    import streamer.state_files as state_files

    s = Stream()
    s.feed(300)
    StateFiles().write([(tmp_path / "a.json", s.state(), 1)])
    s.feed(20)
    state = s.state()
    real = state_files.read_journal
    switched = []

    def switch_then_read(path):
        if not switched:  # another worker writes a new generation between our two reads
            switched.append(path)
            StateFiles().write([(tmp_path / "a.json", state, 2)])
        return real(path)
    monkeypatch.setattr(state_files, "read_journal", switch_then_read)
    same(StateFiles().read(tmp_path / "a.json"), state)
    assert switched and not switched[0].exists()


def test_generations_a_crash_left_behind_are_swept_once_old(tmp_path):
    s = Stream()
    s.feed(300)
    StateFiles().write([(tmp_path / "a.json", s.state(), 1)])
    old_orphan, young_orphan = tmp_path / f"a.{'0' * 32}.journal", tmp_path / f"a.{'1' * 32}.journal"
    other_stream = tmp_path / f"a.b.{'2' * 32}.journal"
    for f in (old_orphan, young_orphan, other_stream):
        f.write_bytes(b"x")
    hour_ago = time.time() - 3600
    for f in (old_orphan, other_stream):
        os.utime(f, (hour_ago, hour_ago))
    s.feed(10)
    state = s.state()
    StateFiles().write([(tmp_path / "a.json", state, 1)])  # a new process's first write of the stream
    assert not old_orphan.exists() and young_orphan.exists() and other_stream.exists()
    same(StateFiles().read(tmp_path / "a.json"), state)


def _many(n: int, samples: int = 300) -> list[Stream]:
    streams = [Stream(seed=i) for i in range(n)]
    for s in streams:
        s.feed(samples)
    return streams


def test_many_streams_in_one_checkpoint_read_back_and_each_sweeps_only_its_own_orphans(tmp_path):
    streams = _many(40)
    hour_ago = time.time() - 3600
    for i in range(40):  # generations a crash left behind, one per stream, in the folder listed once
        orphan = tmp_path / f"s{i}.{'0' * 32}.journal"
        orphan.write_bytes(b"x")
        os.utime(orphan, (hour_ago, hour_ago))
    files = StateFiles()
    states = [s.state() for s in streams]
    files.write([(tmp_path / f"s{i}.json", state, i) for i, state in enumerate(states)])
    assert len(journals(tmp_path)) == 40  # each stream's new generation, every orphan gone
    for i, state in enumerate(states):
        same(StateFiles().read(tmp_path / f"s{i}.json"), state)
    sizes = {p.name: p.stat().st_size for p in journals(tmp_path)}
    for s in streams:
        s.feed(10)
    states = [s.state() for s in streams]
    files.write([(tmp_path / f"s{i}.json", state, i) for i, state in enumerate(states)])
    grown = {p.name: p.stat().st_size for p in journals(tmp_path)}
    assert grown.keys() == sizes.keys() and all(grown[k] > sizes[k] for k in sizes)  # appended, not rewritten
    for i, state in enumerate(states):
        same(StateFiles().read(tmp_path / f"s{i}.json"), state)


def test_a_stream_that_fails_among_many_raises_and_every_state_on_disk_stays_whole(tmp_path, monkeypatch):
    """A checkpoint writes its streams in order and stops at the first failure: what is on disk is each stream's
    new state or its previous one, whole, and the next checkpoint writes them all."""
    streams = _many(24)
    files = StateFiles()
    durable = [s.state() for s in streams]
    files.write([(tmp_path / f"s{i}.json", state, i) for i, state in enumerate(durable)])
    for s in streams:
        s.feed(10)
    new = [s.state() for s in streams]
    real_fsync = os.fsync

    def failing_fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").split("/")[-1].startswith("s7."):
            raise OSError(5, "Input/output error")
        real_fsync(fd)
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", failing_fsync)
        with pytest.raises(OSError, match="Input/output"):
            files.write([(tmp_path / f"s{i}.json", state, i) for i, state in enumerate(new)])
    for i in range(24):  # the streams before it hold their new state, it and those after it their previous one
        same(StateFiles().read(tmp_path / f"s{i}.json"), new[i] if i < 7 else durable[i])
    files.write([(tmp_path / f"s{i}.json", state, i) for i, state in enumerate(new)])  # the next checkpoint
    for i, state in enumerate(new):
        same(StateFiles().read(tmp_path / f"s{i}.json"), state)
    assert len(journals(tmp_path)) == 24
