"""Run metadata: which commit, and — when the tree was dirty — which tracked files differed."""
from __future__ import annotations

import subprocess

from benchmarks import runinfo


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_start_run_names_the_changed_tracked_files(tmp_path, monkeypatch):
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "result.json").write_text("{}\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    monkeypatch.setattr(runinfo, "REPO", tmp_path)
    clean, _ = runinfo.start_run(["bench"])
    assert clean.git_dirty is False and clean.git_changed == [] and len(clean.git_commit or "") == 40
    (tmp_path / "result.json").write_text('{"score": 1}\n')
    (tmp_path / "untracked.txt").write_text("ignored\n")
    (tmp_path / "code.py").rename(tmp_path / "renamed file.py")
    _git(tmp_path, "add", "code.py", "renamed file.py")  # a staged rename, and result.json changed but not staged
    dirty, started = runinfo.start_run(["bench"])
    assert dirty.git_dirty is True and not dirty.git_changed_truncated
    assert sorted(dirty.git_changed) == ["renamed file.py", "result.json"]  # a path with a space comes through
    assert "untracked.txt" not in runinfo.finish_run(dirty, started).to_dict()["git_changed"]
    monkeypatch.setattr(runinfo, "MAX_CHANGED", 1)
    cut, _ = runinfo.start_run(["bench"])
    assert len(cut.git_changed) == 1 and cut.git_changed_truncated
