"""Per-step training metrics of a trainer job: one JSON line per optim_step, append-only on disk.

Why a log file and not SQLite: a step is written on the model's worker thread while the request
waits, so the write must be cheap and must never take the store's lock. One `os.write` of one
line with O_APPEND is one syscall; nothing is ever rewritten.

Crash safety: a record is one line written by one `write`. A crash can only leave a torn last
line; `read` skips any line that is not a complete JSON object, and the next `append` first ends
a torn tail with a newline so the fragment stays its own (skipped) line. With `fsync` (the
store's power-loss setting) every append is fsynced.

Layout: `<root>/<account>/<job_id>/<job create_us>.jsonl`. Keyed by the job's create time, so a
job deleted and created again under the same id starts a fresh chart. The accumulation of
forward_backward metrics between two steps (`merge_metrics`, `step_record`) is pure.
"""

from __future__ import annotations

import json
import math
import os
import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from fwemu.emulator.store import step_columns
from fwemu.emulator.store.atomic import fsync_dir

MAX_READ_BYTES = 64 << 20       # a chart reads at most the newest 64 MiB of a log (~300k steps)
CACHED_LOGS = 8                 # logs whose parsed records are kept for the next read
_APPEND_LOCK = threading.Lock()  # models of one job log from different worker threads
_INSTANCES = itertools.count()


# ------------------------------------------------------------------------------ pure
def merge_metrics(acc: Mapping[str, float], new: Mapping[str, object], calls_before: int) -> dict[str, float]:
    """Fold one forward_backward's `name:reduction` metrics into those accumulated since the last step.

    `:sum` adds, `:max`/`:min` keep the extreme, anything else (`:mean`) is the mean over calls
    (`calls_before` calls are already in `acc`). Non-numeric values are dropped.
    """
    out = dict(acc)
    for key, value in new.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        v = float(value)
        if key not in out:
            out[key] = v
            continue
        old = out[key]
        if key.endswith(":sum"):
            out[key] = old + v
        elif key.endswith(":max"):
            out[key] = max(old, v)
        elif key.endswith(":min"):
            out[key] = min(old, v)
        else:
            out[key] = old + (v - old) / (calls_before + 1)
    return out


def step_record(*, t_us: int, generation: int, model_id: str, fb_metrics: Mapping[str, float], fb_calls: int,
                step_metrics: Mapping[str, object]) -> dict:
    """The line one optim_step writes: forward_backward metrics since the last step, plus the step's own."""
    step = step_metrics.get("step:max")
    return {"t": t_us, "gen": generation, "model": model_id,
            "step": int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else None,
            "fb": fb_calls, "fbm": _finite(fb_metrics), "om": _finite(step_metrics)}


def loss_per_token(record: Mapping) -> float | None:
    """Mean loss per loss token of a step (the accumulated `loss:sum` over `loss_tokens:sum`)."""
    loss = _number(_field(record, "fbm", "loss:sum"))
    tokens = _number(_field(record, "om", "loss_tokens:sum"))
    if loss is None:
        return None
    return loss / tokens if tokens else loss


def _finite(metrics: Mapping[str, object]) -> dict:
    """JSON-safe numbers: NaN and infinities become null (json.dumps would write invalid JSON)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[str(k)] = float(v) if math.isfinite(v) else None
    return out


def parse_lines(data: bytes) -> list[dict]:
    """Every complete record of a log's bytes, in order; torn or foreign lines are skipped."""
    if not data:
        return []
    try:  # fast path: one parse for the whole log
        records = json.loads(b"[" + data.strip().replace(b"\n", b",") + b"]")
        if all(isinstance(r, dict) for r in records):
            return records
    except ValueError:
        pass
    out = []
    for line in data.split(b"\n"):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict):
            out.append(r)
    return out


# ------------------------------------------------------------------------------ disk
@dataclass(frozen=True)
class StepSummary:
    """What the job page shows of a log: the record count, the newest record, the charted columns."""
    count: int
    last: dict | None
    columns: dict[str, tuple[list, list]]   # series label -> (loss per token, grad norm), as chart_columns


class StepLog:
    def __init__(self, root: Path, *, fsync: bool = False):
        self.root = Path(root)
        self.fsync = fsync
        self.token = next(_INSTANCES)  # tells one StepLog from another in caches (id() is reused)
        self._cache_lock = threading.Lock()
        self._cache: OrderedDict[Path, tuple[int, int, list[dict]]] = OrderedDict()  # path -> (inode, offset, records)
        self._columns: OrderedDict[Path, step_columns.Columns] = OrderedDict()
        self._sidecar = step_columns.SidecarWriter(fsync)

    def path(self, account: str, job_id: str, create_us: int) -> Path:
        return self.root / account / job_id / f"{int(create_us)}.jsonl"

    def append(self, account: str, job_id: str, create_us: int, record: Mapping) -> None:
        """Append one record as one line; heals a torn tail first. Raises OSError on a disk error."""
        line = json.dumps(record, separators=(",", ":"), allow_nan=False).encode() + b"\n"
        path = self.path(account, job_id, create_us)
        with _APPEND_LOCK:
            created = not path.exists()
            if created:
                path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            try:
                st = os.fstat(fd)
                size = st.st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line
                if os.write(fd, line) != len(line):
                    raise OSError(f"short write to {path.name}")
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if created and self.fsync:
                fsync_dir(path.parent)
            try:  # derived data: a failure here costs the next reader a parse, never the step
                self._sidecar.append(path, st.st_ino, size, size + len(line), *chart_point(record))
            except (OSError, ValueError, TypeError):
                pass

    def read(self, account: str, job_id: str, create_us: int) -> list[dict]:
        """The job's records, oldest first (at most the newest MAX_READ_BYTES of the log).

        Parsed records are kept per log (the newest CACHED_LOGS logs), so a page that refreshes every
        few seconds parses only the lines appended since its last read. A log that shrank or was
        replaced (another inode) is read again from the start."""
        path = self.path(account, job_id, create_us)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return []
        try:
            st = os.fstat(fd)
            with self._cache_lock:
                cached = self._cache.get(path)
            if cached and cached[0] == st.st_ino and cached[1] <= st.st_size:
                ino, offset, done = cached
                data = os.pread(fd, st.st_size - offset, offset)
            else:
                offset = max(0, st.st_size - MAX_READ_BYTES)
                data, done = os.pread(fd, st.st_size - offset, offset), []
                if offset:
                    cut = data.find(b"\n") + 1  # the first line was cut by the window
                    data, offset = data[cut:], offset + cut
        finally:
            os.close(fd)
        end = data.rfind(b"\n") + 1  # complete lines are cached; an unterminated tail is parsed each time
        complete = done + parse_lines(data[:end]) if end else list(done)
        with self._cache_lock:
            self._cache[path] = (st.st_ino, offset + end, complete)
            self._cache.move_to_end(path)
            while len(self._cache) > CACHED_LOGS:
                self._cache.popitem(last=False)
        tail = parse_lines(data[end:]) if end < len(data) else []
        return complete + tail

    def summary(self, account: str, job_id: str, create_us: int) -> StepSummary:
        """Count, newest record and chart columns of the job's log (the newest MAX_READ_BYTES, as
        `read`), from the columnar sidecar: no JSON is decoded but the lines no entry covers."""
        path = self.path(account, job_id, create_us)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return StepSummary(0, None, {})
        try:
            st = os.fstat(fd)
            window = _window_start(fd, st.st_size)
            with self._cache_lock:
                cached = self._columns.get(path)
            cols = step_columns.load(path, fd, st.st_size, st.st_ino, window, cached, record_spans)
            if cols is None:
                cols = self._rebuild(path, fd, st.st_ino, window)
            with self._cache_lock:
                self._columns[path] = cols
                self._columns.move_to_end(path)
                while len(self._columns) > CACHED_LOGS:
                    self._columns.popitem(last=False)
            cols = step_columns.with_tail(cols, fd, st.st_size, record_spans)
        finally:
            os.close(fd)
        columns = {series_label(key): c for key, c in cols.series.items()}
        return StepSummary(cols.count, self.last(account, job_id, create_us) if cols.count else None, columns)

    def _rebuild(self, path: Path, fd: int, ino: int, window: int) -> step_columns.Columns:
        """Sidecar entries for every terminated record of the log, written anew (under the append lock,
        so no step lands between the read and the rename)."""
        with _APPEND_LOCK:
            size = os.fstat(fd).st_size
            data = os.pread(fd, size - window, window)
            end = data.rfind(b"\n") + 1
            spans = [(window + s, window + e, key, loss, norm) for s, e, key, loss, norm in record_spans(data[:end])]
            try:
                self._sidecar.rewrite(path, ino, spans)
            except OSError:
                pass  # read-only or full disk: the page still works, it just parses again next time
        cols = step_columns.Columns(ino, entries_read=step_columns.HEADER.size + step_columns.ENTRY.size * len(spans),
                                    covered=window + end)
        for _s, _e, key, loss, norm in spans:
            cols.add(key, loss, norm)
        return cols

    def last(self, account: str, job_id: str, create_us: int, window: int = 16 << 10) -> dict | None:
        """The newest complete record, reading only the log's tail (for a summary line)."""
        path = self.path(account, job_id, create_us)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            data = os.pread(fd, min(size, window), max(0, size - window))
        finally:
            os.close(fd)
        for line in reversed(data.split(b"\n")):
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict):
                return r
        return None

    def remove_job(self, account: str, job_id: str) -> None:
        import shutil

        with _APPEND_LOCK:
            shutil.rmtree(self.root / account / job_id, ignore_errors=True)
            self._sidecar.forget(self.root / account / job_id)
        with self._cache_lock:
            self._cache.clear()
            self._columns.clear()

    def remove_all(self) -> None:
        import shutil

        with _APPEND_LOCK:
            shutil.rmtree(self.root, ignore_errors=True)
            self._sidecar.forget()
        with self._cache_lock:
            self._cache.clear()
            self._columns.clear()


def _window_start(fd: int, size: int) -> int:
    """Where `read`'s window of the newest MAX_READ_BYTES begins: after the first newline in it."""
    if size <= MAX_READ_BYTES:
        return 0
    offset = size - MAX_READ_BYTES
    chunk = os.pread(fd, 1 << 16, offset)
    nl = chunk.find(b"\n")
    return offset + nl + 1 if nl >= 0 else offset


def series_of(records: Iterable[Mapping]) -> dict[str, list[Mapping]]:
    """Records grouped by model: `"model-0"` (or `"gen 1 / model-0"` after a resume), in log order."""
    groups: dict[tuple, list[Mapping]] = {}
    for r in records:
        key = (r.get("gen") or 0, r.get("model"))
        group = groups.get(key)
        if group is None:
            group = groups[key] = []
        group.append(r)
    return {(f"{model}" if not gen else f"gen {gen} / {model}"): rs for (gen, model), rs in groups.items()}


def chart_point(r: Mapping) -> tuple[tuple, float | None, float | None]:
    """(series key, loss per token, gradient norm) of one record; a record of another shape gives
    Nones (a gap in its series), never an error. The series key is (generation, model id)."""
    try:  # records this module wrote: plain subscripts (the hot loop)
        key, fbm, om = (r["gen"] or 0, r["model"]), r["fbm"], r["om"]
        loss, tokens, norm = fbm.get("loss:sum"), om.get("loss_tokens:sum"), om.get("grad_norm:mean")
        loss = loss / tokens if tokens and loss is not None else loss + 0.0 if loss is not None else None
        norm = None if norm is None else norm + 0.0
    except (KeyError, TypeError, AttributeError):
        key = (r.get("gen") or 0, r.get("model"))
        loss, norm = loss_per_token(r), _number(_field(r, "om", "grad_norm:mean"))
    if not all(isinstance(k, (int, float, str, type(None))) for k in key):  # foreign: keep it hashable
        key = tuple(k if isinstance(k, (int, float, str, type(None))) else json.dumps(k) for k in key)
    return key, loss, norm


def series_label(key: tuple) -> str:
    gen, model = key
    return f"{model}" if not gen else f"gen {gen} / {model}"


def chart_columns(records: Iterable[Mapping]) -> dict[str, tuple[list, list]]:
    """Per series label (as series_of): the loss per token and the gradient norm of each step, in order."""
    groups: dict[tuple, tuple[list, list]] = {}
    for r in records:
        key, loss, norm = chart_point(r)
        cols = groups.get(key)
        if cols is None:
            cols = groups[key] = ([], [])
        cols[0].append(loss)
        cols[1].append(norm)
    return {series_label(key): cols for key, cols in groups.items()}


def record_spans(data: bytes) -> list[tuple[int, int, tuple, float | None, float | None]]:
    """(start, end, key, loss, norm) of every complete record in `data`, offsets relative to it.
    A record's span ends after its newline (or at the end of `data` when it has none)."""
    out, pos, n = [], 0, len(data)
    while pos < n:
        nl = data.find(b"\n", pos)
        end = n if nl < 0 else nl + 1
        line = data[pos:end]
        if line.strip():
            try:
                r = json.loads(line)
            except ValueError:
                r = None
            if isinstance(r, dict):
                out.append((pos, end, *chart_point(r)))
        pos = end
    return out


def _field(record: Mapping, part: str, key: str) -> object:
    inner = record.get(part)
    return inner.get(key) if isinstance(inner, dict) else None


def _number(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
