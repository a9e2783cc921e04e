"""Contract-suite speed: state-machine steps per second and examples per second (issue #8, "Trainer").

Runs the contract suite (`contracts.runner.run_contracts`: the state machine, then the focused
properties) with the `ci` profile (8 examples, programs of up to 20 steps) and a fixed seed, in
this process, against:

  socket  InProcessTarget(transport="socket"): the emulator behind uvicorn on a loopback socket in a
          thread, a fresh emulator per example; our client (what tests/contracts and `fwemu contracts` run)
  asgi    the same without a socket (httpx.ASGITransport through our client's sync bridge)
  sdk     the socket target driven by the fireworks-ai SDK (server-side rules only; "not installed"
          when `fireworks.training.sdk` does not import)
  url     UrlTarget on one emulator served over real HTTP by ServerThread(create_app(...)) with a data
          dir, our client: the suite's remote mode, with one server and one account for the whole
          run (no restart rule, no fresh emulator per example, jobs deleted at teardown, listings
          treated as possibly lagging, so resume and promote_latest wait until saved rows are listed)

The targets enable different rules (their capabilities differ), so a steps/s difference mixes the
cost of the transport with the rule mix; the per-rule tables show both.

A step is one executed state-machine rule, initialize rules included, as Hypothesis'
`stateful_step_count` counts them; `contracts.machine.STEPS` counts every execution and the time
spent inside it (two perf_counter calls per step), and the runner puts the state machine's counts
on the Report. Focused properties call rules directly; those calls are reported as "property rule
calls", not as steps. Columns:
  wall s        the whole run_contracts call (state machine + properties)
  CPU s         this process' CPU time over the run (client, harness and in-process server alike)
  examples      Hypothesis examples over every component; examples/s = examples / wall s
  machine s     the state-machine component alone; steps/s = steps / machine s
  in rules / in checks / other   machine s split into time inside rules, inside the invariant check
                that runs after every step, and the rest (Hypothesis, per-example set-up and teardown)

The trainer is the contract suite's tiny stand-in (contracts.targets.TINY_MODEL_SIZE, on CPU, one
OpenMP thread as `fwemu contracts` sets). An untimed warm-up run (1 example, our client) first pays
the one-off imports and first-model costs. No timing is pass/fail; the one target is that the
socket run exercises and passes every invariant (F2 aside, which needs --break), judged only for a
full ci-profile run. Contract failures are reported unshrunk (shrink=False), so a failing run's time
stays comparable.

    python bench/contract_speed.py                      # ci profile, every run
    python bench/contract_speed.py --quick              # 3 examples x 10 steps, state machine only
    python bench/contract_speed.py --runs socket,url --examples 4 --steps 15 --json
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import base_parser, emit, new_result, table, target  # noqa: E402

RUNS = ("socket", "asgi", "sdk", "url")
RUN_TEXT = {"socket": ("in-process, uvicorn socket", "client"), "asgi": ("in-process, ASGI (no socket)", "client"),
            "sdk": ("in-process, uvicorn socket", "fireworks-ai SDK"),
            "url": ("UrlTarget -> ServerThread(create_app)", "client")}
SDK_PROPERTIES = None   # None: every focused property the SDK driver's capabilities allow


def sdk_available() -> str | None:
    """None when the fireworks-ai SDK imports; else why not."""
    try:
        import fireworks.training.sdk  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - absent (or broken) is a fact to report
        return f"not installed ({type(exc).__name__}: {exc})"[:200]
    return None


@contextlib.contextmanager
def env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def url_target(model_size: str):
    """An emulator app on a real loopback socket (ServerThread) with its own data dir, as UrlTarget sees it."""
    from fwemu.contracts.targets import UrlTarget
    from fwemu.emulator.app import create_app
    from fwemu.emulator.server_thread import ServerThread
    from fwemu.emulator.settings import Settings

    key, account = "fw-bench-contracts", "bench-contracts"
    data = Path(tempfile.mkdtemp(prefix="fwemu-bench-contracts-"))
    with env(FWEMU_MODEL_SIZE=model_size, FWEMU_DEVICE="cpu"):
        app = create_app(Settings(data_dir=data, api_keys={key: account}, startup_delay_s=0,
                                  future_long_poll_s=2.0, fault_plan=None))
        server = ServerThread(app).start()
        try:
            yield UrlTarget(server.url, key)
        finally:
            server.stop()
            app.state.services.close()
            shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def make_target(run: str, model_size: str):
    from fwemu.contracts.targets import InProcessTarget

    if run == "url":
        with url_target(model_size) as t:
            yield t
        return
    with InProcessTarget(transport="asgi" if run == "asgi" else "socket", model_size=model_size) as t:
        yield t


def one_run(run: str, args, model_size: str) -> dict:
    from fwemu.contracts.runner import run_contracts

    driver = "sdk" if run == "sdk" else "client"
    properties = False if args.machine_only else (SDK_PROPERTIES if run == "sdk" and SDK_PROPERTIES else True)
    with make_target(run, model_size) as t:
        caps = sorted(t.caps)
        described = t.describe()
        cpu0, t0 = time.process_time(), time.perf_counter()
        report = run_contracts(t, args.examples, args.seed, driver=driver, profile=args.profile, steps=args.steps,
                               shrink=False, properties=properties)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    m = report.machine_run
    machine_s = m.seconds if m else 0.0
    examples = sum(c.examples for c in report.components)
    rule_s = sum(report.rule_seconds.values())
    statuses = {i: r.status for i, r in report.results.items()}
    judged = [i for i in statuses if i != "F2"]
    return {
        "target": described, "driver": driver, "caps": caps,
        "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
        "examples": examples, "examples_per_s": round(examples / wall, 3) if wall else None,
        "machine_examples": m.examples if m else 0, "machine_s": round(machine_s, 3),
        "steps": report.steps, "steps_per_s": round(report.steps / machine_s, 2) if machine_s else None,
        "ms_per_step": round(machine_s / report.steps * 1e3, 2) if report.steps else None,
        "rules_s": round(rule_s, 3), "invariant_checks": report.invariant_checks,
        "invariant_s": round(report.invariant_seconds, 3),
        "other_s": round(machine_s - rule_s - report.invariant_seconds, 3),
        "property_rule_calls": sum(c.steps for c in report.components if c is not m),
        "components": len(report.components),
        "ok": report.ok, "failed": sorted(report.failed_ids), "errors": len(report.errors),
        "passed": sum(statuses[i] == "pass" for i in judged), "judged": len(judged),
        "not_exercised": sorted(i for i in judged if statuses[i] == "not exercised"),
        "rules": {name: {"count": n, "seconds": round(report.rule_seconds.get(name, 0.0), 4)}
                  for name, n in report.rule_counts.items()},
    }


def warm_up(model_size: str) -> float:
    """One tiny untimed run: imports, the first trainer model, the first uvicorn start."""
    from fwemu.contracts.runner import run_contracts
    from fwemu.contracts.targets import InProcessTarget

    t0 = time.perf_counter()
    with InProcessTarget(transport="socket", model_size=model_size) as t:
        run_contracts(t, 1, 0, steps=4, shrink=False, properties=False)
    return time.perf_counter() - t0


def f(x, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def run(args) -> dict:
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_NUM_THREADS", "1")   # as `fwemu contracts` does: tiny models, one thread
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.ERROR)
    if args.tmp_dir:
        tempfile.tempdir = args.tmp_dir
    from fwemu.contracts.runner import PROFILES
    from fwemu.contracts.targets import TINY_MODEL_SIZE

    if args.quick:
        args.examples = args.examples if args.examples is not None else 3
        args.steps = args.steps if args.steps is not None else 10
        args.machine_only = True
    prof = PROFILES[args.profile]
    examples = args.examples if args.examples is not None else prof["max_examples"]
    steps = args.steps if args.steps is not None else prof["steps"]
    full_ci = args.profile == "ci" and examples == prof["max_examples"] and steps == prof["steps"] \
        and not args.machine_only
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = set(runs) - set(RUNS)
    if unknown:
        raise SystemExit(f"unknown run(s) {sorted(unknown)}; choose from {', '.join(RUNS)}")
    model_size = TINY_MODEL_SIZE
    sdk_missing = sdk_available() if "sdk" in runs else None

    warm_s = None if args.no_warmup else warm_up(model_size)
    import torch

    config = {"profile": args.profile, "max_examples": examples, "steps": steps, "seed": args.seed,
              "components": "state machine only" if args.machine_only else "state machine + focused properties",
              "shrink": False, "model_size": model_size, "device": "cpu", "torch_threads": torch.get_num_threads(),
              "runs": runs, "warm_up_s": round(warm_s, 2) if warm_s is not None else None}
    result = new_result("contract_speed", "Contract suite speed (steps/s, examples/s)", args, config)
    out: dict = {}
    for name in runs:
        if name == "sdk" and sdk_missing:
            out[name] = {"skipped": sdk_missing}
            continue
        print(f"[contract_speed] {name} ...", file=sys.stderr, flush=True)
        out[name] = one_run(name, args, model_size)
    result["results"] = {"runs": out, "model_size": model_size,
                         "sdk": "installed" if "sdk" in runs and not sdk_missing else (sdk_missing or "not run")}

    rows, split = [], []
    for name in runs:
        r = out[name]
        where, drv = RUN_TEXT[name]
        if "skipped" in r:
            rows.append([name, where, drv] + ["-"] * 8 + [r["skipped"][:40]])
            continue
        outcome = "ok" if r["ok"] else ("FAIL " + ",".join(r["failed"]) if r["failed"] else f"{r['errors']} errors")
        rows.append([name, where, drv, f(r["wall_s"]), f(r["cpu_s"]), r["examples"], f(r["examples_per_s"], 2),
                     f(r["machine_s"]), r["steps"], f(r["steps_per_s"]), f(r["ms_per_step"]),
                     f"{r['passed']}/{r['judged']} pass; {outcome}"])
        split.append([name, f(r["machine_s"]), f(r["rules_s"]), f(r["invariant_s"]), f(r["other_s"]),
                      r["invariant_checks"], r["property_rule_calls"]])
    result["tables"].append(table(
        "Contract suite runs", ["run", "target", "driver", "wall s", "CPU s", "examples", "examples/s", "machine s",
                                "steps", "steps/s", "ms/step", "invariants"], rows,
        f"{args.profile} profile: {examples} examples x up to {steps} steps, seed {args.seed}; "
        f"trainer model {model_size} on CPU"))
    if split:
        result["tables"].append(table(
            "State machine time split", ["run", "machine s", "in rules s", "in checks s", "other s", "checks",
                                         "property rule calls"], split,
            "other = Hypothesis' generation plus per-example set-up (fresh emulator, account, driver) and teardown"))
    for name in runs:
        r = out[name]
        if "skipped" in r or not r["rules"]:
            continue
        total = sum(v["seconds"] for v in r["rules"].values()) or 1.0
        by_time = sorted(r["rules"].items(), key=lambda kv: -kv[1]["seconds"])[:args.top]
        by_count = sorted(r["rules"].items(), key=lambda kv: (-kv[1]["count"], kv[0]))[:args.top]
        result["tables"].append(table(
            f"Top rules by time: {name}", ["rule", "count", "total s", "mean ms", "share of rule time"],
            [[k, v["count"], f(v["seconds"], 2), f(v["seconds"] / v["count"] * 1e3), f"{v['seconds'] / total:.0%}"]
             for k, v in by_time],
            "by count: " + ", ".join(f"{k} {v['count']}" for k, v in by_count)))

    ref = out.get("socket")
    if ref and "skipped" not in ref:
        value = f"{ref['passed']}/{ref['judged']} pass" + (f"; not exercised: {','.join(ref['not_exercised'])}"
                                                          if ref["not_exercised"] else "") \
            + (f"; FAILED: {','.join(ref['failed'])}" if ref["failed"] else "") \
            + (f"; {ref['errors']} errors" if ref["errors"] else "")
        met = (ref["ok"] and ref["passed"] == ref["judged"]) if full_ci else None
        if not full_ci:
            value += " (reduced run: not judged)"
        result["targets"].append(target("every invariant exercised and passing (socket run, ci profile)",
                                        "all but F2", value, met))
    else:
        result["targets"].append(target("every invariant exercised and passing (socket run, ci profile)",
                                        "all but F2", "socket run not selected", None))
    if "sdk" in runs and sdk_missing:
        result["notes"].append(f"sdk run: fireworks-ai SDK {sdk_missing}")
    if "url" in out and "skipped" not in out["url"]:
        result["notes"].append("url run caps: " + ", ".join(out["url"]["caps"]) + "; socket run caps: "
                               + ", ".join(out["socket"]["caps"] if "socket" in out else []))
    result["notes"].append("every server here runs in this process (threads): client, harness and server share "
                           "the CPU and the GIL; timings on a loaded machine are noisy, CPU s less so")
    return result


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma list of {', '.join(RUNS)} (default: all)")
    p.add_argument("--profile", default="ci", choices=("ci", "default", "nightly"))
    p.add_argument("--examples", type=int, default=None, metavar="N", help="override the profile's examples")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="override the profile's steps per program")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--machine-only", action="store_true", help="skip the focused properties")
    p.add_argument("--top", type=int, default=8, help="rules per 'top rules' table")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up run")
    args = p.parse_args(argv)
    emit(run(args), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
