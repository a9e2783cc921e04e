"""Dashboard speed: a job with 10,000 checkpoint rows and 10,000 recorded steps.

Set-up (untimed): one real HF checkpoint directory is written by the inspector's example writer
(in a subprocess: it needs torch); every row hard-links its files and is recorded through
`Store.write_checkpoint`, so each row is classified by the real inspector. 10,000 step records are
appended through the real `StepLog.append`. fsync is off during set-up only (as in
controlplane_latency.py).

Measured, in the same run, each beside its baseline:
  job page, first page         GET /dashboard/jobs/<job> (first page of 50 rows + both charts from the
                               10,000-step log), through the app in process (FastAPI TestClient: no
                               socket), three ways:
    while training             one new step is appended (untimed) before each request: the log parses
                               the new line, both charts are drawn again
    idle                       no new step: the charts of the previous view are reused
    first view after a restart the first request to a fresh app on the same data dir: the whole log
                               is parsed from disk
    baseline                   GET /v1/.../checkpoints?pageSize=50: the plain JSON listing of the same rows
  chart render                 svg_chart.line_chart on the 10,000 loss points (pure function)
    baseline                   json.dumps of the same 10,000 points
  step log read                StepLog.read of the 10,000 records (parse), for the record

    python bench/dashboard_speed.py             # 10,000 rows, 10,000 steps
    python bench/dashboard_speed.py --quick     # 1,000 rows, 10,000 steps, fewer repetitions
    python bench/dashboard_speed.py --rows 200 --steps 500 --reqs 5 --json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ACCOUNT, API_KEY, REPO, base_parser, child_env, emit, fmt, new_result, ratio, summary_ms, table, target,
)

JOB = "bench-dashboard"
BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
GOAL_MS = 100.0


def write_template(dest: Path) -> Path:
    code = ("import sys\nfrom fwemu.emulator.inspect.examples import write_example\n"
            "write_example('INFERENCE_BASE', sys.argv[1])\n")
    subprocess.run([sys.executable, "-c", code, str(dest)], check=True, cwd=REPO, env=child_env(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return dest


def populate(data_dir: Path, template: Path, rows: int, steps: int) -> dict:
    from fwemu.emulator.store import Store, metrics_log

    files = sorted(template.iterdir())
    store = Store(data_dir)
    store.db.execute("PRAGMA synchronous=OFF")  # set-up only
    t0 = time.perf_counter()
    job = store.create_job(ACCOUNT, JOB, {"trainingConfig": {"baseModel": BASE_MODEL}}, 0)
    for i in range(rows):
        with store.write_checkpoint(ACCOUNT, JOB, f"step-{i:05d}-base") as staging:
            for f in files:
                os.link(f, staging / f.name)
    rows_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(1, steps + 1):
        rec = metrics_log.step_record(
            t_us=job.create_us + i, generation=0, model_id="model-0", fb_calls=2,
            fb_metrics={"loss:sum": 1000.0 / (1 + i * 0.01)},
            step_metrics={"step:max": float(i), "loss_tokens:sum": 256.0, "grad_norm:mean": 1.0 + 1.0 / i,
                          "learning_rate:mean": 1e-4})
        store.step_log.append(ACCOUNT, JOB, job.create_us, rec)
    steps_s = time.perf_counter() - t0
    store.close()
    return {"rows_setup_s": round(rows_s, 2), "steps_setup_s": round(steps_s, 2),
            "append_us_per_step": round(steps_s / max(steps, 1) * 1e6, 1)}


def timed(fn, reqs: int, warm: int = 2) -> list[float]:
    for _ in range(warm):
        fn()
    out = []
    for _ in range(reqs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def measure(data_dir: Path, reqs: int, steps: int) -> dict:
    from fastapi.testclient import TestClient

    from fwemu.emulator.app import create_app
    from fwemu.emulator.dashboard.queries import charts
    from fwemu.emulator.dashboard.svg_chart import Series, line_chart
    from fwemu.emulator.settings import Settings
    from fwemu.emulator.store import metrics_log

    settings = Settings(data_dir=data_dir, api_keys={API_KEY: ACCOUNT}, startup_delay_s=0, quirks=frozenset(),
                        breaks=frozenset())
    with TestClient(create_app(settings)) as http:
        http.headers["X-Api-Key"] = API_KEY
        store = http.app.state.services.store
        job = store.get_job(ACCOUNT, JOB)

        def page():
            r = http.get(f"/dashboard/jobs/{JOB}")
            assert r.status_code == 200 and 'data-row="step-00000-base"' in r.text, r.text[:300]
            return len(r.content)

        def listing():
            r = http.get(f"/v1/accounts/{ACCOUNT}/rlorTrainerJobs/{JOB}/checkpoints", params={"pageSize": 50})
            assert r.status_code == 200 and len(r.json()["checkpoints"]) == 50
            return len(r.content)

        page_bytes, listing_bytes = page(), listing()
        page_s = timed(page, reqs)  # idle: no new step between two views
        listing_s = timed(listing, reqs)
        training_s = []
        for i in range(reqs + 2):
            last = store.step_log.read(ACCOUNT, JOB, job.create_us)[-1]
            store.step_log.append(ACCOUNT, JOB, job.create_us, {**last, "t": last["t"] + 1,
                                                                 "step": last["step"] + 1})
            t0 = time.perf_counter()
            page()
            if i >= 2:
                training_s.append(time.perf_counter() - t0)

        records = store.step_log.read(ACCOUNT, JOB, job.create_us)[:steps]  # without the steps added above
        points = [(i, metrics_log.loss_per_token(r)) for i, r in enumerate(records, 1)]
        svg = line_chart([Series("model-0", points)], title="loss")
        chart_s = timed(lambda: line_chart([Series("model-0", points)], title="loss"), reqs)
        dumps_s = timed(lambda: json.dumps(points), reqs)
        read_s = timed(lambda: store.step_log.read(ACCOUNT, JOB, job.create_us), reqs)
        both_s = timed(lambda: charts(records), reqs)  # no cache key: drawn every time
    cold_s = []
    for _ in range(max(3, reqs // 4)):
        with TestClient(create_app(settings)) as fresh:
            fresh.headers["X-Api-Key"] = API_KEY
            assert fresh.get(f"/v1/accounts/{ACCOUNT}/rlorTrainerJobs/{JOB}").status_code == 200  # untimed
            fresh.get("/dashboard/login")  # untimed: loads the dashboard modules
            t0 = time.perf_counter()
            assert fresh.get(f"/dashboard/jobs/{JOB}").status_code == 200
            cold_s.append(time.perf_counter() - t0)
    return {"page_after_restart": summary_ms(cold_s), "page_training": summary_ms(training_s),
            "page": summary_ms(page_s), "listing": summary_ms(listing_s), "chart": summary_ms(chart_s),
            "json_points": summary_ms(dumps_s), "log_read": summary_ms(read_s), "both_charts": summary_ms(both_s),
            "page_bytes": page_bytes, "listing_bytes": listing_bytes, "svg_bytes": len(svg),
            "steps_read": len(records)}


def main() -> None:
    p = base_parser(__doc__)
    p.add_argument("--rows", type=int, default=None, help="checkpoint rows in the job (default 10000; quick 1000)")
    p.add_argument("--steps", type=int, default=10_000, help="recorded optimizer steps (default 10000)")
    p.add_argument("--reqs", type=int, default=None, help="timed repetitions per measurement (default 20; quick 5)")
    args = p.parse_args()
    rows = args.rows or (1000 if args.quick else 10_000)
    reqs = args.reqs or (5 if args.quick else 20)
    result = new_result("dashboard_speed", "Dashboard: first job page and 10,000-step chart", args,
                        {"rows": rows, "steps": args.steps, "reqs": reqs, "page_size": 50})
    with tempfile.TemporaryDirectory(prefix="fwemu-bench-dash-", dir=args.tmp_dir) as tmp:
        tmp = Path(tmp)
        template = write_template(tmp / "template")
        setup = populate(tmp / "data", template, rows, args.steps)
        m = measure(tmp / "data", reqs, args.steps)
    result["results"] = {"setup": setup, **m}
    page_ratio = ratio(m["page"]["p50_ms"], m["listing"]["p50_ms"])
    chart_ratio = ratio(m["chart"]["p50_ms"], m["json_points"]["p50_ms"])
    result["tables"].append(table(
        f"{rows:,} rows, {m['steps_read']:,} steps (ms; in process, no socket)",
        ["measurement", "p50", "p99", "baseline", "baseline p50", "ratio"],
        [["job page, while training (new step each view)", m["page_training"]["p50_ms"],
          m["page_training"]["p99_ms"], "JSON listing, 50 rows", m["listing"]["p50_ms"],
          fmt(ratio(m["page_training"]["p50_ms"], m["listing"]["p50_ms"]), 2)],
         ["job page, idle (charts reused)", m["page"]["p50_ms"], m["page"]["p99_ms"],
          "JSON listing, 50 rows", m["listing"]["p50_ms"], fmt(page_ratio, 2)],
         ["job page, first view after a restart", m["page_after_restart"]["p50_ms"],
          m["page_after_restart"]["p99_ms"], "JSON listing, 50 rows", m["listing"]["p50_ms"],
          fmt(ratio(m["page_after_restart"]["p50_ms"], m["listing"]["p50_ms"]), 2)],
         ["chart render, all steps", m["chart"]["p50_ms"], m["chart"]["p99_ms"],
          "json.dumps of the points", m["json_points"]["p50_ms"], fmt(chart_ratio, 2)],
         ["step log read (cached, nothing new)", m["log_read"]["p50_ms"], m["log_read"]["p99_ms"], "", "", ""],
         ["both charts from the records (uncached)", m["both_charts"]["p50_ms"], m["both_charts"]["p99_ms"],
          "", "", ""]],
        note=f"page {m['page_bytes']:,} B, listing {m['listing_bytes']:,} B, one chart {m['svg_bytes']:,} B; "
             f"set-up {setup['rows_setup_s']} s rows, {setup['steps_setup_s']} s steps "
             f"({setup['append_us_per_step']} us per append)"))
    result["targets"] += [
        target("first job page while training", f"< {GOAL_MS:.0f} ms", f"{m['page_training']['p50_ms']} ms p50",
               m["page_training"]["p50_ms"] < GOAL_MS),
        target("first job page, idle", f"< {GOAL_MS:.0f} ms", f"{m['page']['p50_ms']} ms p50",
               m["page"]["p50_ms"] < GOAL_MS),
        target("first job page after a restart", f"< {GOAL_MS:.0f} ms", f"{m['page_after_restart']['p50_ms']} ms p50",
               m["page_after_restart"]["p50_ms"] < GOAL_MS),
        target(f"{m['steps_read']:,}-step chart render", f"< {GOAL_MS:.0f} ms", f"{m['chart']['p50_ms']} ms p50",
               m["chart"]["p50_ms"] < GOAL_MS),
    ]
    result["notes"].append("ratios are against baselines measured in the same run on the same data")
    emit(result, args)


if __name__ == "__main__":
    main()
