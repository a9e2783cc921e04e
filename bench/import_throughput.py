"""Checkpoint import throughput against `cp -r`, and the server's peak memory, by directory size.

For each size, a valid Hugging Face checkpoint directory of real (random, non-sparse) bytes is
written once (config.json + model.safetensors, or 1 GiB shards + index above 1 GiB), then, on
the same file system and interleaved in rotating order, each of these is timed --reps times:

  cp -r            `cp -r SRC DST` (page cache only: no fsync)            <- the baseline
  cp -r + sync     `cp -r SRC DST && sync DST/* DST` (durable, like an import)
  HTTP stream      a tar streamed by httpx over loopback to
                   POST /_emulator/v1/accounts/{a}/rlorTrainerJobs/{j}/checkpoints:import
                   on a `fwemu serve` subprocess (the import fsyncs, classifies, commits)
  copyfile+fsync   shutil.copyfile (sendfile) + fsync per file, in Python: the floor of an import
                   that would read a local path instead of an HTTP body (a proposed fast path)
  fwemu import     the CLI, as a user runs it (`python -m emulator.cli import DIR ...`),
                   interpreter start-up included

Between trials the copies are removed, the emulator reset and `sync` run (untimed), so a trial
never pays for the previous one's write-back. A fresh `fwemu serve` is started per size; its
peak RSS (VmHWM in /proc/<pid>/status) minus its idle RSS is the memory an import costs.

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
METHODS = ("cp", "cp_sync", "copyfile", "http", "cli")
LABELS = {"cp": "cp -r", "cp_sync": "cp -r + sync", "copyfile": "copyfile + fsync (Python)",
          "http": "HTTP stream (httpx)", "cli": "fwemu import (CLI)"}


# ------------------------------------------------------------------------------ data
def _write_safetensors(path: Path, data_bytes: int, first_index: int, block: bytearray) -> dict[str, int]:
    """A valid safetensors file of BF16 1-D tensors holding `data_bytes` of random bytes."""
    from emulator.inspect.safetensors_header import encode_header

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
    from emulator.inspect import inspect_checkpoint

    verdict = inspect_checkpoint(path)
    if verdict.kind is None:
        raise RuntimeError(f"generated checkpoint is not valid: {verdict.reason}")
    return path


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir())


def tar_chunks(directory: Path):
    """The client's own tar stream when available (client.commands.import_cmd), else a local copy."""
    try:
        from client.commands.import_cmd import flat_files, tar_stream

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


# ------------------------------------------------------------------------------ trials
def trial(method: str, src: Path, scratch: Path, server: ServeProcess, client, name: str) -> dict:
    """One timed trial: {"wall": s, "cpu": client-side CPU s, "server_cpu": s, "peak_kib": client peak RSS}."""
    if method in ("cp", "cp_sync"):
        dst = scratch / f"{method}-{name}"
        argv = (["cp", "-r", str(src), str(dst)] if method == "cp" else
                ["sh", "-c", 'cp -r "$1" "$2" && sync "$2"/* "$2"', "sh", str(src), str(dst)])
        wall, cpu, peak = run_timed(argv)
        shutil.rmtree(dst)
        return {"wall": wall, "cpu": cpu, "server_cpu": 0.0, "peak_kib": peak}
    if method == "copyfile":
        dst = scratch / f"{method}-{name}"
        c0, t0 = time.process_time(), time.perf_counter()
        dst.mkdir()
        for f in sorted(src.iterdir()):
            shutil.copyfile(f, dst / f.name)
            fd = os.open(dst / f.name, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        fd = os.open(dst, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(fd)
        os.close(fd)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        shutil.rmtree(dst)
        return {"wall": wall, "cpu": cpu, "server_cpu": 0.0, "peak_kib": 0}
    url = f"{server.url}/_emulator/v1/accounts/{ACCOUNT}/rlorTrainerJobs/{JOB}/checkpoints:import"
    s0 = server.cpu_s()
    probe = HealthProbe(server.url) if method == "http" else None
    if method == "http":
        probe.start()
        c0, t0 = time.process_time(), time.perf_counter()
        try:
            r = client.post(url, params={"name": name, "baseModel": BASE_MODEL}, content=tar_chunks(src),
                            headers={"X-Api-Key": API_KEY, "Content-Type": "application/x-tar"})
        finally:
            wall, cpu, peak = time.perf_counter() - t0, time.process_time() - c0, 0
            probe.stop()
        if r.status_code != 200:
            raise RuntimeError(f"import answered {r.status_code}: {r.text[:500]}")
    else:
        argv = [sys.executable, "-m", "emulator.cli", "import", str(src), "--job", JOB, "--name", name,
                "--base-model", BASE_MODEL, "--base-url", server.url, "--api-key", API_KEY]
        wall, cpu, peak = run_timed(argv, env=child_env(), cwd=REPO)
    server_cpu = server.cpu_s() - s0
    r = client.post(f"{server.url}/_emulator/v1/reset", headers={"X-Api-Key": API_KEY})
    if r.status_code != 200:
        raise RuntimeError(f"reset answered {r.status_code}: {r.text[:300]}")
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
        import client.commands.import_cmd  # noqa: F401
        return True
    except Exception:  # noqa: BLE001 - the client is optional for this bench
        return False


def run(args) -> dict:
    import httpx

    sizes = [parse_size(s) for s in (args.sizes or ("8M,64M" if args.quick else "64M,512M,2G")).split(",")]
    reps = args.reps or (2 if args.quick else 3)
    methods = [m for m in METHODS if m != "cli" or (not args.no_cli and cli_available())]
    res = new_result("import_throughput", "Checkpoint import throughput vs cp -r", args,
                     {"sizes": [human_size(s) for s in sizes], "reps": reps, "methods": methods})
    base = Path(tempfile.mkdtemp(prefix="fwemu-bench-import-", dir=args.tmp_dir))
    rows_out = []
    warm_bytecode()
    try:
        for size in sizes:
            reps_here = reps
            src = make_checkpoint(base / f"src-{size}", size)
            actual = dir_bytes(src)
            os.sync()
            scratch = base / "scratch"
            scratch.mkdir(exist_ok=True)
            trials: dict[str, list[dict]] = {m: [] for m in methods}
            with ServeProcess(base / f"data-{size}") as server, httpx.Client(timeout=None) as client:
                idle_kib = server.kib("VmRSS")
                for r in range(reps_here):
                    order = methods[r % len(methods):] + methods[:r % len(methods)]
                    for m in order:
                        trials[m].append(trial(m, src, scratch, server, client, f"ckpt-{r}-{m}"))
                        os.sync()
                hwm_kib = server.kib("VmHWM")
            shutil.rmtree(src)
            shutil.rmtree(base / f"data-{size}", ignore_errors=True)
            gib = actual / (1 << 30)
            row = {"size": human_size(size), "bytes": actual, "reps": reps_here,
                   "server_idle_rss_mib": round(idle_kib / 1024, 1) if idle_kib else None,
                   "server_peak_rss_mib": round(hwm_kib / 1024, 1) if hwm_kib else None,
                   "cli_peak_rss_mib": (round(max(t["peak_kib"] for t in trials["cli"]) / 1024, 1)
                                        if "cli" in methods else None)}
            for m in methods:
                t = median([x["wall"] for x in trials[m]])
                row[f"{m}_s"] = round(t, 4)
                row[f"{m}_all_s"] = [round(x["wall"], 4) for x in trials[m]]
                row[f"{m}_mib_s"] = round(actual / MiB / t, 1)
                row[f"{m}_client_cpu_s_per_gib"] = round(median([x["cpu"] for x in trials[m]]) / gib, 3)
                if m in ("http", "cli"):
                    row[f"{m}_server_cpu_s_per_gib"] = round(median([x["server_cpu"] for x in trials[m]]) / gib, 3)
            for m in ("http", "cli", "cp_sync", "copyfile"):
                if m in methods:
                    row[f"{m}_vs_cp"] = ratio(row["cp_s"], row[f"{m}_s"])      # throughput ratio
                    row[f"{m}_vs_cp_best"] = ratio(min(row["cp_all_s"]), min(row[f"{m}_all_s"]))
            for m in ("http", "cli"):
                if m in methods:
                    row[f"{m}_vs_cp_sync"] = ratio(row["cp_sync_s"], row[f"{m}_s"])
            if "http" in methods:
                lat = [x for t in trials["http"] for x in t["health"]]
                row["health_during_import"] = summary_ms(lat)
            if idle_kib and hwm_kib:
                row["server_import_growth_mib"] = round((hwm_kib - idle_kib) / 1024, 1)
            rows_out.append(row)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    res["results"] = {"sizes": rows_out}
    cols = ["size", *[f"{LABELS[m]} MiB/s" for m in methods], "HTTP/cp", "HTTP/cp best-of", "HTTP/(cp+sync)"]
    if "cli" in methods:
        cols += ["CLI/cp", "CLI/(cp+sync)"]
    cols += ["copyfile/cp"]
    trows = []
    for row in rows_out:
        r = [row["size"], *[row[f"{m}_mib_s"] for m in methods], f"{fmt(row['http_vs_cp'], 2)}x",
             f"{fmt(row['http_vs_cp_best'], 2)}x", f"{fmt(row['http_vs_cp_sync'], 2)}x"]
        if "cli" in methods:
            r += [f"{fmt(row['cli_vs_cp'], 2)}x", f"{fmt(row['cli_vs_cp_sync'], 2)}x"]
        r += [f"{fmt(row['copyfile_vs_cp'], 2)}x"]
        trows.append(r)
    res["tables"].append(table("Import throughput (median; ratio = throughput / cp -r throughput)", cols, trows,
                               "cp -r and the imports read a source already in the page cache; "
                               "the import fsyncs every file, cp -r does not; best-of = fastest trial of each"))
    res["tables"].append(table(
        "Median wall time per trial (s)", ["size", "reps", *[LABELS[m] for m in methods]],
        [[row["size"], row["reps"], *[fmt(row[f"{m}_s"], 3) for m in methods]] for row in rows_out]))
    res["tables"].append(table(
        "CPU seconds per GiB moved (median; contention-robust)",
        ["size", "cp -r", "cp -r + sync", "copyfile + fsync", "HTTP: client", "HTTP: server",
         *(["CLI: client", "CLI: server"] if "cli" in methods else [])],
        [[row["size"], fmt(row["cp_client_cpu_s_per_gib"], 2), fmt(row["cp_sync_client_cpu_s_per_gib"], 2),
          fmt(row["copyfile_client_cpu_s_per_gib"], 2),
          fmt(row["http_client_cpu_s_per_gib"], 2), fmt(row["http_server_cpu_s_per_gib"], 2),
          *([fmt(row["cli_client_cpu_s_per_gib"], 2), fmt(row["cli_server_cpu_s_per_gib"], 2)]
            if "cli" in methods else [])] for row in rows_out]))
    res["tables"].append(table(
        "Health latency seen by another client during the HTTP import (ms; probe every 50 ms)",
        ["size", "probes", "p50", "p99", "max"],
        [[row["size"], row["health_during_import"]["n"], row["health_during_import"]["p50_ms"],
          row["health_during_import"]["p99_ms"], row["health_during_import"]["max_ms"]] for row in rows_out]))
    res["tables"].append(table(
        "Memory (MiB)", ["size", "server idle RSS", "server peak RSS (VmHWM)", "import growth",
                         *(["CLI peak RSS"] if "cli" in methods else [])],
        [[row["size"], row["server_idle_rss_mib"], row["server_peak_rss_mib"], row.get("server_import_growth_mib"),
          *([row["cli_peak_rss_mib"]] if "cli" in methods else [])] for row in rows_out]))
    worst = min(row["http_vs_cp"] or 0 for row in rows_out)
    res["targets"].append(target("HTTP import throughput vs cp -r (worst size)", f">= {TARGET_RATIO}x",
                                 f"{worst:.2f}x (per size: " + ", ".join(f"{r['size']} {fmt(r['http_vs_cp'], 2)}x"
                                                                      for r in rows_out) + ")",
                                 worst >= TARGET_RATIO))
    if "cli" in methods:
        worst_cli = min(row["cli_vs_cp"] or 0 for row in rows_out)
        res["targets"].append(target("fwemu import throughput vs cp -r (worst size)", f">= {TARGET_RATIO}x",
                                     f"{worst_cli:.2f}x (per size: " + ", ".join(
                                         f"{r['size']} {fmt(r['cli_vs_cp'], 2)}x" for r in rows_out) + ")",
                                     worst_cli >= TARGET_RATIO))
    growth = [row.get("server_import_growth_mib") for row in rows_out if row.get("server_import_growth_mib") is not None]
    if len(growth) >= 2:
        spread = max(growth) - min(growth)
        res["targets"].append(target("server memory flat in size (peak growth spread across sizes)",
                                     f"<= {FLAT_SLACK_MIB:g} MiB", f"{spread:.1f} MiB "
                                     f"(growth {', '.join(f'{g:g}' for g in growth)} MiB)", spread <= FLAT_SLACK_MIB))
    if "cli" not in methods:
        res["notes"].append("fwemu import (client.commands.import_cmd) not importable or disabled: CLI not measured")
    return res


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--sizes", help="comma list, e.g. 64M,512M,2G (default; --quick: 8M,64M)")
    p.add_argument("--reps", type=int, help="trials per method and size (default 3; --quick: 2)")
    p.add_argument("--no-cli", action="store_true", help="skip the fwemu import CLI")
    args = p.parse_args(argv)
    emit(run(args), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
