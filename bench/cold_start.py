"""Cold start: `fwemu serve` to its first 200, against a bare FastAPI app on uvicorn (the floor).

Subprocess (what a test suite's fixture pays), median of --runs, variants interleaved:
  floor            a FastAPI app with one route, run by uvicorn.run (written to a temp file)
  serve in-memory  `python -m fwemu.emulator.cli serve --in-memory`   (what `fwemu serve` runs)
  serve data-dir   `python -m fwemu.emulator.cli serve --data-dir EMPTY`
Each is timed from spawn to the first 200 on GET /_emulator/health (polled every 2 ms with a
fresh stdlib connection), with the process's CPU seconds and RSS at that moment.

One extra `python -X importtime` start of `fwemu serve` (plus one control-plane call) shows
whether torch, numpy or safetensors were imported, and the heaviest imports.

In-process (what an in-process test pays), each in a fresh interpreter, fwemu vs the bare app:
  asgi        import + create_app + first response through httpx.ASGITransport
  testclient  import + create_app + first response through starlette's TestClient (lifespan on)
  thread      import + create_app + ServerThread (real loopback socket) + first 200

    python bench/cold_start.py            # --runs 10 (in-process: 5)
    python bench/cold_start.py --quick    # --runs 3 (in-process: 1)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ACCOUNT, API_KEY, HOST, REPO, base_parser, child_env, emit, fmt, free_port, median, new_result, proc_cpu_s,
    proc_status_kib, ratio, table, target, wait_http_200, warm_bytecode,
)

TARGET = 1.25
HEAVY = ("torch", "numpy", "safetensors", "transformers", "pandas", "hypothesis")

FLOOR_APP = textwrap.dedent("""
    import sys
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/_emulator/health")
    def health():
        return {"status": "ok"}

    if __name__ == "__main__":
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
""")

IN_PROCESS = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    which, mode = sys.argv[1], sys.argv[2]
    if which == "fwemu":
        from fwemu.emulator.app import create_app
        from fwemu.emulator.settings import Settings
        t_import = time.perf_counter()
        app = create_app(Settings(data_dir=None, api_keys={"k": "a"}))
    else:
        sys.path.insert(0, sys.argv[3])
        from fastapi import FastAPI
        t_import = time.perf_counter()
        app = FastAPI()

        @app.get("/_emulator/health")
        def health():
            return {"status": "ok"}
    t_app = time.perf_counter()
    if mode == "asgi":
        import asyncio, httpx

        async def first():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fwemu") as c:
                return (await c.get("/_emulator/health")).status_code
        status = asyncio.run(first())
    elif mode == "testclient":
        from fastapi.testclient import TestClient
        with TestClient(app) as c:
            status = c.get("/_emulator/health").status_code
    else:
        import http.client
        from fwemu.emulator.server_thread import ServerThread
        server = ServerThread(app).start()
        conn = http.client.HTTPConnection(server.host, server.port)
        conn.request("GET", "/_emulator/health")
        status = conn.getresponse().status
    t_first = time.perf_counter()
    print(json.dumps({"status": status, "import_s": t_import - t0, "app_s": t_app - t_import,
                      "first_s": t_first - t_app, "total_s": t_first - t0,
                      "torch": "torch" in sys.modules, "numpy": "numpy" in sys.modules}))
    sys.stdout.flush()
    if mode == "thread":
        server.stop()
""")


def start_once(argv: list[str], port: int, control_plane: bool, env: dict | None = None) -> dict:
    """Spawn, poll health until 200; then (fwemu only) time the first control-plane call."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, env=env or child_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        t1 = wait_http_200(proc, port, "/_emulator/health", timeout_s=60, poll_s=0.002)
        cpu = proc_cpu_s(proc.pid)
        rss = proc_status_kib(proc.pid, "VmRSS")
        first_cp = None
        if control_plane:
            import http.client

            conn = http.client.HTTPConnection(HOST, port, timeout=30)
            conn.request("GET", f"/v1/accounts/{ACCOUNT}/rlorTrainerJobs", headers={"X-Api-Key": API_KEY})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            if resp.status != 200:
                raise RuntimeError(f"first control-plane call answered {resp.status}")
            first_cp = time.perf_counter() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {"wall_s": t1 - t0, "cpu_s": cpu, "rss_mib": round(rss / 1024, 1) if rss else None,
            "first_cp_s": first_cp}


def serve_argv(port: int, data_dir: Path | None) -> list[str]:
    where = ["--data-dir", str(data_dir)] if data_dir else ["--in-memory"]
    return [sys.executable, "-m", "fwemu.emulator.cli", "serve", "--host", HOST, "--port", str(port), *where,
            "--api-key", f"{API_KEY}={ACCOUNT}"]


def import_audit(tmp: Path) -> dict:
    """Start serve under -X importtime, make one control-plane call, and read what was imported."""
    port = free_port()
    err = tmp / "importtime.txt"
    argv = [sys.executable, "-X", "importtime", *serve_argv(port, None)[1:]]
    with open(err, "wb") as f:
        proc = subprocess.Popen(argv, cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL, stderr=f)
        try:
            wait_http_200(proc, port, "/_emulator/health", timeout_s=60)
            import http.client

            conn = http.client.HTTPConnection(HOST, port)
            conn.request("GET", f"/v1/accounts/{ACCOUNT}/rlorTrainerJobs", headers={"X-Api-Key": API_KEY})
            call_status = conn.getresponse().status
            conn.close()
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    modules, top = set(), []
    for line in err.read_text(errors="replace").splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        try:
            cum_us = int(parts[1])
        except ValueError:
            continue
        raw = parts[2]
        name = raw.strip()
        modules.add(name)
        depth = (len(raw) - len(raw.lstrip(" ")) - 1) // 2
        if depth == 0:
            top.append((cum_us, name))
    heavy = {h: any(m == h or m.startswith(h + ".") for m in modules) for h in HEAVY}
    top.sort(reverse=True)
    return {"control_plane_call_status": call_status, "modules": len(modules), "heavy": heavy,
            "top_imports_ms": [[n, round(c / 1e3, 1)] for c, n in top[:10]]}


def in_process(which: str, mode: str, floor_dir: Path) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", IN_PROCESS, which, mode, str(floor_dir)], cwd=REPO,
                         env=child_env(), capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"in-process {which}/{mode} failed: {out.stderr[-2000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_wall_s"] = wall
    if res["status"] != 200:
        raise RuntimeError(f"in-process {which}/{mode}: first response {res['status']}")
    return res


def med(samples: list[dict], key: str, digits: int = 3):
    vals = [s[key] for s in samples if s.get(key) is not None]
    return round(median(vals), digits) if vals else None


def run(args) -> dict:
    runs = args.runs or (3 if args.quick else 10)
    inproc_runs = args.inproc_runs or (1 if args.quick else 5)
    res = new_result("cold_start", "Cold start: fwemu serve vs bare FastAPI on uvicorn", args,
                     {"runs": runs, "in_process_runs": inproc_runs, "poll_interval_ms": 2})
    tmp = Path(tempfile.mkdtemp(prefix="fwemu-bench-cold-", dir=args.tmp_dir))
    R: dict = {}
    try:
        floor_py = tmp / "floor_app.py"
        floor_py.write_text(FLOOR_APP)
        warm_bytecode()
        variants = {
            "floor": lambda port, i: [sys.executable, str(floor_py), str(port)],
            "serve_in_memory": lambda port, i: serve_argv(port, None),
            "serve_data_dir": lambda port, i: serve_argv(port, tmp / f"data-{i}"),
        }
        envs = {k: child_env() for k in variants}
        if os.environ.get("PYTHONDONTWRITEBYTECODE") and not args.skip_env_as_is:
            variants["serve_env_as_is"] = variants["serve_in_memory"]
            envs["serve_env_as_is"] = child_env(bytecode_cache=False)
        # one untimed start of each, so the OS file cache (and the bytecode cache) is warm for all
        for name, make in variants.items():
            port = free_port()
            start_once(make(port, "warm"), port, False, envs[name])
        samples: dict[str, list[dict]] = {k: [] for k in variants}
        names = list(variants)
        for i in range(runs):
            for name in names[i % len(names):] + names[:i % len(names)]:
                port = free_port()
                samples[name].append(start_once(variants[name](port, i), port, name != "floor", envs[name]))
        R["subprocess"] = {k: {"wall_s": med(v, "wall_s"), "cpu_s": med(v, "cpu_s", 2), "rss_mib": med(v, "rss_mib", 1),
                               "first_control_plane_s": med(v, "first_cp_s"),
                               "all_wall_s": [round(s["wall_s"], 3) for s in v]} for k, v in samples.items()}
        R["audit"] = import_audit(tmp)

        inproc: dict[str, dict[str, list[dict]]] = {}
        modes = tuple(args.modes.split(","))
        for _ in range(inproc_runs):
            for mode in modes:
                for which in ("floor", "fwemu"):
                    inproc.setdefault(mode, {}).setdefault(which, []).append(in_process(which, mode, tmp))
        R["in_process"] = {mode: {which: {k: med(v, k) for k in ("import_s", "app_s", "first_s", "total_s",
                                                                 "process_wall_s")}
                                  | {"torch": any(s["torch"] for s in v)}
                                  for which, v in d.items()} for mode, d in inproc.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["results"] = R

    sp, floor = R["subprocess"], R["subprocess"]["floor"]["wall_s"]
    label = {"floor": "bare FastAPI + uvicorn (floor)", "serve_in_memory": "fwemu serve --in-memory",
             "serve_data_dir": "fwemu serve --data-dir (empty)",
             "serve_env_as_is": "fwemu serve --in-memory, env as is (no bytecode cache)"}
    res["tables"].append(table(
        f"Spawn to first 200 on /_emulator/health (median of {runs})",
        ["server", "wall ms", "x floor", "CPU ms at ready", "CPU x floor", "RSS MiB at ready",
         "to first control-plane 200 ms", "all runs ms"],
        [[label[k], round(v["wall_s"] * 1e3, 1), f"{fmt(ratio(v['wall_s'], floor), 2)}x",
          round(v["cpu_s"] * 1e3) if v["cpu_s"] is not None else None,
          f"{fmt(ratio(v['cpu_s'], sp['floor']['cpu_s']), 2)}x", v["rss_mib"],
          round(v["first_control_plane_s"] * 1e3, 1) if v["first_control_plane_s"] else "-",
          " ".join(str(round(x * 1e3)) for x in v["all_wall_s"])] for k, v in sp.items()],
        "CPU at ready = user + system CPU of the server process when health first answered (less "
        "sensitive to other load than wall time); first control-plane call = GET /v1/accounts/{a}/rlorTrainerJobs "
        "right after health; all but 'env as is' use a warm bytecode cache, as an installed fwemu has; 'env as is' "
        "inherits PYTHONDONTWRITEBYTECODE=1, so every emulator module is compiled at every start (not in the target)"))
    ip = R["in_process"]
    rows = []
    for mode, d in ip.items():
        f, w = d["floor"], d["fwemu"]
        rows.append([mode, round(f["total_s"] * 1e3, 1), round(w["total_s"] * 1e3, 1),
                     f"{fmt(ratio(w['total_s'], f['total_s']), 2)}x", round(w["import_s"] * 1e3, 1),
                     round(w["app_s"] * 1e3, 1), round(w["first_s"] * 1e3, 1), round(w["process_wall_s"] * 1e3),
                     w["torch"]])
    res["tables"].append(table(
        f"In-process: import + create_app + first response (ms, median of {inproc_runs}, fresh interpreter each)",
        ["mode", "bare FastAPI", "fwemu", "x floor", "fwemu import", "fwemu create_app", "fwemu first response",
         "fwemu process wall", "torch imported"], rows,
        "asgi: httpx.ASGITransport; testclient: starlette TestClient (runs lifespan); thread: "
        "fwemu.emulator.server_thread.ServerThread on a loopback port; process wall includes interpreter start and exit"))
    au = R["audit"]
    res["tables"].append(table(
        "Imports of `fwemu serve` (python -X importtime, after health + one control-plane call)",
        ["top-level import", "cumulative ms"], au["top_imports_ms"],
        f"{au['modules']} modules; heavy: " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in au["heavy"].items())))
    worst = max(ratio(sp[k]["wall_s"], floor) or 0 for k in ("serve_in_memory", "serve_data_dir"))
    res["targets"].append(target("fwemu serve cold start vs bare FastAPI floor (worst variant)", f"<= {TARGET}x",
                                 f"{worst:.2f}x", worst <= TARGET))
    worst_cpu = max(ratio(sp[k]["cpu_s"], sp["floor"]["cpu_s"]) or 0 for k in ("serve_in_memory", "serve_data_dir"))
    res["targets"].append(target("same, in CPU seconds to ready (contention-robust cross-check)", f"<= {TARGET}x",
                                 f"{worst_cpu:.2f}x", worst_cpu <= TARGET))
    res["targets"].append(target("torch not imported by fwemu serve (start + control-plane call)", "not imported",
                                 "imported" if au["heavy"]["torch"] else "not imported", not au["heavy"]["torch"]))
    res["targets"].append(target("torch not imported by in-process create_app + first response", "not imported",
                                 "imported" if any(d["fwemu"]["torch"] for d in ip.values()) else "not imported",
                                 not any(d["fwemu"]["torch"] for d in ip.values())))
    res["notes"].append(f"torch imported by fwemu serve: {'YES' if au['heavy']['torch'] else 'no'}; "
                        f"numpy: {'yes' if au['heavy']['numpy'] else 'no'}; "
                        f"safetensors: {'yes' if au['heavy']['safetensors'] else 'no'}")
    return res


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, help="subprocess starts per variant (default 10; --quick 3)")
    p.add_argument("--inproc-runs", type=int, help="fresh interpreters per in-process mode (default 5; --quick 1)")
    p.add_argument("--modes", default="asgi,testclient,thread", help="in-process modes (comma list)")
    p.add_argument("--skip-env-as-is", action="store_true",
                   help="do not also time serve without a bytecode cache (when PYTHONDONTWRITEBYTECODE is set)")
    args = p.parse_args(argv)
    emit(run(args), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
