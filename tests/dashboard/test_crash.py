"""The step log across a SIGKILL of `fwemu serve` in the middle of training.

A step's record is appended before its optim_step future resolves, so after the kill the log holds
every step the client saw acknowledged, plus at most the one in flight; the restarted server's
page charts exactly what the log holds.
"""

from __future__ import annotations

import random
import re
import threading
import time

import httpx
import pytest

from fwemu.emulator.server_process import ServeProcess
from fwemu.emulator.store.metrics_log import StepLog
from tests.gateway.helpers import TINY, Gateway

KEY, ACCOUNT, JOB = "fw-crash", "crash-acct", "crash-job"

pytestmark = pytest.mark.slow


def test_sigkill_during_training_keeps_every_acknowledged_step(tmp_path):
    data = tmp_path / "state"
    server = ServeProcess(data, ["--api-key", f"{KEY}={ACCOUNT}"], env={"FWEMU_MODEL_SIZE": TINY}).start()
    acked = 0
    stop = threading.Event()

    def train():
        nonlocal acked
        try:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                gw = Gateway(http, key=KEY, account=ACCOUNT)
                m = gw.model(JOB)
                while not stop.is_set():
                    gw.step(JOB, m)
                    acked += 1
        except (httpx.HTTPError, AssertionError):
            pass  # the server died under us

    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            Gateway(http, key=KEY, account=ACCOUNT).create_job(JOB)
        worker = threading.Thread(target=train, daemon=True)
        worker.start()
        deadline = time.monotonic() + 120
        while acked < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert acked >= 3, "training did not start"
        time.sleep(random.uniform(0, 0.2))
        seen = acked
        assert server.sigkill()
        stop.set()
        worker.join(timeout=60)

        server.start()
        with httpx.Client(base_url=server.url, timeout=30, headers={"X-Api-Key": KEY}) as http:
            job = http.get(f"/v1/accounts/{ACCOUNT}/rlorTrainerJobs/{JOB}").json()
            page = http.get(f"/dashboard/jobs/{JOB}")
            assert page.status_code == 200
        points = int(re.search(r'data-points="(\d+)"', page.text).group(1))
        assert seen <= acked <= points <= acked + 1, (seen, acked, points)
    finally:
        stop.set()
        server.stop()
    create_us = next(int(p.stem) for p in (data / "metrics" / ACCOUNT / JOB).glob("*.jsonl"))
    records = StepLog(data / "metrics").read(ACCOUNT, JOB, create_us)
    assert len(records) == points and [r["step"] for r in records] == list(range(1, points + 1))
    assert job["state"] == "JOB_STATE_RUNNING"
