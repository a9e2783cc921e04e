"""Checkpoint import throughput against `cp -r` of the same directory on the same disk, and peak memory.

For each size, a valid Hugging Face checkpoint directory of real (random, non-sparse) bytes is
written once (config.json + model.safetensors, or 1 GiB shards + index above 1 GiB), then, on
the same file system and interleaved in rotating order (trial r starts at method r), each of
these is timed --reps times:

  cp -r              `cp -r SRC DST` (page cache only: no fsync)                  <- the baseline
  cp -r + sync       `cp -r SRC DST && sync DST/* DST` (power-loss durable)       <- baseline of --fsync
  import by path     httpx POSTs {"sourcePath": SRC} (application/json) to
                     POST /_emulator/v1/accounts/{a}/rlorTrainerJobs/{j}/checkpoints:import
                     on a `fwemu serve` subprocess; the server checks the caller is a loopback
                     client of its own uid, classifies the source, copies it with copy_file_range
                     (as cp does), classifies the copy and commits it. No fsync: atomic and safe
                     if the emulator crashes, like cp -r
  path, --fsync      the same call to a second server started with `fwemu serve --fsync`: every
                     blob fsynced, SQLite committed with synchronous=FULL (power-loss durable)
  tar stream         a tar of SRC streamed by httpx over loopback (application/x-tar) to the default
                     server, the path a remote (or in-process) client takes; a probe GETs
                     /_emulator/health every 50 ms meanwhile to show what other callers wait
  fwemu import       the CLI as a user runs it (`python -m fwemu.emulator.cli import DIR ...`) against the
                     default server, interpreter start-up included; to a loopback URL it imports by
                     path, and the bench fails unless its output says "(copied by the server)"

Between trials (untimed) the copies are removed and each server reset (POST /_emulator/v1/reset),
then `sync` runs and the bench WAITS FOR IO TO SETTLE: it polls /proc/pressure/io every 0.2 s
until the "full" stall total grows by < 2 ms in one interval (at most 10 s; skipped where the
file is missing). Why: in back-to-back trials on this VM (root ext4 mounted with `discard`),
`cp -r` of 512 MiB took anywhere from 120 ms to 1.4 s, with IO stalls after large deletions;
settling removes that IO-side effect (it does not remove the CPU-side one in the caveat below).

Both servers are fresh per size and warmed up untimed (one tiny import by path and one by tar,
then a reset: routes are built on first use), and one untimed `cp -r` of the source is made and
removed before the first trial, so every trial follows the removal of a same-size copy. VmHWM
(peak RSS, /proc/<pid>/status) minus idle RSS of the default server is the memory its imports
cost. CPU is reported per GiB, client (this process or the child) and server (the server process
that did the work) apart.

Caveat: at 2 GiB the settle does not make trials uniform on this VM. `cp -r` of 2 GiB still took
0.5 s or 1.4-3.8 s, all of it CPU time (no IO wait), the slow case when the memory the previous
copy freed had sat idle for more than ~2 s (consistent with the kernel's free page reporting to
the hypervisor, which is on here); 512 MiB did not show it, and in another run the import by path
was the one caught (0.87 s median against 0.51 s for cp, best-of 0.94x). Noise here only adds
time, so the ratio targets compare the fastest trial of each side (best-of, 5 trials by default);
the medians are printed beside them and in the tables.

Targets (best-of): import by path >= 0.8x cp -r; path on a --fsync server >= 0.8x cp -r + sync;
server memory flat in size. The CLI (a fixed ~0.25 s of Python start-up on top of the same import)
and the tar stream get notes with their ratios, not targets.

    python bench/import_throughput.py                 # 64 MiB, 512 MiB, 2 GiB
    python bench/import_throughput.py --quick         # 8 MiB, 64 MiB
    python bench/import_throughput.py --sizes 1M --reps 1 --json
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ACCOUNT, API_KEY, MiB, REPO, ServeProcess, base_parser, child_env, emit, fmt, human_size, median,
    new_result, parse_size, ratio, run_timed, summary_ms, table, target, warm_bytecode,
)

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
JOB = "bench-import"
TENSOR_BYTES = 64 * MiB
BLOCK = 8 * MiB
TARGET_RATIO = 0.8
FLAT_SLACK_MIB = 16.0
METHODS = ("cp", "cp_sync", "path", "path_fsync", "http", "cli")
LABELS = {"cp": "cp -r", "cp_sync": "cp -r + sync", "path": "import by path", "path_fsync": "path, --fsync server",
          "http": "tar stream (httpx)", "cli": "fwemu import (CLI)"}
SERVER_METHODS = ("path", "path_fsync", "http", "cli")
CLI_MARK = "copied by the server"

PSI_IO = Path("/proc/pressure/io")
SETTLE_POLL_S = 0.2
SETTLE_QUIET_US = 2000
SETTLE_CAP_S = 10.0


# ------------------------------------------------------------------------------ data
def _write_safetensors(path: Path, data_bytes: int, first_index: int, block: bytearray) -> dict[str, int]:
    """A valid safetensors file of BF16 1-D tensors holding `data_bytes` of random bytes."""
    from fwemu.emulator.inspect.safetensors_header import encode_header

    tensors, sizes, pos, i = {}, {}, 0, first_index
    while pos < data_bytes:
        n = min(TENSOR_BYTES, data_bytes - pos)
        name = f"model.layers.{i}.mlp.down_proj.weight"
        tensors[name] = ("BF16", [n // 2], pos, pos + n)
        sizes[name] = n
        pos += n
        i += 1
    written = 0
    with open(path, "wb") as f:
        f.write(encode_header(tensors))
        counter = 0
        while written < data_bytes:
            n = min(len(block), data_bytes - written)
            block[:8] = counter.to_bytes(8, "little")  # every block differs: nothing to dedupe
            f.write(memoryview(block)[:n])
            written += n
            counter += 1
    return sizes


def make_checkpoint(path: Path, size: int, shard_bytes: int = 1 << 30) -> Path:
    """A Hugging Face checkpoint (INFERENCE_BASE) of about `size` bytes of real data."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                                                  "hidden_size": 4096, "torch_dtype": "bfloat16"}))
    data = max(2, size - 4096) & ~1
    block = bytearray(os.urandom(BLOCK))
    if data <= shard_bytes:
        _write_safetensors(path / "model.safetensors", data, 0, block)
    else:
        shards = -(-data // shard_bytes)
        weight_map, pos, first = {}, 0, 0
        for s in range(shards):
            n = min(shard_bytes, data - pos)
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            sizes = _write_safetensors(path / fname, n, first, block)
            first += len(sizes)
            weight_map.update({k: fname for k in sizes})
            pos += n
        (path / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": data}, "weight_map": weight_map}))
    from fwemu.emulator.inspect import inspect_checkpoint

    verdict = inspect_checkpoint(path)
    if verdict.kind is None:
        raise RuntimeError(f"generated checkpoint is not valid: {verdict.reason}")
    return path


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir())


def tar_chunks(directory: Path):
    """The client's own tar stream when available (client.commands.import_cmd), else a local copy."""
    try:
        from fwemu.client.commands.import_cmd import flat_files, tar_stream

        return tar_stream(flat_files(directory))
    except ImportError:
        return _tar_stream_fallback(sorted(directory.iterdir()))


def _tar_stream_fallback(files):
    import tarfile

    for p in files:
        info = tarfile.TarInfo(p.name)
        info.size, info.mode = p.stat().st_size, 0o644
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        with open(p, "rb") as f:
            while chunk := f.read(MiB):
                yield chunk
        if info.size % 512:
            yield b"\0" * (512 - info.size % 512)
    yield b"\0" * 1024


# ------------------------------------------------------------------------------ settling
def io_full_stall_us() -> int | None:
    """The cumulative "full" IO stall (microseconds) from /proc/pressure/io, or None where absent."""
    try:
        for line in PSI_IO.read_text().splitlines():
            if line.startswith("full"):
                for field in line.split():
                    if field.startswith("total="):
                        return int(field[len("total="):])
    except (OSError, ValueError):
        return None
    return None


def settle_io() -> tuple[float, bool]:
    """sync, then wait until the IO stall total grows < SETTLE_QUIET_US in one poll (<= SETTLE_CAP_S).

    Returns (seconds spent, whether the cap was hit). See the module docstring for why."""
    t0 = time.perf_counter()
    os.sync()
    prev = io_full_stall_us()
    if prev is None:
        return time.perf_counter() - t0, False
    deadline = t0 + SETTLE_CAP_S
    while True:
        if time.perf_counter() >= deadline:
            return time.perf_counter() - t0, True
        time.sleep(SETTLE_POLL_S)
        cur = io_full_stall_us()
        if cur is None or cur - prev < SETTLE_QUIET_US:
            return time.perf_counter() - t0, False
        prev = cur


# ------------------------------------------------------------------------------ trials
def run_timed_output(argv: list[str], *, env: dict | None = None, cwd: Path | None = None
                     ) -> tuple[float, float, int, str]:
    """Like _common.run_timed, but also returns the child's stdout: (wall s, CPU s, peak RSS KiB, stdout)."""
    import subprocess

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {(stderr or stdout).strip()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, stdout


def reset(client, server: ServeProcess) -> None:
    r = client.post(f"{server.url}/_emulator/v1/reset", headers={"X-Api-Key": API_KEY})
    if r.status_code != 200:
        raise RuntimeError(f"reset answered {r.status_code}: {r.text[:300]}")


def trial(method: str, src: Path, scratch: Path, servers: dict[str, ServeProcess], client, name: str) -> dict:
    """One timed trial: {"wall": s, "cpu": client-side CPU s, "server_cpu": s, "peak_kib": client peak RSS}.

    Leaves nothing behind: a cp copy is removed, the server used is reset."""
    if method in ("cp", "cp_sync"):
        dst = scratch / f"{method}-{name}"
        argv = (["cp", "-r", str(src), str(dst)] if method == "cp" else
                ["sh", "-c", 'cp -r "$1" "$2" && sync "$2"/* "$2"', "sh", str(src), str(dst)])
        wall, cpu, peak = run_timed(argv)
        shutil.rmtree(dst)
        return {"wall": wall, "cpu": cpu, "server_cpu": 0.0, "peak_kib": peak, "health": []}
    server = servers["fsync" if method == "path_fsync" else "default"]
    url = f"{server.url}/_emulator/v1/accounts/{ACCOUNT}/rlorTrainerJobs/{JOB}/checkpoints:import"
    params = {"name": name, "baseModel": BASE_MODEL}
    s0 = server.cpu_s()
    probe = None
    if method in ("path", "path_fsync"):
        c0, t0 = time.process_time(), time.perf_counter()
        r = client.post(url, params=params, json={"sourcePath": str(src)}, headers={"X-Api-Key": API_KEY})
        wall, cpu, peak = time.perf_counter() - t0, time.process_time() - c0, 0
        if r.status_code != 200:
            raise RuntimeError(f"import by path answered {r.status_code}: {r.text[:500]}")
        files = r.json().get("files")
        if files != len(list(src.iterdir())):
            raise RuntimeError(f"import by path copied {files} file(s) of {len(list(src.iterdir()))}")
    elif method == "http":
        probe = HealthProbe(server.url)
        probe.start()
        c0, t0 = time.process_time(), time.perf_counter()
        try:
            r = client.post(url, params=params, content=tar_chunks(src),
                            headers={"X-Api-Key": API_KEY, "Content-Type": "application/x-tar"})
        finally:
            wall, cpu, peak = time.perf_counter() - t0, time.process_time() - c0, 0
            probe.stop()
        if r.status_code != 200:
            raise RuntimeError(f"tar import answered {r.status_code}: {r.text[:500]}")
    else:
        argv = [sys.executable, "-m", "fwemu.emulator.cli", "import", str(src), "--job", JOB, "--name", name,
                "--base-model", BASE_MODEL, "--base-url", server.url, "--api-key", API_KEY]
        wall, cpu, peak, out = run_timed_output(argv, env=child_env(), cwd=REPO)
        if CLI_MARK not in out:
            raise RuntimeError(f"fwemu import did not import by path (no {CLI_MARK!r} in its output): "
                               f"{out.strip()[-500:]!r}")
    server_cpu = server.cpu_s() - s0
    reset(client, server)
    return {"wall": wall, "cpu": cpu, "server_cpu": server_cpu, "peak_kib": peak,
            "health": probe.latencies if probe else []}


class HealthProbe:
    """GET /_emulator/health every 50 ms while an import runs: how long other callers wait."""

    def __init__(self, url: str, every_s: float = 0.05):
        import threading

        self.url, self.every_s = url, every_s
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=120) as c:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                c.get("/_emulator/health")
                self.latencies.append(time.perf_counter() - t0)
                self._stop.wait(self.every_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def cli_available() -> bool:
    try:
        import fwemu.client.commands.import_cmd  # noqa: F401
        return True
    except Exception:  # noqa: BLE001 - the client is optional for this bench
        return False


# ------------------------------------------------------------------------------ run
def warm_up(server: ServeProcess, src: Path, client) -> None:
    """Untimed: one import by path and one tar import of a tiny checkpoint, then a reset.

    The emulator builds each route on its first request (emulator/lazy_routes.py) and imports
    the modules it needs then; a long-running server has done that long before a big import."""
    url = f"{server.url}/_emulator/v1/accounts/{ACCOUNT}/rlorTrainerJobs/{JOB}/checkpoints:import"
    for i, kw in enumerate(({"json": {"sourcePath": str(src)}},
                            {"content": tar_chunks(src), "headers": {"Content-Type": "application/x-tar"}})):
        headers = {"X-Api-Key": API_KEY, **kw.pop("headers", {})}
        r = client.post(url, params={"name": f"warm-{i}", "baseModel": BASE_MODEL}, headers=headers, **kw)
        if r.status_code != 200:
            raise RuntimeError(f"warm-up import answered {r.status_code}: {r.text[:500]}")
    client.get(f"{server.url}/_emulator/health")
    reset(client, server)


def measure_size(size: int, base: Path, methods: list[str], reps: int, client, warm_src: Path) -> dict:
    src = make_checkpoint(base / f"src-{size}", size)
    actual = dir_bytes(src)
    scratch = base / "scratch"
    scratch.mkdir(exist_ok=True)
    trials: dict[str, list[dict]] = {m: [] for m in methods}
    settles: list[tuple[float, bool]] = []
    with ServeProcess(base / f"data-{size}") as default, \
            ServeProcess(base / f"data-fsync-{size}", extra_args=("--fsync",)) as fsync_server:
        servers = {"default": default, "fsync": fsync_server}
        for s in servers.values():
            warm_up(s, warm_src, client)
        idle = {k: s.kib("VmRSS") for k, s in servers.items()}
        # untimed: so that the first trial too follows the removal of a same-size copy, as every other does
        run_timed(["cp", "-r", str(src), str(scratch / "warm-up")])
        shutil.rmtree(scratch / "warm-up")
        settles.append(settle_io())
        for r in range(reps):
            order = methods[r % len(methods):] + methods[:r % len(methods)]
            for m in order:
                trials[m].append(trial(m, src, scratch, servers, client, f"ckpt-{r}-{m}"))
                settles.append(settle_io())
        hwm = {k: s.kib("VmHWM") for k, s in servers.items()}
    shutil.rmtree(src)
    for d in (f"data-{size}", f"data-fsync-{size}"):
        shutil.rmtree(base / d, ignore_errors=True)
    settle_io()  # the next size starts on a quiet disk too

    gib = actual / (1 << 30)
    row = {"size": human_size(size), "bytes": actual, "reps": reps,
           "server_idle_rss_mib": round(idle["default"] / 1024, 1) if idle["default"] else None,
           "server_peak_rss_mib": round(hwm["default"] / 1024, 1) if hwm["default"] else None,
           "fsync_server_idle_rss_mib": round(idle["fsync"] / 1024, 1) if idle["fsync"] else None,
           "fsync_server_peak_rss_mib": round(hwm["fsync"] / 1024, 1) if hwm["fsync"] else None,
           "cli_peak_rss_mib": (round(max(t["peak_kib"] for t in trials["cli"]) / 1024, 1)
                                if "cli" in methods else None),
           "settle_median_s": round(median([s for s, _ in settles]), 3),
           "settle_max_s": round(max(s for s, _ in settles), 3),
           "settle_capped": sum(1 for _, capped in settles if capped)}
    for m in methods:
        t = median([x["wall"] for x in trials[m]])
        row[f"{m}_s"] = round(t, 4)
        row[f"{m}_all_s"] = [round(x["wall"], 4) for x in trials[m]]
        row[f"{m}_mib_s"] = round(actual / MiB / t, 1)
        row[f"{m}_client_cpu_s_per_gib"] = round(median([x["cpu"] for x in trials[m]]) / gib, 3)
        if m in SERVER_METHODS:
            row[f"{m}_server_cpu_s_per_gib"] = round(median([x["server_cpu"] for x in trials[m]]) / gib, 3)
    # throughput ratios (baseline time / method time): median of each, and fastest trial of each
    pairs = [(m, "cp") for m in ("path", "cli", "http", "cp_sync")] + [("path_fsync", "cp_sync")]
    for m, b in pairs:
        if m in methods:
            row[f"{m}_vs_{b}"] = ratio(row[f"{b}_s"], row[f"{m}_s"])
            row[f"{m}_vs_{b}_best"] = ratio(min(row[f"{b}_all_s"]), min(row[f"{m}_all_s"]))
    row["health_during_import"] = summary_ms([x for t in trials.get("http", []) for x in t["health"]])
    for k, prefix in (("default", "server"), ("fsync", "fsync_server")):
        if idle[k] and hwm[k]:
            row[f"{prefix}_import_growth_mib"] = round((hwm[k] - idle[k]) / 1024, 1)
    return row


def x(v) -> str:
    return f"{fmt(v, 2)}x"


def per_size(rows: list[dict], key: str) -> str:
    return ", ".join(f"{r['size']} {x(r.get(key))}" for r in rows)


def run(args) -> dict:
    import httpx

    sizes = [parse_size(s) for s in (args.sizes or ("8M,64M" if args.quick else "64M,512M,2G")).split(",")]
    reps = args.reps or (2 if args.quick else 5)
    methods = [m for m in METHODS if m != "cli" or (not args.no_cli and cli_available())]
    res = new_result("import_throughput", "Checkpoint import throughput vs cp -r", args,
                     {"sizes": [human_size(s) for s in sizes], "reps": reps, "methods": methods,
                      "io_settle": (f"sync, then poll {PSI_IO} every {SETTLE_POLL_S} s until the full stall grows "
                                    f"< {SETTLE_QUIET_US} us (cap {SETTLE_CAP_S:g} s)"
                                    if io_full_stall_us() is not None else "sync only (no /proc/pressure/io)")})
    if os.environ.pop("FWEMU_FSYNC", None) not in (None, "", "0"):
        res["notes"].append("FWEMU_FSYNC was set in the environment; it was cleared so the default server "
                            "runs without fsync (the --fsync server is started with the flag)")
    base = Path(tempfile.mkdtemp(prefix="fwemu-bench-import-", dir=args.tmp_dir))
    rows_out = []
    warm_bytecode()
    try:
        warm_src = make_checkpoint(base / "warm-up", 1 * MiB)
        with httpx.Client(timeout=None) as client:
            for size in sizes:
                rows_out.append(measure_size(size, base, methods, reps, client, warm_src))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    res["results"] = {"sizes": rows_out}
    has_cli = "cli" in methods

    cols = ["size", *[f"{LABELS[m]} MiB/s" for m in methods], "path/cp", "path/cp best-of",
            "path --fsync/(cp+sync)", "path --fsync/(cp+sync) best-of"]
    cols += ["CLI/cp", "CLI/cp best-of"] if has_cli else []
    cols += ["tar/cp", "tar/cp best-of"]
    trows = []
    for row in rows_out:
        r = [row["size"], *[row[f"{m}_mib_s"] for m in methods], x(row["path_vs_cp"]), x(row["path_vs_cp_best"]),
             x(row["path_fsync_vs_cp_sync"]), x(row["path_fsync_vs_cp_sync_best"])]
        r += [x(row["cli_vs_cp"]), x(row["cli_vs_cp_best"])] if has_cli else []
        r += [x(row["http_vs_cp"]), x(row["http_vs_cp_best"])]
        trows.append(r)
    res["tables"].append(table(
        "Import throughput (median; ratio = throughput / baseline throughput)", cols, trows,
        "every method reads a source already in the page cache. cp -r, import by path, the CLI and the tar "
        "stream go to the page cache without fsync (the default server: atomic, crash-safe, not power-loss "
        "durable); cp -r + sync and the --fsync server fsync every file (that server also commits SQLite with "
        "synchronous=FULL), so they are compared with each other. best-of = fastest trial of each"))
    res["tables"].append(table(
        "Median wall time per trial (s)",
        ["size", "reps", *[LABELS[m] for m in methods], "IO settle between trials (median / max s)"],
        [[row["size"], row["reps"], *[fmt(row[f"{m}_s"], 3) for m in methods],
          f"{fmt(row['settle_median_s'], 2)} / {fmt(row['settle_max_s'], 2)}"
          + (f" ({row['settle_capped']} capped)" if row["settle_capped"] else "")] for row in rows_out],
        "the IO settle (sync + wait for /proc/pressure/io to go quiet) runs between trials and is not timed"))
    res["tables"].append(table(
        "CPU seconds per GiB moved (median; contention-robust)",
        ["size", "cp -r", "cp -r + sync", "path: client", "path: server", "path --fsync: server",
         "tar: client", "tar: server", *(["CLI: client", "CLI: server"] if has_cli else [])],
        [[row["size"], fmt(row["cp_client_cpu_s_per_gib"], 2), fmt(row["cp_sync_client_cpu_s_per_gib"], 2),
          fmt(row["path_client_cpu_s_per_gib"], 2), fmt(row["path_server_cpu_s_per_gib"], 2),
          fmt(row["path_fsync_server_cpu_s_per_gib"], 2),
          fmt(row["http_client_cpu_s_per_gib"], 2), fmt(row["http_server_cpu_s_per_gib"], 2),
          *([fmt(row["cli_client_cpu_s_per_gib"], 2), fmt(row["cli_server_cpu_s_per_gib"], 2)] if has_cli else [])]
         for row in rows_out],
        "client = this process (path, tar) or the child (cp, CLI: its whole interpreter); server = the serve "
        "process that imported (the --fsync one for path --fsync); kernel copy time counts as system CPU"))
    res["tables"].append(table(
        "Health latency seen by another client during the tar-stream import (ms; probe every 50 ms)",
        ["size", "probes", "p50", "p99", "max"],
        [[row["size"], row["health_during_import"]["n"], row["health_during_import"]["p50_ms"],
          row["health_during_import"]["p99_ms"], row["health_during_import"]["max_ms"]] for row in rows_out]))
    res["tables"].append(table(
        "Memory (MiB)", ["size", "server idle RSS", "server peak RSS (VmHWM)", "import growth",
                         "--fsync server growth", *(["CLI peak RSS"] if has_cli else [])],
        [[row["size"], row["server_idle_rss_mib"], row["server_peak_rss_mib"], row.get("server_import_growth_mib"),
          row.get("fsync_server_import_growth_mib"), *([row["cli_peak_rss_mib"]] if has_cli else [])]
         for row in rows_out],
        "server = the default server, which ran the path, tar-stream and CLI imports; growth = VmHWM - idle RSS"))

    def ratio_target(name: str, key: str) -> None:
        """Judged on best-of (fastest trial of each side): noise on this VM only ever adds time, and
        at 2 GiB it is bimodal (see the docstring), which makes a median of 5 a coin toss."""
        worst = min(row[f"{key}_best"] or 0 for row in rows_out)
        res["targets"].append(target(
            name, f">= {TARGET_RATIO}x",
            f"{worst:.2f}x best-of (per size: {per_size(rows_out, key + '_best')}; "
            f"medians: {per_size(rows_out, key)})", worst >= TARGET_RATIO))

    ratio_target("import by path (API call) vs cp -r (worst size)", "path_vs_cp")
    ratio_target("import by path on a --fsync server vs cp -r + sync (worst size)", "path_fsync_vs_cp_sync")
    if has_cli:  # a latency, not a throughput: no target, but the figures stay in front of the reader
        res["notes"].append(
            f"fwemu import (CLI) vs cp -r: best-of {per_size(rows_out, 'cli_vs_cp_best')}; medians "
            f"{per_size(rows_out, 'cli_vs_cp')}. It is the same import by path plus a new Python process "
            "(interpreter, httpx, an account lookup: about 0.25 s here), so it approaches the API figure only "
            "where the copy dwarfs that start-up; cp -r starts in about a millisecond")
    growth = [row.get("server_import_growth_mib") for row in rows_out if row.get("server_import_growth_mib") is not None]
    if len(growth) >= 2:
        spread = max(growth) - min(growth)
        res["targets"].append(target("server memory flat in size (peak growth spread across sizes)",
                                     f"<= {FLAT_SLACK_MIB:g} MiB", f"{spread:.1f} MiB "
                                     f"(growth {', '.join(f'{g:g}' for g in growth)} MiB)", spread <= FLAT_SLACK_MIB))
    tar = [row["http_vs_cp"] for row in rows_out if row.get("http_vs_cp") is not None]
    if tar:
        res["notes"].append(f"tar stream (HTTP body) vs cp -r: {min(tar):.2f}x-{max(tar):.2f}x across sizes "
                            f"({per_size(rows_out, 'http_vs_cp')}); no target: it is the path for remote clients "
                            "(and in-process ones, which have no socket to prove they are local), where the server "
                            "cannot read the client's files")
    if not has_cli:
        res["notes"].append("fwemu import (client.commands.import_cmd) not importable or disabled: CLI not measured")
    return res


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--sizes", help="comma list, e.g. 64M,512M,2G (default; --quick: 8M,64M)")
    p.add_argument("--reps", type=int, help="trials per method and size (default 5; --quick: 2)")
    p.add_argument("--no-cli", action="store_true", help="skip the fwemu import CLI")
    args = p.parse_args(argv)
    emit(run(args), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
