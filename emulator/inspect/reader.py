"""Reading a checkpoint directory: the flat file list, bounded reads, and the byte count.

All disk access of the inspector goes through `CheckpointDir`, so that:
- the directory is listed once, with lstat (a symlink is seen as a symlink, never followed);
- every file is opened with O_NOFOLLOW and checked to still be the regular file that was listed
  (a file swapped for a link or a FIFO between listing and reading is refused, not followed);
- every byte read is counted in `bytes_read`, and the total is capped, so a verdict costs
  headers and metadata only, whatever the size of the weights.

A broken rule is signalled by raising `Rejected(file, rule, hint)`; `classify` turns it into a
rejection `Verdict`. Nothing here raises anything else for bad content.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass

from .names import MAX_FILES, MAX_TOTAL_READ, shown


class Rejected(Exception):
    """A rule was broken: `file` is the offending name (or "."), `rule` says which, `hint` what to do."""

    def __init__(self, file: str, rule: str, hint: str | None = None):
        super().__init__(f"{file}: {rule}")
        self.file = file
        self.rule = rule
        self.hint = hint

    @property
    def reason(self) -> str:
        return f"{shown(self.file)}: {self.rule}"


@dataclass(frozen=True)
class Entry:
    """One directory entry, as lstat saw it."""

    name: str
    mode: int
    size: int
    mtime_ns: int

    @property
    def is_regular(self) -> bool:
        return stat.S_ISREG(self.mode)


def list_entries(root: str | os.PathLike, cap: int | None = None) -> list[Entry]:
    """lstat every entry of `root` (no recursion, links not followed), sorted by name.

    Stops after `cap + 1` entries so that a directory with millions of files costs no more than
    the cap; the caller sees `len(result) > cap` and rejects.
    """
    out: list[Entry] = []
    with os.scandir(root) as it:
        for de in it:
            st = de.stat(follow_symlinks=False)
            out.append(Entry(de.name, st.st_mode, st.st_size, st.st_mtime_ns))
            if cap is not None and len(out) > cap:
                break
    out.sort(key=lambda e: e.name)
    return out


class CheckpointDir:
    """A checkpoint directory being inspected: its entries, and counted, bounded reads."""

    def __init__(self, root: str | os.PathLike, trace: list | None = None):
        self.root = os.fspath(root)
        self.bytes_read = 0
        self.trace = trace  # when a list: every read is appended as (name, offset, bytes got)
        try:
            st = os.lstat(self.root)
        except FileNotFoundError:
            raise Rejected(".", "does not exist") from None
        except OSError as e:
            raise Rejected(".", f"cannot be read ({e.strerror})") from None
        if stat.S_ISLNK(st.st_mode):
            raise Rejected(".", "the checkpoint path is a symbolic link; links are never followed")
        if not stat.S_ISDIR(st.st_mode):
            raise Rejected(".", "not a directory; a checkpoint is a directory of files")
        try:
            entries = list_entries(self.root, cap=MAX_FILES)
        except OSError as e:
            raise Rejected(".", f"cannot be listed ({e.strerror})") from None
        if len(entries) > MAX_FILES:
            raise Rejected(".", f"more than {MAX_FILES} entries; refusing to inspect")
        self.entries: dict[str, Entry] = {e.name: e for e in entries}

    # -- reads -------------------------------------------------------------------------------

    def size(self, name: str) -> int:
        return self.entries[name].size

    def read(self, name: str, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset` of regular file `name`; Rejected if the file is shorter."""
        if length < 0 or offset < 0:
            raise Rejected(name, "negative read requested")
        if self.bytes_read + length > MAX_TOTAL_READ:
            raise Rejected(name, f"inspection would read more than {MAX_TOTAL_READ} bytes of "
                                 "headers and metadata in total; refusing")
        entry = self.entries.get(name)
        if entry is None or not entry.is_regular:
            raise Rejected(name, "missing")
        path = os.path.join(self.root, name)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError as e:
            raise Rejected(name, f"cannot be opened ({e.strerror})") from None
        chunks: list[bytes] = []
        got = 0
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
                raise Rejected(name, "changed while being inspected")
            while got < length:
                chunk = os.pread(fd, min(length - got, 16 * 1024 * 1024), offset + got)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
                self.bytes_read += len(chunk)
        except OSError as e:
            raise Rejected(name, f"cannot be read ({e.strerror})") from None
        finally:
            os.close(fd)
            if self.trace is not None:
                self.trace.append((name, offset, got))
        data = b"".join(chunks)
        if len(data) != length:
            raise Rejected(name, f"truncated: needed {length} bytes at offset {offset}, "
                                 f"the file holds {entry.size}")
        return data

    def read_small(self, name: str, cap: int) -> bytes:
        """The whole of a small file (JSON, pickle metadata); Rejected if it is over `cap` bytes."""
        size = self.size(name)
        if size > cap:
            raise Rejected(name, f"{size} bytes, over the {cap}-byte cap for this file")
        return self.read(name, 0, size)

    def read_json(self, name: str, cap: int) -> object:
        """Parse a small JSON file strictly: UTF-8, no duplicate keys."""
        return loads_strict(self.read_small(name, cap), name)


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def loads_strict(raw: bytes, name: str, what: str = "JSON") -> object:
    """json.loads that rejects invalid UTF-8 and duplicate keys (which json.loads would silently merge)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Rejected(name, f"{what} is not valid UTF-8 (byte {e.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as e:
        raise Rejected(name, f"duplicate key {e.key!r} in the {what}") from None
    except json.JSONDecodeError as e:
        raise Rejected(name, f"{what} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (ValueError, RecursionError) as e:
        raise Rejected(name, f"{what} is not valid JSON ({type(e).__name__})") from None
