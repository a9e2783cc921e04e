"""The dashboard through the real app (FastAPI TestClient): log-in, isolation, read-only, and what each page shows
after real training through the gateway."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from tests.builders import hf_dir, tar_bytes
from tests.dashboard.conftest import login
from tests.gateway.helpers import ACCOUNT, BASE, KEY, OTHER_ACCOUNT, OTHER_KEY, Gateway, fb_body, gateway, optim_body

SVG = "{http://www.w3.org/2000/svg}"


def import_tar(gw: Gateway, job_id: str, name: str, directory, key: str = KEY, account: str = ACCOUNT):
    r = gw.http.post(f"/_emulator/v1/accounts/{account}/rlorTrainerJobs/{job_id}/checkpoints:import",
                     params={"name": name, "baseModel": BASE}, content=tar_bytes(directory),
                     headers={"Content-Type": "application/x-tar", "X-Api-Key": key})
    assert r.status_code == 200, r.text
    return r.json()


def charts(html: str) -> list[ET.Element]:
    return [ET.fromstring(m) for m in re.findall(r"<svg .*?</svg>", html, flags=re.S)]


def table_rows(html: str, attr: str) -> dict[str, str]:
    """{data-<attr> value: the row's HTML} of a page's table."""
    return {m.group(1): m.group(2) for m in re.finditer(rf'<tr data-{attr}="([^"]*)">(.*?)</tr>', html, re.S)}


def cells_of(row_html: str) -> list[str]:
    """The text of each <td> of a table row."""
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row_html, re.S)]


@pytest.fixture
def gw():
    with gateway() as g:
        yield g


def test_root_redirects_and_every_page_needs_a_login(gw):
    r = gw.http.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/dashboard"
    for path in ("/dashboard", "/dashboard/jobs/job-1", "/dashboard/jobs/job-1/checkpoints/x"):
        r = gw.http.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/login", path
    r = gw.http.get("/dashboard", headers={"X-Api-Key": "not-a-key"}, follow_redirects=False)
    assert r.status_code == 303
    login_page = gw.http.get("/dashboard/login")
    assert login_page.status_code == 200 and 'name="api_key"' in login_page.text


def test_login_exchanges_the_key_for_an_httponly_strict_session_cookie(gw):
    bad = login(gw.http, "wrong")
    assert bad.status_code == 401 and "not valid" in bad.text and "set-cookie" not in bad.headers
    r = login(gw.http, KEY)
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Path=/dashboard" in cookie and KEY not in cookie
    sid = gw.http.cookies.get("fwemu_dashboard")
    page = gw.http.get("/dashboard")
    assert page.status_code == 200 and f"account <b>{ACCOUNT}</b>" in page.text
    assert KEY not in page.text
    assert gw.http.get("/dashboard/login", follow_redirects=False).status_code == 303  # already logged in
    out = gw.http.post("/dashboard/logout", follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/dashboard/login"
    gw.http.cookies.set("fwemu_dashboard", sid, path="/dashboard")  # replaying the old session id
    assert gw.http.get("/dashboard", follow_redirects=False).status_code == 303


def test_a_form_posted_from_another_site_is_refused(gw):
    r = gw.http.post("/dashboard/login", content=f"api_key={KEY}", follow_redirects=False,
                     headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.example"})
    assert r.status_code == 403 and "set-cookie" not in r.headers
    ok = gw.http.post("/dashboard/login", content=f"api_key={KEY}", follow_redirects=False,
                      headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://testserver"})
    assert ok.status_code == 303


def test_pages_are_get_only_and_change_nothing(gw, tmp_path):
    gw.create_job("job-1")
    import_tar(gw, "job-1", "c-1", hf_dir(tmp_path / "hf"))
    login(gw.http, KEY)
    before = gw.http.get("/_emulator/v1/state", headers={"X-Api-Key": KEY}).json()["counts"]
    paths = ["/dashboard", "/dashboard/jobs/job-1", "/dashboard/jobs/job-1/checkpoints/c-1",
             "/dashboard/static/dashboard.css"]
    for path in paths:
        r = gw.http.get(path)
        assert r.status_code == 200, (path, r.text)
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp  # no script may run at all
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            assert gw.http.request(method, path).status_code == 405, (method, path)
    assert gw.http.get("/dashboard").headers["cache-control"] == "no-store"
    assert gw.http.get("/_emulator/v1/state", headers={"X-Api-Key": KEY}).json()["counts"] == before


def test_another_accounts_jobs_models_and_rows_never_appear(gw, tmp_path):
    other = Gateway(gw.http, key=OTHER_KEY, account=OTHER_ACCOUNT)
    other.create_job("secret-job")
    import_tar(gw, "secret-job", "secret-row", hf_dir(tmp_path / "hf"), key=OTHER_KEY, account=OTHER_ACCOUNT)
    gw.create_job("job-1")
    login(gw.http, KEY)
    index = gw.http.get("/dashboard").text
    assert "job-1" in index and "secret" not in index
    for path in ("/dashboard/jobs/secret-job", "/dashboard/jobs/secret-job/checkpoints/secret-row"):
        r = gw.http.get(path)
        assert r.status_code == 404 and "secret-row" not in r.text, path
    # the other account's own view, by header key, shows it
    theirs = gw.http.get("/dashboard/jobs/secret-job", headers={"X-Api-Key": OTHER_KEY})
    assert theirs.status_code == 200 and "secret-row" in theirs.text


def test_a_training_run_shows_its_rows_kinds_and_one_point_per_step(gw):
    gw.create_job("job-1")
    m = gw.model("job-1")
    fb_losses = []
    for _ in range(3):  # two forward_backward calls per step: gradient accumulation
        for _ in range(2):
            fb = gw.ok("job-1", "forward_backward", fb_body(m, gw.seq("job-1", m)))
            fb_losses.append(fb["metrics"]["loss:sum"])
        gw.ok("job-1", "optim_step", optim_body(m, gw.seq("job-1", m)))
    assert "error" not in gw.save_state("job-1", m, "state-3")
    assert "error" not in gw.save_sampler("job-1", m, "base-3", "base")
    gw.step("job-1", m)
    assert "error" not in gw.save_sampler("job-1", m, "delta-4", "delta")
    login(gw.http, KEY)
    page = gw.http.get("/dashboard/jobs/job-1").text
    rows = table_rows(page, "row")
    listed = gw.kinds("job-1")
    assert set(rows) == set(listed) == {"state-3", "base-3", "delta-4"}
    expected = {"state-3": ("CHECKPOINT_TYPE_TRAINING", "yes", "no"),
                "base-3": ("CHECKPOINT_TYPE_INFERENCE_BASE", "no", "yes"),
                "delta-4": ("CHECKPOINT_TYPE_INFERENCE_ARC_V2", "no", "no")}
    for name, (kind, promotable) in listed.items():
        cells = cells_of(rows[name])
        assert (cells[1], cells[2], cells[3]) == expected[name]
        assert kind == expected[name][0] and promotable == (expected[name][2] == "yes")  # the API agrees
        assert cells[4].endswith("Z") and cells[5].endswith("KiB")
    loss, norm = charts(page)
    assert loss.get("data-points") == "4" and norm.get("data-points") == "4"
    (line,) = loss.iter(f"{SVG}polyline")
    assert len(line.get("points").split()) == 4
    records = gw.app.state.services.store.step_log.read(
        ACCOUNT, "job-1", gw.app.state.services.store.get_job(ACCOUNT, "job-1").create_us)
    assert [r["step"] for r in records] == [1, 2, 3, 4] and [r["fb"] for r in records] == [2, 2, 2, 1]
    assert records[0]["fbm"]["loss:sum"] == pytest.approx(fb_losses[0] + fb_losses[1])
    assert records[2]["fbm"]["loss:sum"] == pytest.approx(fb_losses[4] + fb_losses[5])
    index = gw.http.get("/dashboard").text
    job_cells = cells_of(table_rows(index, "job")["job-1"])
    assert job_cells[1] == "JOB_STATE_RUNNING" and job_cells[2] == BASE and job_cells[4] == "4"  # the last step


def test_forward_passes_whose_gradients_were_dropped_are_not_counted(gw, tmp_path):
    gw.create_job("job-1")
    m = gw.model("job-1")
    gw.step("job-1", m)
    gw.save_state("job-1", m, "s-1")
    gw.ok("job-1", "forward_backward", fb_body(m, gw.seq("job-1", m)))  # then dropped by the load below
    assert "error" not in gw.load("job-1", m, "s-1", optimizer=True)
    gw.step("job-1", m)
    store = gw.app.state.services.store
    records = store.step_log.read(ACCOUNT, "job-1", store.get_job(ACCOUNT, "job-1").create_us)
    assert [r["fb"] for r in records] == [1, 1]


def test_rows_page_with_a_cursor(gw, tmp_path):
    gw.create_job("job-1")
    src = hf_dir(tmp_path / "hf")
    names = [f"c-{i:02d}" for i in range(12)]
    for n in names:
        import_tar(gw, "job-1", n, src)
    login(gw.http, KEY)
    seen, url = [], "/dashboard/jobs/job-1?pageSize=5"
    while url:
        page = gw.http.get(url).text
        seen += list(table_rows(page, "row"))
        nxt = re.search(r'<a href="([^"]+)" id="next-page">', page)
        url = nxt.group(1).replace("&amp;", "&") if nxt else None
    assert seen == names
    assert gw.http.get("/dashboard/jobs/job-1?pageToken=garbage").status_code == 400


def test_a_rejected_directory_and_its_explain_view(gw, tmp_path):
    gw.create_job("job-1")
    import_tar(gw, "job-1", "good", hf_dir(tmp_path / "a"))
    import_tar(gw, "job-1", "broken", hf_dir(tmp_path / "b"))
    store = gw.app.state.services.store
    (store.checkpoint_dir(ACCOUNT, "job-1", "broken") / "model.safetensors").write_bytes(b"\x00" * 16)
    login(gw.http, KEY)
    page = gw.http.get("/dashboard/jobs/job-1").text
    assert list(table_rows(page, "row")) == ["good"]
    rejected = table_rows(page, "rejected")
    assert list(rejected) == ["broken"] and "model.safetensors" in rejected["broken"]
    x = gw.http.get("/dashboard/jobs/job-1/checkpoints/broken").text
    assert re.search(r'id="deciding-file">model\.safetensors<', x)
    assert '<b class="bad">rejected</b>' in x and 'id="reads"' in x
    ok = gw.http.get("/dashboard/jobs/job-1/checkpoints/good").text
    assert re.search(r'id="deciding-file">config\.json<', ok) and "CHECKPOINT_TYPE_INFERENCE_BASE" in ok
    assert gw.http.get("/dashboard/jobs/job-1/checkpoints/nope").status_code == 404


def test_a_promoted_model_shows_its_lineage(gw, tmp_path):
    gw.create_job("job-1")
    import_tar(gw, "job-1", "c-1", hf_dir(tmp_path / "hf"))
    r = gw.http.post(f"/v1/accounts/{ACCOUNT}/checkpoints/c-1:promote", headers={"X-Api-Key": KEY},
                     json={"output_model": "my-model", "base_model": BASE,
                           "trainer_job_id": f"accounts/{ACCOUNT}/rlorTrainerJobs/job-1"})
    assert r.status_code == 200, r.text
    login(gw.http, KEY)
    index = gw.http.get("/dashboard").text
    model = table_rows(index, "model")["my-model"]
    assert 'href="/dashboard/jobs/job-1/checkpoints/c-1"' in model and 'href="/dashboard/jobs/job-1"' in model
    assert 'id="no-deployments"' in index


def test_the_page_refreshes_only_while_the_job_trains(gw):
    gw.create_job("job-1")
    m = gw.model("job-1")
    gw.step("job-1", m)
    login(gw.http, KEY)
    assert 'http-equiv="refresh"' in gw.http.get("/dashboard/jobs/job-1").text
    gw.http.post("/_emulator/v1/clock:advance", json={"seconds": 3600}, headers={"X-Api-Key": KEY})
    assert 'http-equiv="refresh"' not in gw.http.get("/dashboard/jobs/job-1").text
    assert 'http-equiv="refresh"' not in gw.http.get("/dashboard").text


def test_step_metrics_survive_a_restart_and_go_with_their_job(tmp_path):
    data = tmp_path / "data"
    with gateway(data_dir=data) as gw:
        gw.create_job("job-1")
        m = gw.model("job-1")
        for _ in range(3):
            gw.step("job-1", m)
    with gateway(data_dir=data) as gw:  # a new emulator process on the same data dir
        login(gw.http, KEY)
        loss, _ = charts(gw.http.get("/dashboard/jobs/job-1").text)
        assert loss.get("data-points") == "3"
        gw.http.delete(f"/v1/accounts/{ACCOUNT}/rlorTrainerJobs/job-1", headers={"X-Api-Key": KEY})
        gw.http.post("/_emulator/v1/reset", headers={"X-Api-Key": KEY})
        assert not any((data / "metrics").rglob("*.jsonl"))
