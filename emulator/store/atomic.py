"""Crash-safe directory commits: write in staging, (optionally) fsync, rename, then record metadata.

A reader never sees a half-written checkpoint: the final directory appears in one rename, and
the metadata row that makes it visible is committed after it. A crash in between leaves an
orphan directory with no row; `sweep_orphans` removes it at the next start. A crash of the
emulator process loses nothing either way (written data is in the kernel's page cache); the
fsync (Settings.fsync, `fwemu serve --fsync`) is what makes a commit survive power loss.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every regular file under root, then the directories bottom-up."""
    dirs = []
    for dirpath, _dirnames, filenames in os.walk(root):
        dirs.append(Path(dirpath))
        for name in filenames:
            p = Path(dirpath, name)
            if p.is_symlink():
                continue
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for d in reversed(dirs):
        fsync_dir(d)


def publish_dir(staging: Path, final: Path, *, fsync: bool = True) -> None:
    """Move a fully written staging directory to its final place in one rename."""
    if fsync:
        fsync_tree(staging)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staging, final)
    if fsync:
        fsync_dir(final.parent)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def link_or_copy_tree(src: Path, dst: Path) -> None:
    """Give dst the same files as src: hard links when possible (blobs are immutable), else copies."""
    dst.mkdir(parents=True, exist_ok=False)
    for entry in os.scandir(src):
        if not entry.is_file(follow_symlinks=False):
            raise ValueError(f"{entry.name}: not a regular file")
        target = dst / entry.name
        try:
            os.link(entry.path, target)
        except OSError:
            shutil.copyfile(entry.path, target)
