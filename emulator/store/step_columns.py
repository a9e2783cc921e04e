"""Columnar sidecar of a step log: what the job page charts, readable without decoding any JSON.

Why: the first job page after a restart had to JSON-decode the whole metrics log (~55 ms for
10,000 steps) only to count the steps and draw two columns. Beside each `<create_us>.jsonl` the
log also writes, per record, one fixed-size binary entry (`<create_us>.cols`: the record's byte
span in the log, its series id, loss per token and gradient norm) and, per new series, one line
in `<create_us>.series` (`{"id", "gen", "model"}`).

The sidecar is derived data; the log stays the truth:
* an entry is written only after its log line was written whole, so a crash leaves at most log
  lines without entries. The reader parses every log byte no entry covers (a gap between two
  entries, or the tail), so such lines are never lost and torn fragments are skipped as before;
* entries that do not fit the log (a span past its end, spans out of order, a header naming
  another log inode, a torn series table) make the reader rebuild both files from the log, under
  the log's append lock, and write them atomically (temp file + rename).
The per-record numbers come from `metrics_log.chart_point`, the same function the JSON path uses,
so both paths draw the same chart (a test compares them).
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

MAGIC = b"FWSC1\0\0\0"
HEADER = struct.Struct("<8sQ")      # magic, inode of the log the entries describe
ENTRY = struct.Struct("<QQQdd")     # start, end (log byte span), series id, loss, norm (NaN: none)
FIELDS = 5                          # 8-byte fields per entry: the entries decode as columns
MAX_SERIES_BYTES = 1 << 20          # a series table past this is not ours: rebuild

Key = tuple  # (generation, model id) of a series, as metrics_log.series_of groups records


@dataclass
class Columns:
    """A log's charted columns as far as `covered` (log bytes up to there are accounted for)."""
    log_ino: int
    entries_read: int = 0          # sidecar bytes consumed (header included)
    covered: int = 0               # log offset up to which every line is in `series`
    count: int = 0                 # records counted (complete JSON objects of the log)
    series: dict = field(default_factory=dict)   # key -> (losses, norms), in order of first record

    def add(self, key: Key, loss: float | None, norm: float | None) -> None:
        cols = self.series.get(key)
        if cols is None:
            cols = self.series[key] = ([], [])
        cols[0].append(loss)
        cols[1].append(norm)
        self.count += 1

    def copy(self) -> "Columns":
        return Columns(self.log_ino, self.entries_read, self.covered, self.count,
                       {k: (list(a), list(b)) for k, (a, b) in self.series.items()})


def paths(log_path: Path) -> tuple[Path, Path]:
    return log_path.with_suffix(".cols"), log_path.with_suffix(".series")


def _nan_if_none(v: float | None) -> float:
    return math.nan if v is None else float(v)


class SidecarWriter:
    """Appends entries for one StepLog; every call runs under the log's append lock."""

    def __init__(self, fsync: bool):
        self.fsync = fsync
        self._series: dict[Path, dict[Key, int]] = {}   # series file -> key -> id, as on disk

    def _known(self, series_path: Path) -> dict[Key, int]:
        known = self._series.get(series_path)
        if known is None:
            known = self._series[series_path] = read_series(series_path) or {}
        return known

    def append(self, log_path: Path, log_ino: int, start: int, end: int, key: Key,
               loss: float | None, norm: float | None) -> None:
        cols_path, series_path = paths(log_path)
        known = self._known(series_path)
        sid = known.get(key)
        if sid is None:  # a new series: look at the table on disk again (another writer may have grown it)
            known = self._series[series_path] = read_series(series_path) or {}
            sid = known.get(key)
        if sid is None:
            sid = max(known.values(), default=-1) + 1
            _append(series_path, _series_line(sid, key), self.fsync)
            known[key] = sid
        entry = ENTRY.pack(start, end, sid, _nan_if_none(loss), _nan_if_none(norm))
        if not cols_path.exists():
            entry = HEADER.pack(MAGIC, log_ino) + entry
        _append(cols_path, entry, self.fsync)

    def forget(self, prefix: Path | None = None) -> None:
        if prefix is None:
            self._series.clear()
        else:
            for p in [p for p in self._series if prefix in p.parents]:
                del self._series[p]

    def rewrite(self, log_path: Path, log_ino: int, spans: list[tuple[int, int, Key, float | None, float | None]]
                ) -> None:
        """Replace both sidecar files with entries for `spans` (a rebuild from the log)."""
        cols_path, series_path = paths(log_path)
        ids: dict[Key, int] = {}
        body = [HEADER.pack(MAGIC, log_ino)]
        for start, end, key, loss, norm in spans:
            sid = ids.setdefault(key, len(ids))
            body.append(ENTRY.pack(start, end, sid, _nan_if_none(loss), _nan_if_none(norm)))
        table = b"".join(_series_line(sid, key) for key, sid in ids.items())
        _replace(series_path, table, self.fsync)  # series first: entries never name an unknown id
        _replace(cols_path, b"".join(body), self.fsync)
        self._series[series_path] = ids


def _series_line(sid: int, key: Key) -> bytes:
    gen, model = key
    return json.dumps({"id": sid, "gen": gen, "model": model}, separators=(",", ":")).encode() + b"\n"


def _append(path: Path, data: bytes, fsync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _replace(path: Path, data: bytes, fsync: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_series(series_path: Path) -> dict[Key, int] | None:
    """key -> id from a series table; None when it is missing, too large or not wholly ours."""
    try:
        with open(series_path, "rb") as f:
            data = f.read(MAX_SERIES_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_SERIES_BYTES:
        return None
    out: dict[Key, int] = {}
    for line in data.split(b"\n"):
        if not line:
            continue
        try:
            r = json.loads(line)
            key, sid = (r["gen"], r["model"]), r["id"]
        except (ValueError, KeyError, TypeError):
            continue  # a torn line: its id was never used by an entry (entries follow their series line)
        if not isinstance(sid, int) or isinstance(key[1], (list, dict)):
            return None
        out[key] = sid
    return out


def load(log_path: Path, log_fd: int, log_size: int, log_ino: int, window_start: int, cached: Columns | None,
         parse_span: Callable[[bytes], list[tuple[int, int, Key, float | None, float | None]]]
         ) -> Columns | None:
    """The log's columns from its sidecar (only the entries added since `cached`), or None when the
    sidecar is missing or does not fit the log (the caller rebuilds). Log bytes that no entry
    covers are parsed with `parse_span(data)` -> [(start, end, key, loss, norm)] relative to data."""
    cols_path, series_path = paths(log_path)
    if cached is not None and cached.log_ino == log_ino and cached.covered <= log_size:
        out = cached.copy()
    else:
        out = Columns(log_ino, covered=window_start)
    try:
        fd = os.open(cols_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        if out.entries_read == 0:
            head = os.pread(fd, HEADER.size, 0)
            if len(head) < HEADER.size or HEADER.unpack(head) != (MAGIC, log_ino):
                return None
            out.entries_read = HEADER.size
        if (size - HEADER.size) % ENTRY.size:
            return None  # a torn entry: the next append would misalign every entry after it
        data = os.pread(fd, size - out.entries_read, out.entries_read) if size > out.entries_read else b""
    finally:
        os.close(fd)
    ids: dict[int, Key] = {}
    if data:
        table = read_series(series_path)
        if table is None:
            return None
        ids = {sid: key for key, sid in table.items()}
    starts, ends, sids, losses, norms = _columns_of(data)
    n, i = len(starts), 0
    while i < n and starts[i] < window_start:  # before the read window
        out.covered = max(out.covered, ends[i])
        i += 1
    prev = out.covered
    for j in range(i, n):  # spans in order, inside the log, gaps only where lines have no entry
        if ends[j] <= starts[j] or starts[j] < prev:
            return None
        prev = ends[j]
    if prev > log_size or any(sid not in ids for sid in set(sids[i:])):
        return None
    while i < n:  # runs of entries with no gap before them are added a column slice at a time
        if starts[i] > out.covered:
            _add_parsed(out, log_fd, out.covered, starts[i], parse_span)  # lines that have no entry
        j = i + 1
        while j < n and starts[j] == ends[j - 1]:
            j += 1
        _add_run(out, [ids[sid] for sid in sids[i:j]] if len(set(sids[i:j])) > 1 else ids[sids[i]],
                 losses[i:j], norms[i:j])
        out.covered = ends[j - 1]
        i = j
    out.entries_read += len(data)
    return out


def _columns_of(data: bytes) -> tuple[list, list, list, list, list]:
    """The entries' five fields as five lists (NaN read back as None)."""
    if not data:
        return [], [], [], [], []
    if sys.byteorder == "little":
        q, f = memoryview(data).cast("Q"), memoryview(data).cast("d")
        cols = [q[0::FIELDS].tolist(), q[1::FIELDS].tolist(), q[2::FIELDS].tolist(),
                f[3::FIELDS].tolist(), f[4::FIELDS].tolist()]
    else:
        cols = [list(c) for c in zip(*ENTRY.iter_unpack(data))]
    for c in cols[3:]:
        c[:] = [None if v != v else v for v in c]
    return tuple(cols)


def _add_run(out: Columns, keys, losses: list, norms: list) -> None:
    """Append a run of entries: `keys` is one series key for the whole run, or one key per entry."""
    if not isinstance(keys, list):
        cols = out.series.get(keys)
        if cols is None:
            cols = out.series[keys] = ([], [])
        cols[0].extend(losses)
        cols[1].extend(norms)
        out.count += len(losses)
        return
    for key, loss, norm in zip(keys, losses, norms):
        out.add(key, loss, norm)


def with_tail(cols: Columns, log_fd: int, log_size: int, parse_span) -> Columns:
    """`cols` plus the log's lines after the last entry (not cached: they may still be growing)."""
    if cols.covered >= log_size:
        return cols
    out = cols.copy()
    _add_parsed(out, log_fd, cols.covered, log_size, parse_span)
    return out


def _add_parsed(out: Columns, log_fd: int, start: int, end: int, parse_span) -> None:
    for _s, _e, key, loss, norm in parse_span(os.pread(log_fd, end - start, start)):
        out.add(key, loss, norm)
    out.covered = max(out.covered, end)

