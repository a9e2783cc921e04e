"""Shared helpers for the bench scripts: machine facts, percentiles, a `fwemu serve` subprocess, output.

Every bench script prints either readable tables or (with --json) one JSON object of this shape:

    {"bench": str, "title": str, "date": ISO-8601, "quick": bool, "command": str,
     "machine": {...}, "config": {...}, "results": {...},
     "tables": [{"title": str, "columns": [str], "rows": [[cell]], "note": str}],
     "targets": [{"name": str, "target": str, "value": str, "met": bool | None}],
     "notes": [str]}

`bench/run_all.py` renders `tables`, `targets` and `notes` into docs/benchmarks.md. Only loopback
(127.0.0.1) is ever contacted.
"""

from __future__ import annotations

import datetime as _dt
import http.client
import json
import math
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

HOST = "127.0.0.1"
API_KEY = "fw-bench"
ACCOUNT = "bench"
MiB = 1 << 20


# ------------------------------------------------------------------------------ machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return None


def fs_type(path: str | os.PathLike) -> str:
    """The file system type of the mount holding `path` (from /proc/mounts), or "unknown"."""
    path = os.path.realpath(path)
    best, fstype = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and (path == parts[1] or path.startswith(parts[1].rstrip("/") + "/")) \
                    and len(parts[1]) > len(best):
                best, fstype = parts[1], f"{parts[2]} on {parts[0]}"
    except OSError:
        pass
    return fstype


def _version(mod: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001 - absent is a fact, not an error
        return None


def machine_info(tmp_dir: str | None = None) -> dict:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (None, None, None)
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "ram_gib": _mem_total_gib(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
        "tmp_fs": fs_type(tmp_dir or tempfile.gettempdir()),
        "loadavg_1m_at_start": round(load[0], 2) if load[0] is not None else None,
        "bytecode": (f"children use a pycache prefix ({PYCACHE})"
                     + ("; the environment sets PYTHONDONTWRITEBYTECODE=1" if os.environ.get("PYTHONDONTWRITEBYTECODE")
                        else "")),
        "libs": {m: _version(m) for m in ("fastapi", "starlette", "uvicorn", "httpx", "pydantic", "h11",
                                          "httptools", "uvloop")},
    }


def loadavg() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# ------------------------------------------------------------------------------ statistics
def percentile(values, p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); p in [0, 100]."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary_ms(seconds: list[float]) -> dict:
    """p50 / p99 / min / max / n of a list of durations in seconds, in milliseconds."""
    if not seconds:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "min_ms": None, "max_ms": None}
    return {"n": len(seconds), "p50_ms": round(percentile(seconds, 50) * 1e3, 3),
            "p99_ms": round(percentile(seconds, 99) * 1e3, 3),
            "min_ms": round(min(seconds) * 1e3, 3), "max_ms": round(max(seconds) * 1e3, 3)}


def median(values):
    return statistics.median(values) if values else float("nan")


def ratio(a, b, digits: int = 2):
    if a is None or b is None or not b or (isinstance(a, float) and math.isnan(a)):
        return None
    return round(a / b, digits)


def fmt(x, digits: int = 1) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if math.isnan(x):
            return "n/a"
        return f"{x:,.{digits}f}"
    return str(x)


def parse_size(text: str) -> int:
    """'64M', '512MiB', '2G', '1048576' -> bytes (binary units)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in "KMG" else t
    return int(float(num) * mult)


def human_size(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            v = n / div
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} B"


# ------------------------------------------------------------------------------ processes
def proc_status_kib(pid: int, field: str) -> int | None:
    """A `VmXXX:` field of /proc/<pid>/status in KiB (VmHWM = peak RSS, VmRSS = current)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds used so far by process `pid` (all its threads), from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# Bench children keep compiled bytecode in a cache of their own, outside the repo and site-packages.
# Without it, an environment with PYTHONDONTWRITEBYTECODE=1 (this dev checkout has one, and no
# __pycache__ in the repo) recompiles every emulator module at every start, which an installed
# fwemu never does. `bench/cold_start.py` also measures the environment as it is.
PYCACHE = Path(tempfile.gettempdir()) / "fwemu-bench-pycache"
WARM_MODULES = ("fwemu.emulator.app", "fwemu.emulator.cli", "fwemu.emulator.serve", "fwemu.emulator.server_thread", "fwemu.emulator.faults.plan",
                "fwemu.client.commands.import_cmd", "uvicorn", "uvicorn.protocols.http.h11_impl",
                "uvicorn.protocols.websockets.auto", "uvicorn.lifespan.on", "uvicorn.loops.auto", "httpx",
                "fastapi.testclient", "fastapi", "fwemu.emulator.inspect.cli")


def child_env(extra: dict | None = None, *, bytecode_cache: bool = True) -> dict:
    env = dict(os.environ)
    if bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("FWEMU_FAULT_PLAN", None)
    env.pop("FWEMU_QUIRKS", None)
    env.pop("FWEMU_BREAK", None)
    env.setdefault("TINKER_TELEMETRY", "0")
    env.update(extra or {})
    return env


def warm_bytecode() -> None:
    """Compile (once) what bench children import into the bench's bytecode cache; untimed."""
    code = ("import importlib, sys\nfor m in sys.argv[1:]:\n    try:\n        importlib.import_module(m)\n"
            "    except Exception:\n        pass\n")
    subprocess.run([sys.executable, "-c", code, *WARM_MODULES], cwd=REPO, env=child_env(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)


def http_get_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    """One GET over a fresh loopback connection (stdlib only: cheap enough to poll with)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_http_200(proc: subprocess.Popen, port: int, path: str, timeout_s: float = 60.0,
                  poll_s: float = 0.002) -> float:
    """Poll until GET path answers 200; returns time.perf_counter() at that moment."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {path}")
        if http_get_status(port, path, timeout=max(1.0, poll_s)) == 200:
            return time.perf_counter()
        time.sleep(poll_s)
    raise RuntimeError(f"no 200 on {path} within {timeout_s} s")


class ServeProcess:
    """`python -m fwemu.emulator.cli serve` (what `fwemu serve` runs) on a free loopback port."""

    def __init__(self, data_dir: Path | None = None, *, keys: dict[str, str] | None = None,
                 extra_args: tuple[str, ...] = (), python_flags: tuple[str, ...] = (),
                 stderr_path: Path | None = None):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.data_dir = data_dir
        self.keys = keys or {API_KEY: ACCOUNT}
        self.extra_args = extra_args
        self.python_flags = python_flags
        self.stderr_path = stderr_path
        self.proc: subprocess.Popen | None = None
        self.started_at = self.ready_at = None

    @property
    def argv(self) -> list[str]:
        where = ["--data-dir", str(self.data_dir)] if self.data_dir else ["--in-memory"]
        argv = [sys.executable, *self.python_flags, "-m", "fwemu.emulator.cli", "serve", "--host", HOST,
                "--port", str(self.port), *where, "--startup-delay", "0", *self.extra_args]
        for k, a in self.keys.items():
            argv += ["--api-key", f"{k}={a}"]
        return argv

    def start(self, timeout_s: float = 60.0) -> "ServeProcess":
        err = open(self.stderr_path, "wb") if self.stderr_path else subprocess.DEVNULL
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL,
                                     stderr=err)
        if err is not subprocess.DEVNULL:
            err.close()
        self.ready_at = wait_http_200(self.proc, self.port, "/_emulator/health", timeout_s)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid  # type: ignore[union-attr]

    def kib(self, field: str) -> int | None:
        return proc_status_kib(self.pid, field)

    def cpu_s(self) -> float | None:
        return proc_cpu_s(self.pid)

    def stop(self) -> None:
        from fwemu.emulator.server_process import stop_process

        stop_process(self.proc)

    def __enter__(self) -> "ServeProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_timed(argv: list[str], *, env: dict | None = None, cwd: Path | None = None) -> tuple[float, float, int]:
    """Run argv to completion: (wall seconds, CPU seconds (user + sys), peak RSS in KiB), via wait4.

    CPU and RSS are the child's own (a shell's children are not included)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {proc.returncode}: {err.strip()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


# ------------------------------------------------------------------------------ output
def base_parser(description: str):
    import argparse

    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes and few repetitions (well under 20 s)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--tmp-dir", default=None, help="where to put data (default: the system temp dir)")
    return p


def new_result(bench: str, title: str, args, config: dict) -> dict:
    return {"bench": bench, "title": title, "date": now_iso(), "quick": bool(getattr(args, "quick", False)),
            "command": shlex.join(["python", f"bench/{bench}.py", *sys.argv[1:]]),
            "machine": machine_info(getattr(args, "tmp_dir", None)), "config": config,
            "results": {}, "tables": [], "targets": [], "notes": []}


def table(title: str, columns: list[str], rows: list[list], note: str = "") -> dict:
    return {"title": title, "columns": columns, "rows": [[fmt(c) if not isinstance(c, str) else c for c in r]
                                                         for r in rows], "note": note}


def target(name: str, target_text: str, value_text: str, met: bool | None) -> dict:
    return {"name": name, "target": target_text, "value": value_text, "met": met}


def render_text(result: dict) -> str:
    out = [f"{result['title']}  ({result['date']}{', quick' if result.get('quick') else ''})"]
    m = result["machine"]
    out.append(f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['python']}, {m['os']}; "
               f"load {m.get('loadavg_1m_at_start')} -> {result.get('loadavg_1m_at_end')}")
    for t in result["tables"]:
        out.append("")
        out.append(t["title"])
        widths = [max(len(str(x)) for x in col) for col in zip(t["columns"], *t["rows"])]
        for i, r in enumerate([t["columns"], *t["rows"]]):
            out.append("  ".join(str(v).rjust(w) if j else str(v).ljust(w) for j, (v, w) in
                                 enumerate(zip(r, widths))).rstrip())
            if i == 0:
                out.append("  ".join("-" * w for w in widths))
        if t.get("note"):
            out.append(f"  ({t['note']})")
    if result["targets"]:
        out.append("")
        out.append("targets")
        for tg in result["targets"]:
            mark = {True: "MET", False: "NOT MET", None: "n/a"}[tg["met"]]
            out.append(f"  [{mark}] {tg['name']}: {tg['value']} (target {tg['target']})")
    for n in result["notes"]:
        out.append(f"note: {n}")
    return "\n".join(out)


def emit(result: dict, args) -> None:
    result["loadavg_1m_at_end"] = loadavg()
    if getattr(args, "json", False):
        print(json.dumps(result, sort_keys=False, default=str))
    else:
        print(render_text(result))
    sys.stdout.flush()
