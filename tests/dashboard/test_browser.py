"""The dashboard in a real headless Chromium, against a real `fwemu serve` after a real training run.

Set-up over loopback HTTP: a full-parameter job trains 4 steps with saves (TRAINING, INFERENCE_BASE,
INFERENCE_ARC_V2 rows), a sampler save is promoted to a model, a good directory is imported by
local path and then corrupted on disk (the inspector rejects it at the next look), a bad directory's
path import is refused, and another account has a job. The server is then restarted, so the chart
must come from the stored step log. The browser logs in through the form and checks each view, that
no console error or CSP violation happened, and that no request left 127.0.0.1.

Needs Debian's chromium (`apt-get install -y chromium`) and the playwright package (its browser
downloader is not used); skips with the reason when either is missing. Screenshots go to tmp_path,
and also to $FWEMU_DASHBOARD_SCREENSHOTS when set (docs/img was made that way).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from fwemu.emulator.server_process import ServeProcess
from tests.builders import hf_dir
from tests.gateway.helpers import BASE, TINY, Gateway

CHROMIUM = next((p for p in (os.environ.get("FWEMU_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser"), "/usr/bin/chromium") if p and os.path.exists(p)), None)
KEY, ACCOUNT = "fw-dash-a", "team-a"
OTHER_KEY, OTHER_ACCOUNT = "fw-dash-b", "team-b"
JOB = "sft-run"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium found: install it with `apt-get install -y chromium` "
                                                "(or point FWEMU_CHROMIUM at a Chromium binary)"),
]


def serve(data_dir: Path) -> ServeProcess:
    args = ["--api-key", f"{KEY}={ACCOUNT}", "--api-key", f"{OTHER_KEY}={OTHER_ACCOUNT}"]
    return ServeProcess(data_dir, args, env={"FWEMU_MODEL_SIZE": TINY})


def train(url: str, tmp_path: Path) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        gw = Gateway(http, key=KEY, account=ACCOUNT)
        gw.create_job(JOB)
        m = gw.model(JOB)
        for _ in range(3):
            gw.step(JOB, m)
        assert "error" not in gw.save_state(JOB, m, "step-3-state")
        assert "error" not in gw.save_sampler(JOB, m, "step-3-base", "base")
        gw.step(JOB, m)
        assert "error" not in gw.save_sampler(JOB, m, "step-4-delta", "delta")
        r = http.post(f"/v1/accounts/{ACCOUNT}/checkpoints/step-3-base:promote", headers=gw.headers(),
                      json={"output_model": "sft-model", "base_model": BASE,
                            "trainer_job_id": f"accounts/{ACCOUNT}/rlorTrainerJobs/{JOB}"})
        assert r.status_code == 200, r.text
        imp = f"/_emulator/v1/accounts/{ACCOUNT}/rlorTrainerJobs/{JOB}/checkpoints:import"
        r = http.post(imp, params={"name": "imported"}, json={"sourcePath": str(hf_dir(tmp_path / "good"))},
                      headers=gw.headers())
        assert r.status_code == 200, r.text
        bad = hf_dir(tmp_path / "bad")
        (bad / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')  # no model_type
        r = http.post(imp, params={"name": "refused"}, json={"sourcePath": str(bad)}, headers=gw.headers())
        assert r.status_code == 400 and "model_type" in r.text, r.text  # refused: nothing is stored
        other = Gateway(http, key=OTHER_KEY, account=OTHER_ACCOUNT)
        other.create_job("other-secret-job")


def one_more_step(url: str) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        gw = Gateway(http, key=KEY, account=ACCOUNT)
        m = gw.model(JOB)  # models do not survive a restart: a new one continues the run
        gw.step(JOB, m)


def expected_error(problems: list[str], status: int) -> None:
    """Chromium logs the status of a page answered with an error; take exactly that one entry off."""
    wanted = f"console error: Failed to load resource: the server responded with a status of {status}"
    assert [p for p in problems if p.startswith(wanted)] and len(problems) == 1, problems
    problems.clear()


def test_dashboard_in_a_real_browser(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install "
                                                                  "playwright; Debian's chromium is used)")
    shots = [tmp_path / "shots"]
    if os.environ.get("FWEMU_DASHBOARD_SCREENSHOTS"):
        shots.append(Path(os.environ["FWEMU_DASHBOARD_SCREENSHOTS"]))
    for d in shots:
        d.mkdir(parents=True, exist_ok=True)

    data = tmp_path / "state"
    server = serve(data).start()
    try:
        train(server.url, tmp_path)
        corrupt = data / "blobs" / ACCOUNT / JOB / "imported" / "model.safetensors"
        corrupt.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")  # a header that lies about its length
        server.stop()
        server.start()  # everything the browser sees now was stored
        host = urlsplit(server.url).hostname

        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            context = browser.new_context(viewport={"width": 1200, "height": 900})
            requests, outside, problems = [], [], []

            def guard(route):
                if urlsplit(route.request.url).hostname != host:
                    outside.append(route.request.url)
                    return route.abort()
                return route.continue_()

            context.route("**/*", guard)
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

            def snap(name: str) -> None:
                for d in shots:
                    page.screenshot(path=str(d / f"{name}.png"), full_page=True)

            # log in through the form: the key goes in a POST body, never a URL
            page.goto(f"{server.url}/")
            assert page.url.endswith("/dashboard/login")
            snap("dashboard-login")
            page.fill('input[name="api_key"]', "wrong-key")
            page.click('button[type="submit"]')
            assert "not valid" in page.inner_text('[role="alert"]')
            expected_error(problems, 401)
            page.fill('input[name="api_key"]', KEY)
            page.click('button[type="submit"]')
            page.wait_for_url(f"{server.url}/dashboard")
            (cookie,) = [c for c in context.cookies() if c["name"] == "fwemu_dashboard"]
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["value"] != KEY
            assert page.evaluate("document.cookie") == "", "an HttpOnly cookie is invisible to scripts"

            # index: the job, the model with its lineage, no other account's job
            assert page.inner_text(f'tr[data-job="{JOB}"] td:nth-child(2)') == "JOB_STATE_RUNNING"
            assert page.inner_text(f'tr[data-job="{JOB}"] td:nth-child(3)') == BASE
            assert page.locator("tr[data-job]").count() == 1
            assert "other-secret-job" not in page.content()
            lineage = page.inner_text('tr[data-model="sft-model"]')
            assert "step-3-base" in lineage and JOB in lineage
            assert page.is_visible("#no-deployments")
            snap("dashboard-index")

            # the job: rows with their kinds, the rejected directory, a chart with one point per step
            page.click(f'tr[data-job="{JOB}"] a')
            page.wait_for_url(f"{server.url}/dashboard/jobs/{JOB}")
            kinds = {r.get_attribute("data-row"): r.locator("td:nth-child(2)").inner_text()
                     for r in page.locator("tr[data-row]").all()}
            assert kinds == {"step-3-state": "CHECKPOINT_TYPE_TRAINING",
                             "step-3-base": "CHECKPOINT_TYPE_INFERENCE_BASE",
                             "step-4-delta": "CHECKPOINT_TYPE_INFERENCE_ARC_V2"}
            flags = page.locator('tr[data-row="step-3-state"] td').all_inner_texts()[2:4]
            assert flags == ["yes", "no"]  # resumable, not promotable
            assert page.locator('tr[data-row="step-3-base"] td').all_inner_texts()[2:4] == ["no", "yes"]
            reason = page.inner_text('tr[data-rejected="imported"]')
            assert "model.safetensors" in reason
            loss_chart = page.locator("#charts svg").first
            assert loss_chart.get_attribute("data-points") == "4"
            vertices = loss_chart.locator("polyline").first.get_attribute("points").split()
            assert len(vertices) == 4
            assert page.locator('meta[http-equiv="refresh"]').count() == 1
            snap("dashboard-job")

            # explain: the rejected directory, then a valid row
            page.click('tr[data-rejected="imported"] a')
            page.wait_for_url(f"**/dashboard/jobs/{JOB}/checkpoints/imported")
            assert page.inner_text("#deciding-file") == "model.safetensors"
            assert "rejected" in page.inner_text("#decision")
            assert "model.safetensors" in page.inner_text("#reads")
            snap("dashboard-explain-rejected")
            page.goto(f"{server.url}/dashboard/jobs/{JOB}/checkpoints/step-3-state")
            assert page.inner_text("#deciding-file") == ".metadata"
            assert "CHECKPOINT_TYPE_TRAINING" in page.inner_text("#decision")
            snap("dashboard-explain")

            # another account's job is not found
            r = page.goto(f"{server.url}/dashboard/jobs/other-secret-job")
            assert r.status == 404 and "other-secret-job" in page.inner_text("main")
            expected_error(problems, 404)

            # the job page follows training by itself: a new step shows after the next refresh
            page.goto(f"{server.url}/dashboard/jobs/{JOB}")
            one_more_step(server.url)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                page.wait_for_timeout(500)
                try:
                    if page.locator("#charts svg").first.get_attribute("data-points", timeout=2000) == "5":
                        break
                except sync_api.Error:
                    pass  # the page was reloading
            assert page.locator("#charts svg").first.get_attribute("data-points") == "5"

            page.click('header button[type="submit"]')  # log out
            page.wait_for_url(f"{server.url}/dashboard/login")
            assert not [c for c in context.cookies() if c["name"] == "fwemu_dashboard"]
            browser.close()

        assert problems == [], problems
        assert outside == [], f"requests left the host: {outside}"
        assert requests and all(urlsplit(u).hostname == host for u in requests)
        assert not any(KEY in u for u in requests), "the API key appeared in a URL"
    finally:
        server.stop()
