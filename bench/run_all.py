"""Run every bench script and write docs/benchmarks.md from the results.

Each script runs in its own interpreter with --json (and --quick when asked and supported); its
JSON is rendered into tables. Scripts written by others (inspect_cost.py, trainer_step.py) are
run when present; their JSON is rendered generically if it has no `tables`.

    python bench/run_all.py                       # full run (about 5-10 minutes), writes docs/benchmarks.md
    python bench/run_all.py --quick               # small sizes, writes docs/benchmarks.md too
    python bench/run_all.py --quick --out /tmp/b.md --raw /tmp/b.json --only cold_start
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, child_env, fmt, loadavg, machine_info, now_iso  # noqa: E402

BENCH = Path(__file__).resolve().parent
OURS = ["cold_start", "controlplane_latency", "import_throughput", "contract_speed", "deploy_speed", "dcp_multirank"]
OTHERS = ["inspect_cost", "trainer_step"]
# the smallest configuration of each of our scripts (tests/bench uses it through --tiny)
TINY = {
    "cold_start": ["--runs", "1", "--inproc-runs", "1", "--modes", "asgi", "--skip-env-as-is"],
    "controlplane_latency": ["--rows", "3,7", "--reqs", "3", "--walks", "1", "--promotions", "1", "--restarts", "1",
                             "--load-seconds", "0.3", "--clients", "2"],
    "import_throughput": ["--sizes", "1M", "--reps", "1"],
    "contract_speed": ["--runs", "socket,url", "--examples", "1", "--steps", "5", "--machine-only", "--no-warmup"],
    "deploy_speed": ["--sizes", "default", "--reps", "1", "--tokens", "8", "--loads", "1,2", "--chain", "2"],
    "dcp_multirank": ["--quick", "--larger", "hidden=64,layers=2,heads=4,kv_heads=2,intermediate=128"],
}
TITLES = {"inspect_cost": "Inspector cost vs checkpoint size", "trainer_step": "Trainer step / save / load"}


def script_help(path: Path) -> str:
    try:
        return subprocess.run([sys.executable, str(path), "--help"], cwd=REPO, env=child_env(), capture_output=True,
                              text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def argv_for(name: str, args) -> list[str]:
    path = BENCH / f"{name}.py"
    extra: list[str] = []
    help_text = script_help(path) if name not in OURS else "--quick --json --tmp-dir"
    if "--json" in help_text:
        extra.append("--json")
    if args.tiny and name in TINY:
        extra += TINY[name]
    elif args.quick or args.tiny:
        if "--quick" in help_text:
            extra.append("--quick")
        elif "--reps" in help_text:
            extra += ["--reps", "1" if args.tiny else "2"]
    if args.tmp_dir and "--tmp-dir" in help_text:
        extra += ["--tmp-dir", args.tmp_dir]
    return [sys.executable, str(path.relative_to(REPO)), *extra]


def last_json(text: str):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def wait_quiet(max_wait_s: float, busy_fraction: float = 0.25) -> float | None:
    """Wait (at most max_wait_s) for a 1-second window in which other processes use < busy_fraction of the CPUs."""
    if max_wait_s <= 0:
        return None

    def busy() -> float:
        def snap():
            vals = list(map(int, Path("/proc/stat").read_text().splitlines()[0].split()[1:]))
            idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
            return sum(vals), idle
        t1, i1 = snap()
        time.sleep(1.0)
        t2, i2 = snap()
        return 1.0 - (i2 - i1) / max(t2 - t1, 1)

    deadline = time.monotonic() + max_wait_s
    b = busy()
    while b > busy_fraction and time.monotonic() < deadline:
        b = busy()
    return round(b, 2)


def run_one(name: str, args) -> dict:
    argv = argv_for(name, args)
    busy = wait_quiet(args.wait_quiet)
    t0 = time.perf_counter()
    load0 = loadavg()
    try:
        proc = subprocess.run(argv, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=args.timeout)
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out, err, rc = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or ""), \
            f"timed out after {args.timeout} s", -1
    wall = time.perf_counter() - t0
    data = last_json(out) if rc == 0 else None
    entry = {"name": name, "command": shlex.join(argv[1:]).replace(sys.executable, "python"),
             "argv": ["python", *argv[1:]], "rc": rc, "wall_s": round(wall, 1), "loadavg_before": load0,
             "loadavg_after": loadavg(), "cpu_busy_before": busy, "result": data}
    if rc != 0 or data is None:
        entry["error"] = (err or out)[-3000:]
    return entry


# ------------------------------------------------------------------------------ rendering
def md_table(columns: list[str], rows: list[list]) -> list[str]:
    def cell(x):
        return str(x).replace("|", "\\|").replace("\n", " ")
    out = ["| " + " | ".join(cell(c) for c in columns) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return out


def _scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _show(v) -> str:
    if isinstance(v, float):
        return fmt(v, 4 if abs(v) < 1 else 2)
    return fmt(v) if not isinstance(v, str) else v


def generic_tables(obj, title: str = "results") -> list[dict]:
    """Tables for a JSON result that has none: scalars as key/value, lists of dicts as rows."""
    tables: list[dict] = []
    if isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj):
        cols = []
        for x in obj:
            cols += [k for k in x if k not in cols and _scalar(x[k])]
        tables.append({"title": title, "columns": cols, "rows": [[_show(x.get(k)) for k in cols] for x in obj]})
        return tables
    if not isinstance(obj, dict):
        return [{"title": title, "columns": ["value"], "rows": [[_show(obj)]]}]
    scalars = [[k, _show(v)] for k, v in obj.items() if _scalar(v)]
    if scalars:
        tables.append({"title": title, "columns": ["metric", "value"], "rows": scalars})
    for k, v in obj.items():
        if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            cols = []
            for x in v.values():
                cols += [c for c in x if c not in cols and _scalar(x[c])]
            tables.append({"title": f"{title}: {k}", "columns": [k, *cols],
                           "rows": [[rk, *[_show(x.get(c)) for c in cols]] for rk, x in v.items()]})
        elif isinstance(v, (dict, list)) and not _scalar(v):
            tables += generic_tables(v, f"{title}: {k}")
    return tables


def render(entries: list[dict], args, started: str, machine: dict, total_s: float) -> str:
    L = ["# fwemu benchmarks", "",
         f"Generated by `python bench/run_all.py{' --quick' if args.quick else ''}{' --tiny' if args.tiny else ''}` "
         f"on {started} (total {total_s:.0f} s). Every figure below comes from that one run; ratios are "
         "against a baseline measured in the same run, on the same machine.", ""]
    if args.quick or args.tiny:
        L += ["> **Quick/tiny run**: small sizes and few repetitions; use the full run for published figures.", ""]
    L += ["## Machine", ""]
    L += md_table(["", ""], [["CPU", machine["cpu"]], ["cores", f"{machine['cores']} (usable {machine['usable_cores']})"],
                             ["RAM", f"{machine['ram_gib']} GiB"], ["Python", machine["python"]], ["OS", machine["os"]],
                             ["temp file system", machine["tmp_fs"]],
                             ["libraries", ", ".join(f"{k} {v}" for k, v in machine["libs"].items() if v)
                              + "; absent: " + (", ".join(k for k, v in machine["libs"].items() if not v) or "none")],
                             ["bytecode", machine.get("bytecode", "")],
                             ["1-min load average at start", machine["loadavg_1m_at_start"]]])
    L += ["", "The machine may be shared: each section gives the 1-minute load average before and after its "
          "script. Wall-clock figures taken under load are pessimistic; CPU-time columns are much less sensitive.", ""]

    targets = [(e["name"], t) for e in entries if e.get("result") for t in e["result"].get("targets", [])]
    if targets:
        L += ["## Targets", ""]
        L += md_table(["bench", "target", "goal", "measured", "met"],
                      [[n, t["name"], t["target"], t["value"], {True: "**yes**", False: "**NO**", None: "n/a"}[t["met"]]]
                       for n, t in targets])
        L.append("")

    L += ["## Commands", "", "```"]
    L += [e["command"] for e in entries]
    L += ["```", ""]

    for e in entries:
        r = e.get("result") or {}
        L += [f"## {r.get('title') or TITLES.get(e['name'], e['name'])}", ""]
        L += [f"`{e['command']}` — exit {e['rc']}, {e['wall_s']} s, load {e['loadavg_before']} -> {e['loadavg_after']}"
              + (f", other processes' CPU share before start {e['cpu_busy_before']}" if e.get("cpu_busy_before") is not None else ""),
              ""]
        if e.get("error"):
            L += ["**Failed:**", "", "```", e["error"].strip()[-2000:], "```", ""]
            continue
        doc = (BENCH / f"{e['name']}.py")
        tables = r.get("tables") or generic_tables({k: v for k, v in r.items() if k not in ("machine",)}, e["name"])
        if r.get("config"):
            L += ["Configuration: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in r["config"].items()), ""]
        for t in tables:
            L += [f"**{t['title']}**", ""]
            L += md_table(t["columns"], t["rows"])
            if t.get("note"):
                L += ["", f"_{t['note']}_"]
            L.append("")
        for t in r.get("targets", []):
            L.append(f"- target: {t['name']}: {t['value']} (goal {t['target']}) — "
                     f"{ {True: 'met', False: 'NOT met', None: 'n/a'}[t['met']] }")
        for n in r.get("notes", []):
            L.append(f"- note: {n}")
        if r.get("targets") or r.get("notes"):
            L.append("")
        if doc.exists():
            L += [f"Method: see the docstring of `bench/{e['name']}.py`.", ""]
    return "\n".join(L).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="pass --quick to every script (small, fast)")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # smoke tests: smallest configuration
    p.add_argument("--only", default="", help="comma list of script names to run")
    p.add_argument("--skip", default="", help="comma list of script names to skip")
    p.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"), help="markdown to write ('' = none)")
    p.add_argument("--raw", default="", help="also write the combined JSON here")
    p.add_argument("--json", action="store_true", help="print the combined JSON")
    p.add_argument("--tmp-dir", default=None)
    p.add_argument("--timeout", type=float, default=900, help="seconds per script")
    p.add_argument("--wait-quiet", type=float, default=0,
                   help="before each script wait up to this many seconds for other processes to go quiet")
    args = p.parse_args(argv)

    names = [n for n in OURS + OTHERS if (BENCH / f"{n}.py").exists()]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    names = [n for n in names if n not in args.skip.split(",")]
    started, machine = now_iso(), machine_info(args.tmp_dir)
    t0 = time.perf_counter()
    entries = []
    for n in names:
        print(f"[run_all] {n} ...", file=sys.stderr, flush=True)
        e = run_one(n, args)
        print(f"[run_all] {n}: exit {e['rc']} in {e['wall_s']} s", file=sys.stderr, flush=True)
        entries.append(e)
    total = time.perf_counter() - t0
    combined = {"date": started, "machine": machine, "quick": args.quick, "tiny": args.tiny,
                "total_s": round(total, 1), "benches": entries}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(render(entries, args, started, machine, total))
        print(f"[run_all] wrote {args.out}", file=sys.stderr)
    if args.raw:
        Path(args.raw).write_text(json.dumps(combined, indent=1, default=str))
    if args.json:
        print(json.dumps(combined, default=str))
    return 0 if all(e["rc"] == 0 and e.get("result") is not None for e in entries) else 1


if __name__ == "__main__":
    raise SystemExit(main())
