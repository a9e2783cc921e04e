"""Control-plane latency: checkpoint listing at 10 / 1,000 / 10,000 rows, promotion, and throughput.

Set-up (untimed): small real checkpoint directories are written once by the inspector's own
example writer (`emulator.inspect.examples`, in a subprocess: it needs torch), and every row of
three trainer jobs hard-links their files and is recorded through `Store.write_checkpoint`, so
each row is classified by the real inspector. Only during this set-up are fsync and SQLite's
synchronous mode switched off (10,000 durable commits would take minutes); everything measured
runs the unmodified code against the same data dir.

Measured, over loopback HTTP against a `fwemu serve` subprocess (keep-alive httpx client):
  health                      GET /_emulator/health: the framework floor every ratio is against
  single page, warm           GET .../checkpoints?pageSize=200 (first page), p50 / p99
  full walk, warm             every page at pageSize=200, following nextPageToken
  full walk, cold             the same right after every row's files were touched (new mtime):
                              the fingerprint cache misses and each row is re-inspected, as
                              after `cp -r` of a data dir; p50 / p99 per page and the walk
  first request, fresh process  `fwemu serve` restarted, its first listing
  promotion                   POST /v1/accounts/{a}/checkpoints/{c}:promote (new model each time)
  8 concurrent clients        requests per second for health, a page of 50, a random page of 200
And in-process against the Store (no HTTP): a warm page, `newest_checkpoint`, the query plan.

    python bench/controlplane_latency.py              # 10, 1000, 10000 rows
    python bench/controlplane_latency.py --quick      # 10, 100, 500 rows, fewer repetitions
    python bench/controlplane_latency.py --rows 5,20 --reqs 3 --json
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ACCOUNT, API_KEY, REPO, ServeProcess, base_parser, child_env, emit, fmt, median, new_result, ratio,
    summary_ms, table, target, warm_bytecode,
)

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
DEFAULT_KINDS = "TRAINING,INFERENCE_BASE"   # a full-parameter run: DCP state + HF sampler save per step
PAGE = 200


def job_id(n: int) -> str:
    return f"bench-rows-{n}"


# ------------------------------------------------------------------------------ set-up
def write_templates(dest: Path, kinds: list[str]) -> dict[str, Path]:
    code = ("import sys\nfrom fwemu.emulator.inspect.examples import write_example\n"
            "for k in sys.argv[2:]:\n    write_example(k, sys.argv[1] + '/' + k)\n")
    subprocess.run([sys.executable, "-c", code, str(dest), *kinds], check=True, cwd=REPO, env=child_env(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {k: dest / k for k in kinds}


@contextlib.contextmanager
def no_fsync(store):
    """Set-up only: skip fsync and SQLite's synchronous commits while rows are created."""
    import fwemu.emulator.store.atomic as atomic

    saved = atomic.fsync_tree, atomic.fsync_dir
    atomic.fsync_tree = atomic.fsync_dir = lambda _p: None
    store.db.execute("PRAGMA synchronous=OFF")
    try:
        yield
    finally:
        atomic.fsync_tree, atomic.fsync_dir = saved
        store.db.execute("PRAGMA synchronous=FULL")
        os.sync()


def populate(data_dir: Path, templates: dict[str, Path], sizes: list[int]) -> dict:
    from fwemu.emulator.store import Store

    kinds = list(templates)
    files = {k: sorted(p.iterdir()) for k, p in templates.items()}
    store = Store(data_dir)
    t0 = time.perf_counter()
    with no_fsync(store):
        for n in sizes:
            store.create_job(ACCOUNT, job_id(n), {"trainingConfig": {"baseModel": BASE_MODEL}}, 0)
            for i in range(n):
                kind = kinds[i % len(kinds)]
                with store.write_checkpoint(ACCOUNT, job_id(n), f"step-{i:05d}-{kind.lower()}") as staging:
                    for f in files[kind]:
                        os.link(f, staging / f.name)
    return {"store": store, "seconds": time.perf_counter() - t0, "rows": sum(sizes)}


def touch(templates: dict[str, Path]) -> None:
    """New mtime on every template file: every hard-linked row's fingerprint changes."""
    now = time.time_ns()
    for p in templates.values():
        for f in p.iterdir():
            now += 1_000
            os.utime(f, ns=(now, now))


# ------------------------------------------------------------------------------ store level
def store_level(store, sizes: list[int], reqs: int) -> dict:
    from fwemu.emulator.inspect import Kind

    out = {}
    for n in sizes:
        store.list_checkpoints(ACCOUNT, job_id(n), PAGE)
        samples = []
        for _ in range(reqs):
            t0 = time.perf_counter()
            store.list_checkpoints(ACCOUNT, job_id(n), PAGE)
            samples.append(time.perf_counter() - t0)
        newest = []
        for _ in range(max(3, reqs // 4)):
            t0 = time.perf_counter()
            store.newest_checkpoint(ACCOUNT, job_id(n), {Kind.INFERENCE_BASE, Kind.TRAINING})
            newest.append(time.perf_counter() - t0)
        out[str(n)] = {"page_warm": summary_ms(samples), "newest_checkpoint": summary_ms(newest)}
    sql = ("SELECT * FROM checkpoints WHERE account=? AND job_id=? AND kind IS NOT NULL"
           " AND (create_us, name) > (?, ?) ORDER BY create_us ASC, name ASC LIMIT ?")
    plan = store.db.execute("EXPLAIN QUERY PLAN " + sql, [ACCOUNT, job_id(max(sizes)), 0, "", PAGE + 1]).fetchall()
    out["query_plan"] = [r[-1] for r in plan]
    return out


# ------------------------------------------------------------------------------ HTTP
class Api:
    def __init__(self, url: str):
        import httpx

        self.url = url
        self.client = httpx.Client(base_url=url, headers={"X-Api-Key": API_KEY}, timeout=120)

    def health(self) -> float:
        t0 = time.perf_counter()
        r = self.client.get("/_emulator/health")
        dt = time.perf_counter() - t0
        assert r.status_code == 200, r.text
        return dt

    def page(self, n: int, page_size: int = PAGE, token: str = "") -> tuple[float, dict]:
        params = {"pageSize": page_size}
        if token:
            params["pageToken"] = token
        t0 = time.perf_counter()
        r = self.client.get(f"/v1/accounts/{ACCOUNT}/rlorTrainerJobs/{job_id(n)}/checkpoints", params=params)
        dt = time.perf_counter() - t0
        if r.status_code != 200:
            raise RuntimeError(f"listing answered {r.status_code}: {r.text[:300]}")
        return dt, r.json()

    def walk(self, n: int) -> tuple[float, list[float], list[str], int]:
        """(walk seconds, per-page seconds, page tokens, rows seen)."""
        pages, tokens, seen, token = [], [], 0, ""
        t0 = time.perf_counter()
        while True:
            dt, body = self.page(n, PAGE, token)
            pages.append(dt)
            seen += len(body["checkpoints"])
            token = body.get("nextPageToken") or ""
            if not token:
                break
            tokens.append(token)
        return time.perf_counter() - t0, pages, tokens, seen

    def promote(self, n: int, name: str, model_id: str) -> float:
        body = {"output_model": f"accounts/{ACCOUNT}/models/{model_id}",
                "trainer_job_id": f"accounts/{ACCOUNT}/rlorTrainerJobs/{job_id(n)}", "base_model": BASE_MODEL}
        t0 = time.perf_counter()
        r = self.client.post(f"/v1/accounts/{ACCOUNT}/checkpoints/{name}:promote", json=body)
        dt = time.perf_counter() - t0
        if r.status_code != 200:
            raise RuntimeError(f"promote answered {r.status_code}: {r.text[:300]}")
        return dt

    def close(self) -> None:
        self.client.close()


def load(url: str, clients: int, seconds: float, make_request) -> dict:
    """`clients` threads, each with its own keep-alive connection, for `seconds`."""
    import httpx

    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(i: int) -> None:
        rng = random.Random(i)
        with httpx.Client(base_url=url, headers={"X-Api-Key": API_KEY}, timeout=120) as c:
            make_request(c, rng)  # connect + warm
            barrier.wait()
            while time.perf_counter() < stop_at[0]:
                t0 = time.perf_counter()
                ok = make_request(c, rng)
                latencies[i].append(time.perf_counter() - t0)
                errors[i] += 0 if ok else 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + 3600
    barrier.wait()
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    flat = [x for lat in latencies for x in lat]
    return {"requests": len(flat), "errors": sum(errors), "seconds": round(elapsed, 3),
            "rps": round(len(flat) / elapsed, 1), **summary_ms(flat)}


# ------------------------------------------------------------------------------ main
def run(args) -> dict:
    sizes = [int(x) for x in (args.rows or ("10,100,500" if args.quick else "10,1000,10000")).split(",")]
    reqs = args.reqs or (20 if args.quick else 100)
    walks = args.walks or (1 if args.quick else 3)
    load_s = args.load_seconds or (1.0 if args.quick else 5.0)
    promotions = args.promotions or (5 if args.quick else 30)
    restarts = args.restarts or (1 if args.quick else 3)
    kinds = args.kinds.split(",")
    res = new_result("controlplane_latency", "Control-plane latency and throughput", args,
                     {"rows": sizes, "page_size": PAGE, "requests_per_point": reqs, "warm_walks": walks,
                      "load_seconds": load_s, "concurrent_clients": args.clients, "promotions": promotions,
                      "restarts": restarts, "row_kinds": kinds})
    base = Path(tempfile.mkdtemp(prefix="fwemu-bench-cp-", dir=args.tmp_dir))
    R: dict = {"rows": {}}
    warm_bytecode()
    try:
        templates = write_templates(base / "templates", kinds)
        pop = populate(base / "data", templates, sizes)
        R["setup"] = {"rows": pop["rows"], "seconds": round(pop["seconds"], 2),
                      "template_bytes": {k: sum(f.stat().st_size for f in p.iterdir()) for k, p in templates.items()}}
        store = pop["store"]
        R["store"] = store_level(store, sizes, reqs)
        store.close()

        server = ServeProcess(base / "data").start()
        api = Api(server.url)
        try:
            for _ in range(5):
                api.health()
            s0 = server.cpu_s()
            health = [api.health() for _ in range(reqs)]
            R["health"] = {**summary_ms(health), "server_cpu_ms": round((server.cpu_s() - s0) * 1e3 / reqs, 3)}
            for n in sizes:
                row: dict = {}
                # cold: touch every file, then walk (each page re-inspects and re-records its rows)
                cold_pages, cold_walk = [], []
                for _ in range(max(1, min(3, 1000 // n))):  # each cold walk re-inspects n rows
                    touch(templates)
                    s0 = server.cpu_s()
                    w, pages, _tok, seen = api.walk(n)
                    cold_walk.append(w)
                    cold_pages += pages
                    row["cold_server_cpu_ms_per_row"] = round((server.cpu_s() - s0) * 1e3 / max(seen, 1), 3)
                row["cold_page"] = summary_ms(cold_pages)
                row["cold_walk"] = summary_ms(cold_walk)
                # warm walks
                warm_pages, warm_walk, tokens, seen = [], [], [], 0
                for _ in range(walks):
                    w, pages, tokens, seen = api.walk(n)
                    warm_walk.append(w)
                    warm_pages += pages
                row["rows_listed"] = seen
                row["pages"] = len(tokens) + 1
                row["warm_walk"] = summary_ms(warm_walk)
                row["warm_walk_page"] = summary_ms(warm_pages)
                # warm single (first) page
                api.page(n)
                s0 = server.cpu_s()
                single = [api.page(n)[0] for _ in range(reqs)]
                row["warm_page"] = summary_ms(single)
                row["warm_page_server_cpu_ms"] = round((server.cpu_s() - s0) * 1e3 / reqs, 3)
                row["tokens"] = tokens
                R["rows"][str(n)] = row

            # promotion latency, in the smallest and the largest job
            prom = {}
            for n in (sizes[0], sizes[-1]):
                names = [f"step-{i:05d}-inference_base" for i in range(n) if kinds[i % len(kinds)] == "INFERENCE_BASE"]
                if not names:
                    continue
                lat = [api.promote(n, names[i % len(names)], f"m-{n}-{i}") for i in range(promotions)]
                prom[str(n)] = summary_ms(lat)
            R["promotion"] = prom

            # throughput with concurrent clients
            big, mid = sizes[-1], sizes[len(sizes) // 2]
            big_tokens = [""] + R["rows"][str(big)]["tokens"]
            lp = f"/v1/accounts/{ACCOUNT}/rlorTrainerJobs/"

            def health_req(c, _rng):
                return c.get("/_emulator/health").status_code == 200

            def page50(c, _rng):
                return c.get(f"{lp}{job_id(mid)}/checkpoints", params={"pageSize": 50}).status_code == 200

            def random200(c, rng):
                tok = rng.choice(big_tokens)
                params = {"pageSize": PAGE, **({"pageToken": tok} if tok else {})}
                return c.get(f"{lp}{job_id(big)}/checkpoints", params=params).status_code == 200

            R["load"] = {}
            for label, fn in (("health", health_req), (f"list pageSize=50, {mid} rows", page50),
                              (f"list pageSize=200, random page of {big} rows", random200)):
                s0 = server.cpu_s()
                out = load(server.url, args.clients, load_s, fn)
                out["server_cpu_ms_per_req"] = round((server.cpu_s() - s0) * 1e3 / max(out["requests"], 1), 3)
                R["load"][label] = out
        finally:
            api.close()
            server.stop()

        # first listing in a fresh process
        fresh = []
        for _ in range(restarts):
            with ServeProcess(base / "data") as s2:
                a2 = Api(s2.url)
                fresh.append({"start_to_health_s": round(s2.ready_at - s2.started_at, 3),
                              "first_page_ms": round(a2.page(sizes[-1])[0] * 1e3, 2),
                              "second_page_ms": round(a2.page(sizes[-1])[0] * 1e3, 2)})
                a2.close()
        R["fresh_process"] = fresh
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for row in R["rows"].values():
        row.pop("tokens", None)
    res["results"] = R
    build_tables(res, sizes)
    return res


def build_tables(res: dict, sizes: list[int]) -> None:
    R = res["results"]
    h = R["health"]
    res["tables"].append(table(
        f"Listing latency over HTTP, pageSize={PAGE} (ms; ratio = p50 / health p50 {h['p50_ms']} ms)",
        ["rows", "warm page p50", "warm page p99", "x health", "server CPU/page", "warm walk p50",
         "pages", "cold page p50", "cold page p99", "cold walk", "cold CPU/row"],
        [[n, r["warm_page"]["p50_ms"], r["warm_page"]["p99_ms"], f"{fmt(ratio(r['warm_page']['p50_ms'], h['p50_ms']))}x",
          r["warm_page_server_cpu_ms"], r["warm_walk"]["p50_ms"], r["pages"], r["cold_page"]["p50_ms"],
          r["cold_page"]["p99_ms"], r["cold_walk"]["p50_ms"], r.get("cold_server_cpu_ms_per_row")]
         for n, r in ((n, R["rows"][str(n)]) for n in sizes)],
        "warm: fingerprints match the cache; cold: every row's files got a new mtime, so every row "
        "is re-inspected and its row rewritten (one commit per page)"))
    st = R["store"]
    res["tables"].append(table(
        "In-process Store (no HTTP), ms",
        ["rows", f"list_checkpoints({PAGE}) p50", "p99", "HTTP overhead p50", "newest_checkpoint p50"],
        [[n, st[str(n)]["page_warm"]["p50_ms"], st[str(n)]["page_warm"]["p99_ms"],
          fmt(R["rows"][str(n)]["warm_page"]["p50_ms"] - st[str(n)]["page_warm"]["p50_ms"], 2),
          st[str(n)]["newest_checkpoint"]["p50_ms"]] for n in sizes],
        "query plan of a page: " + " / ".join(st["query_plan"])))
    if R.get("promotion"):
        res["tables"].append(table("Promotion latency (ms)", ["job rows", "n", "p50", "p99", "max"],
                                   [[int(n), p["n"], p["p50_ms"], p["p99_ms"], p["max_ms"]]
                                    for n, p in R["promotion"].items()]))
    hl = R["load"]["health"]["rps"]
    res["tables"].append(table(
        f"{res['config']['concurrent_clients']} concurrent clients over loopback",
        ["request", "req/s", "x health", "p50 ms", "p99 ms", "server CPU ms/req", "errors"],
        [[k, v["rps"], f"{fmt(ratio(v['rps'], hl), 2)}x", v["p50_ms"], v["p99_ms"], v["server_cpu_ms_per_req"],
          v["errors"]] for k, v in R["load"].items()]))
    fr = R["fresh_process"]
    res["tables"].append(table(
        f"Fresh `fwemu serve` on the populated data dir (median of {len(fr)})",
        ["start to health (s)", f"first page of {sizes[-1]} rows (ms)", "second page (ms)"],
        [[median([f["start_to_health_s"] for f in fr]), median([f["first_page_ms"] for f in fr]),
          median([f["second_page_ms"] for f in fr])]]))
    res["tables"].append(table("Set-up (untimed in results)", ["rows created", "seconds", "template bytes"],
                               [[R["setup"]["rows"], R["setup"]["seconds"], json.dumps(R["setup"]["template_bytes"])]]))
    big = R["rows"][str(sizes[-1])]
    res["targets"].append(target(f"warm single page at {sizes[-1]} rows (p99)", "< 50 ms",
                                 f"{big['warm_page']['p99_ms']} ms", big["warm_page"]["p99_ms"] < 50))
    full = [n for n in sizes if n >= PAGE]
    if len(full) >= 2:
        a, b = R["rows"][str(full[0])], R["rows"][str(full[-1])]
        growth = ratio(b["warm_page_server_cpu_ms"], a["warm_page_server_cpu_ms"])
        res["targets"].append(target(
            f"warm full page independent of job size (server CPU per page at {full[-1]} rows / at {full[0]})",
            "<= 1.25x", f"{fmt(growth, 2)}x ({b['warm_page_server_cpu_ms']} vs {a['warm_page_server_cpu_ms']} ms; "
            f"wall p50 {b['warm_page']['p50_ms']} vs {a['warm_page']['p50_ms']} ms)", growth is not None and growth <= 1.25))
        na, nb = st[str(full[0])]["newest_checkpoint"]["p50_ms"], st[str(full[-1])]["newest_checkpoint"]["p50_ms"]
        g2 = ratio(nb, na)
        res["targets"].append(target(
            f"Store.newest_checkpoint independent of job size (p50 at {full[-1]} rows / at {full[0]})", "<= 1.25x",
            f"{fmt(g2, 2)}x ({nb} vs {na} ms)", g2 is not None and g2 <= 1.25))
    res["targets"].append(target(f"cold page at {sizes[-1]} rows (p50)", "< 250 ms",
                                 f"{big['cold_page']['p50_ms']} ms", big["cold_page"]["p50_ms"] < 250))


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--rows", help="comma list of job sizes (default 10,1000,10000; --quick 10,100,500)")
    p.add_argument("--reqs", type=int, help="requests per latency point (default 100; --quick 20)")
    p.add_argument("--walks", type=int, help="warm full walks per job (default 3; --quick 1)")
    p.add_argument("--promotions", type=int, help="promotions per job (default 30; --quick 5)")
    p.add_argument("--restarts", type=int, help="fresh-process samples (default 3; --quick 1)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients for req/s (default 8)")
    p.add_argument("--load-seconds", type=float, help="seconds per throughput point (default 5; --quick 1)")
    p.add_argument("--kinds", default=DEFAULT_KINDS, help=f"row kinds, round-robin (default {DEFAULT_KINDS})")
    args = p.parse_args(argv)
    emit(run(args), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
