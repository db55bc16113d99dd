"""fsync helpers for what the monitor writes before it commits offsets or publishes a model.

A rename or replace is atomic for a crash of the process (the page cache survives it), but after a power loss a
renamed name can point at data that never reached the disk unless the file was fsynced before and its folder after.
"""
from __future__ import annotations

import os
from pathlib import Path


def _fsync(path: str | Path) -> None:
    """fsync one file or folder (a folder's fsync puts the names created or renamed in it on disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_directory(path: str | Path) -> None:
    """fsync a folder, so that the names created or renamed in it are on disk."""
    _fsync(path)


def sync_tree(root: str | Path) -> None:
    """fsync every file under ``root``, then every folder (deepest first, ``root`` last)."""
    folders = []
    for folder, _dirs, files in os.walk(root):
        folders.append(folder)
        for name in files:
            _fsync(os.path.join(folder, name))
    for folder in reversed(folders):
        _fsync(folder)
