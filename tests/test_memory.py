"""The default stream cap follows the worker's memory limit (streamer/memory.py)."""
from __future__ import annotations

from streamer import memory
from streamer.assemble import build_processor
from streamer.config import MonitorSettings

GIB = 2**30


def test_the_limit_is_the_cgroups_when_it_is_set_else_the_machines(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "_physical_bytes", lambda: 64 * GIB)
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert memory.memory_limit_bytes((v2, v1)) == 64 * GIB  # neither file: the machine
    v2.write_text("max\n")  # cgroup v2 without a limit
    v1.write_text(f"{2**63 - 4096}\n")  # cgroup v1 without a limit
    assert memory.memory_limit_bytes((v2, v1)) == 64 * GIB
    v1.write_text(f"{4 * GIB}\n")
    assert memory.memory_limit_bytes((v2, v1)) == 4 * GIB
    v2.write_text(f"{2 * GIB}\n")
    assert memory.memory_limit_bytes((v2, v1)) == 2 * GIB


def test_the_limit_of_the_processs_own_cgroup_and_of_its_parents_counts(tmp_path, monkeypatch):
    """A systemd unit's MemoryMax= (or a host's cgroup namespace) sits below the cgroup root: reading only the
    root's files found no limit there and took the machine's memory."""
    monkeypatch.setattr(memory, "_physical_bytes", lambda: 64 * GIB)
    proc = tmp_path / "cgroup"
    proc.write_text("12:pids:/system.slice/sw.service\n4:memory:/system.slice/sw.service\n0::/system.slice/sw.service\n")
    root = tmp_path / "fs"
    files = memory.cgroup_limit_files(proc, root)
    assert files == [root / "memory/system.slice/sw.service/memory.limit_in_bytes",
                     root / "memory/system.slice/memory.limit_in_bytes", root / "memory/memory.limit_in_bytes",
                     root / "system.slice/sw.service/memory.max", root / "system.slice/memory.max",
                     root / "memory.max"]
    (root / "system.slice/sw.service").mkdir(parents=True)
    (root / "system.slice/sw.service/memory.max").write_text("max\n")
    (root / "system.slice/memory.max").write_text(f"{3 * GIB}\n")  # the parent's limit binds the unit
    (root / "memory.max").write_text("max\n")
    assert memory.memory_limit_bytes(files) == 3 * GIB
    assert memory.cgroup_limit_files(tmp_path / "missing", root) == [root / "memory.max",
                                                                     root / "memory/memory.limit_in_bytes"]


def test_a_small_worker_holds_fewer_streams_than_the_old_fixed_cap():
    """10,000 streams with per-stream models need ~25 GB: a 4 GiB worker was killed for memory after about 1,400
    busy streams, and again after every restart."""
    four = memory.default_max_streams(per_stream_models=True, limit_bytes=4 * GIB)
    assert 1_000 < four < 1_400
    assert memory.PROCESS_BASE_MB + four * (memory.STREAM_STATE_MB + memory.STREAM_MODEL_MB) <= 4 * 1024
    assert memory.default_max_streams(per_stream_models=False, limit_bytes=4 * GIB) > 2 * four  # no model each
    assert memory.default_max_streams(per_stream_models=True, limit_bytes=64 * GIB) == memory.DEFAULT_MAX_STREAMS
    assert memory.default_max_streams(per_stream_models=True, limit_bytes=512 * 2**20) == 1  # never none


def test_the_processor_takes_the_memory_cap_unless_one_is_set(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "memory_limit_bytes", lambda: 4 * GIB)
    fitting = memory.streams_that_fit(4 * GIB, per_stream_models=True)
    assert build_processor(MonitorSettings(model_dir=tmp_path), background=False).max_streams == fitting
    chosen = build_processor(MonitorSettings(model_dir=tmp_path, max_streams=5000), background=False)
    assert chosen.max_streams == 5000


def test_a_stream_collecting_a_long_training_part_counts_as_the_streams_its_buffer_would_hold(tmp_path):
    """The audio preset collects 100 s at 16 kHz (24 MB) before it fits: counted as one stream of the cap, a few
    hundred new audio streams outgrew a worker sized for the cap."""
    from models.detector import preset

    audio = preset("audio").train_samples * memory.BUFFERED_SAMPLE_BYTES / 2**20
    per_stream = memory.STREAM_STATE_MB + memory.STREAM_MODEL_MB
    weight = memory.training_weight(preset("audio").train_samples)
    # The contract, not the formula: the room a collecting audio stream takes covers its buffer, and not by more
    # than one busy stream's room; a nab stream's 750 samples take no more room than a busy stream.
    assert (weight - 1) * per_stream <= audio < weight * per_stream
    assert weight >= 10
    assert memory.training_weight(preset("nab").train_samples) == 1
    proc = build_processor(MonitorSettings(model_dir=tmp_path / "own"), background=False)
    assert proc.training_weights == {"sensor": 1, "audio": weight}
    # A shared model: a unit is one stream's state (no model of its own), so a collecting audio stream counts as
    # more of them; the streams that come after the class's detector collect nothing (test_stream_pipeline).
    shared = build_processor(MonitorSettings(model_dir=tmp_path / "shared", model_mode="shared"), background=False)
    shared_weight = memory.training_weight(preset("audio").train_samples, per_stream_models=False)
    assert (shared_weight - 1) * memory.STREAM_STATE_MB <= audio < shared_weight * memory.STREAM_STATE_MB
    assert shared.training_weights == {"sensor": 1, "audio": shared_weight}


def test_a_cap_below_an_audio_streams_training_weight_is_warned_about(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="streamer.assemble"):
        build_processor(MonitorSettings(model_dir=tmp_path / "small", max_streams=5), background=False)
    assert any("raise MAX_STREAMS" in r.getMessage() and "audio" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="streamer.assemble"):
        build_processor(MonitorSettings(model_dir=tmp_path / "large", max_streams=500), background=False)
    assert not any("raise MAX_STREAMS" in r.getMessage() for r in caplog.records)


def test_a_nab_stream_with_its_detector_is_one_unit_of_the_cap():
    """The cap's unit was measured on a ``nab`` stream; its detector must weigh one, or every sensor stream would
    count double."""
    import numpy as np
    from stream_models import quick_fit

    from models.detector import preset

    x = 5 + np.sin(np.arange(preset("nab").train_samples) / 4.0)
    fitted = quick_fit(x, preset("nab"))
    assert fitted.nbytes < memory.STREAM_MODEL_MB * 2**20
    assert memory.fitted_weight(fitted.nbytes) == 1


def test_a_stream_in_training_counts_as_the_detector_it_will_be_fitted_into(tmp_path):
    """Streams that arrive together are let in while they collect their training parts, before any is fitted: with
    training parts of tens of thousands of samples, each then fits a detector of 48–295 MB (its discord windows),
    which the cap would count only after the fits — too late. A stream in training counts as the largest detector
    its configuration can fit."""
    import numpy as np
    from stream_models import quick_fit

    from models.detector import preset

    long = build_processor(MonitorSettings(model_dir=tmp_path / "long", sensor_preset="ucr",
                                           sensor_detector_options={"train_samples": 30_000}), background=False)
    bound = preset("ucr").discord_bytes_bound(30_000)
    assert long.training_weights["sensor"] == memory.fitted_weight(bound) >= 60
    shared = build_processor(MonitorSettings(model_dir=tmp_path / "shared", sensor_preset="ucr", model_mode="shared",
                                             sensor_detector_options={"train_samples": 30_000}), background=False)
    # with a shared model the class's one detector is part of the process's base: a stream counts as its buffer
    assert shared.training_weights["sensor"] == memory.training_weight(30_000, per_stream_models=False) < 60
    # the bound holds a real fit's discord windows (the window the period gives, at most max_window)
    x = 5 + np.sin(np.arange(3000) * 2 * np.pi / 200) + 0.05 * np.random.default_rng(0).standard_normal(3000)
    fitted = quick_fit(x, preset("ucr"))
    kept = sum(d.nbytes for d in fitted.discords.values())
    assert kept <= preset("ucr").discord_bytes_bound(3000) < 3 * kept
