"""The real SDK's `TrainerJobManager.create_and_wait` against fwemu, against a plain GET of the job.

Why: the SDK polls the job every `poll_interval_s` (5 s by default) and sleeps after any poll that
does not see JOB_STATE_RUNNING with a healthy healthz. If a new job is still CREATING at the first
poll, every test that creates a trainer pays a 5 s sleep. This measures, with the SDK's default
poll interval and an unchanged SDK, in one process on a real loopback socket (uvicorn thread):

  baseline      `mgr.get(job_id)`: one control-plane GET of an existing job (the floor)
  default       `create_and_wait` with fwemu's default `--startup-delay`
  delay 0.05 s  `create_and_wait` with `--startup-delay 0.05` (the default before this change)

and how many GETs of the job each create_and_wait sent (1 means the first poll saw RUNNING).

    python bench/create_and_wait.py            # --runs 3
    python bench/create_and_wait.py --quick    # --runs 1
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ACCOUNT, API_KEY, base_parser, emit, fmt, new_result, ratio, table  # noqa: E402

BASE = "accounts/fireworks/models/qwen3-8b"


def _server(startup_delay_s: float | None):
    from fwemu.emulator.app import create_app
    from fwemu.emulator.server_thread import ServerThread
    from fwemu.emulator.settings import Settings

    kwargs = {} if startup_delay_s is None else {"startup_delay_s": startup_delay_s}
    app = create_app(Settings(data_dir=None, api_keys={API_KEY: ACCOUNT}, quirks=frozenset(),
                              breaks=frozenset(), **kwargs))
    job_gets = []

    @app.middleware("http")
    async def count(request, call_next):
        parts = request.url.path.split("/")
        if request.method == "GET" and len(parts) == 6 and parts[4] == "rlorTrainerJobs":
            job_gets.append(request.url.path)
        return await call_next(request)

    return ServerThread(app).start(), job_gets, app.state.services.settings.startup_delay_s


def measure(startup_delay_s: float | None, runs: int) -> dict:
    from fireworks.training.sdk import TrainerJobConfig, TrainerJobManager

    srv, job_gets, delay = _server(startup_delay_s)
    try:
        mgr = TrainerJobManager(api_key=API_KEY, base_url=srv.url)
        mgr.account_id  # noqa: B018 - resolves the account (one GET /v1/accounts) outside the timings
        waits, gets, polls = [], [], []
        for i in range(runs):
            before = len(job_gets)
            t0 = time.perf_counter()
            ep = mgr.create_and_wait(TrainerJobConfig(base_model=BASE, requested_job_id=f"bench-{i}"))
            waits.append(time.perf_counter() - t0)
            polls.append(len(job_gets) - before)
            for _ in range(20):
                t1 = time.perf_counter()
                mgr.get(ep.job_id)
                gets.append(time.perf_counter() - t1)
        return {"startup_delay_s": delay, "create_and_wait_s": waits, "get_s": gets, "job_polls": polls}
    finally:
        srv.stop()


def main() -> None:
    p = base_parser(__doc__)
    p.add_argument("--runs", type=int, default=None)
    args = p.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    logging.getLogger("fireworks").setLevel(logging.WARNING)
    result = new_result("create_and_wait", "SDK create_and_wait wall time vs a plain GET of the job", args,
                        {"runs": runs, "poll_interval_s": "SDK default (5 s)"})
    rows = []
    for label, delay in (("default", None), ("startup-delay 0.05 s", 0.05)):
        m = measure(delay, runs)
        wait, get = statistics.median(m["create_and_wait_s"]), statistics.median(m["get_s"])
        result["results"][label] = m
        rows.append([label, fmt(m["startup_delay_s"], 2), fmt(wait * 1000), fmt(get * 1000, 2),
                     f"{ratio(wait, get, 0)}x", ",".join(map(str, m["job_polls"]))])
    result["tables"].append(table(
        "create_and_wait (median of runs) vs GET of the job (median of 20 per run)",
        ["variant", "startup delay s", "create_and_wait ms", "GET ms", "ratio", "job GETs per call"], rows,
        "1 job GET per call: the SDK's first poll saw RUNNING and it never slept."))
    emit(result, args)


if __name__ == "__main__":
    main()
