"""Regression tests for bugs the reliability work found (all fixed): each states the correct behaviour.

The decorator keeps the original finding (file and failure) as the test's documentation.
"""

from __future__ import annotations

import json

import pytest

from tests.reliability.conftest import (
    ACCT_A, BASE, KEY_A, create_job, envelope, import_tar, in_process, nothing_written, settings, store_of,
)


def bug_fixed(finding: str):
    """Record what was broken on the test itself (shown by `pytest --collect-only -q` docs tools)."""
    def mark(test):
        test.__doc__ = f"Fixed: {finding}"
        return test
    return mark


@bug_fixed("emulator/store/tar_stream.py: TarExtractor.finish accepts a stream that stops exactly at a member "
     "boundary without the end-of-archive marker, so an upload cut between two files is taken as complete")
def test_an_upload_cut_between_members_is_refused(sample_dirs):
    from tests.reliability.test_hostile_input import member

    files = sorted(sample_dirs["INFERENCE_BASE"].iterdir())
    cut = b"".join(member(p.name, p.read_bytes()) for p in files)     # every file, but no end marker
    with in_process() as cp:
        create_job(cp, "cut")
        envelope(import_tar(cp, "cut", "cut", cut), 400, "INVALID_ARGUMENT")
        nothing_written(store_of(cp))


@bug_fixed("emulator/admin/routes.py: import_checkpoint creates the job (store.create_job) before load_job "
     "validates the job id, so a refused import leaves a job named '..', 'UPPER' or '\\ufffd' behind")
def test_a_refused_import_creates_no_job():
    with in_process() as cp:
        for job_id in ("%2E%2E", "UPPER", "%FF"):
            r = cp.post(f"/_emulator/v1/accounts/{ACCT_A}/rlorTrainerJobs/{job_id}/checkpoints:import",
                        params={"name": "x", "baseModel": BASE}, content=b"",
                        headers={"Content-Type": "application/x-tar"})
            envelope(r, 400, "INVALID_ARGUMENT")
        assert cp.get(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs").json()["rlorTrainerJobs"] == []


@bug_fixed("emulator/controlplane/access.py + job_routes.py: JOB_ID_RE.match lets a trailing newline through "
     "(`$` matches before it); use fullmatch, as rules.MODEL_ID_RE's docstring says")
def test_a_job_id_with_a_trailing_newline_is_refused():
    with in_process() as cp:
        r = cp.post(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs", params={"rlorTrainerJobId": "job\n"},
                    json={"trainingConfig": {"baseModel": BASE}})
        envelope(r, 400, "INVALID_ARGUMENT")
        assert store_of(cp).counts()["jobs"] == 0


@bug_fixed("emulator/controlplane (job create): a non-finite number in the body (1e400 -> inf, NaN) is stored; "
     "the create answers 500 and every later list or get of the account's jobs answers 500, which the SDK "
     "retries for five minutes: the account is poisoned")
def test_non_finite_numbers_do_not_poison_the_account():
    with in_process() as cp:
        for body in (b'{"trainingConfig": {"baseModel": "b", "learningRate": 1e400}}',
                     b'{"trainingConfig": {"baseModel": "b"}, "extra": NaN}'):
            r = cp.post(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs", params={"rlorTrainerJobId": "inf"}, content=body,
                        headers={"Content-Type": "application/json"})
            envelope(r, 400, "INVALID_ARGUMENT")
        assert cp.get(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs").status_code == 200


@bug_fixed("emulator/app.py (no body cap): a 20 MB JSON body is read whole and stored in the job row; a JSON "
     "body far beyond any real request should be refused with a 4xx before it is parsed")
def test_a_huge_json_body_is_refused():
    with in_process() as cp:
        body = {"trainingConfig": {"baseModel": BASE}, "padding": "x" * (20 << 20)}
        r = cp.post(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs", params={"rlorTrainerJobId": "huge"},
                    content=json.dumps(body), headers={"Content-Type": "application/json"})
        assert 400 <= r.status_code < 500, r.status_code
        assert store_of(cp).counts()["jobs"] == 0


@bug_fixed("emulator/gateway/checkpoints.py: save_state checks the name with DNS_LABEL_RE.match, which lets "
     "'step-1\\n' through to the store; the store refuses it with ValueError, which the worker reports as "
     "a *server* error (the SDK's category for 'retry later') instead of a user error")
def test_a_save_name_with_a_trailing_newline_is_a_user_error():
    from fastapi.testclient import TestClient

    from fwemu.emulator.app import create_app
    from tests.gateway.helpers import Gateway

    with TestClient(create_app(settings()), raise_server_exceptions=False) as http:
        gw = Gateway(http, key=KEY_A, account=ACCT_A)
        gw.create_job("nl")
        model = gw.model("nl")
        gw.step("nl", model)
        out = gw.save_state("nl", model, "step-1\n")
        assert out.get("category") == "user", out


@bug_fixed("emulator/store/store.py: _record_checkpoint takes the row's createTime stamp before it enters the "
     "write transaction, so two saves on different threads (two trainer workers, or a trainer save and an "
     "import) can commit in the opposite order of their stamps; a listing paginating meanwhile passes the "
     "later-committed, older row and never returns it (L1)")
def test_a_concurrent_paginated_listing_misses_no_committed_row(sample_dirs):
    import shutil
    import threading

    with in_process() as cp:
        create_job(cp, "race")
        store = store_of(cp)
        gate, stamped = threading.Event(), threading.Event()
        real_tx = store._tx

        def slow_tx():
            if threading.current_thread().name == "slow-writer":
                stamped.set()        # its stamp is taken; hold the commit back
                assert gate.wait(10)
            return real_tx()

        def write(name: str) -> None:
            with store.write_checkpoint(ACCT_A, "race", name) as staging:
                for f in sample_dirs["TRAINING"].iterdir():
                    shutil.copy(f, staging / f.name)

        write("base")
        store._tx = slow_tx
        slow = threading.Thread(name="slow-writer", target=write, args=("older",))
        slow.start()
        assert stamped.wait(10)
        write("newer")
        write("last")  # a row after `newer`, so the listing has a next page when `older` commits
        url = f"/v1/accounts/{ACCT_A}/rlorTrainerJobs/race/checkpoints"
        first = cp.get(url, params={"pageSize": 2}).json()  # base, newer: the cursor is now past both
        gate.set()
        slow.join(10)
        store._tx = real_tx
        seen = [r["name"].rsplit("/", 1)[-1] for r in first["checkpoints"]]
        token = first["nextPageToken"]
        while token:
            page = cp.get(url, params={"pageSize": 1, "pageToken": token}).json()
            seen += [r["name"].rsplit("/", 1)[-1] for r in page["checkpoints"]]
            token = page["nextPageToken"]
        # createTime is the commit time: the writer held back at its commit is listed last
        assert [r["name"].rsplit("/", 1)[-1] for r in cp.get(url).json()["checkpoints"]] == [
            "base", "newer", "last", "older"]
        assert seen == ["base", "newer", "last", "older"], seen


def test_a_request_in_flight_during_shutdown_is_a_retryable_503_not_a_500(caplog):
    """Seen in the contract suite: an SDK heartbeat landing while an in-process emulator restarted hit
    the closed store and logged an internal error (500) with a traceback. It is now UNAVAILABLE (503,
    which every client retries) and one warning line; answered by its own handler, so it is not re-raised
    to the server either (Starlette re-raises what only the catch-all handler answered: TestClient
    would raise it here)."""
    from fastapi.testclient import TestClient

    from fwemu.emulator.app import create_app
    from fwemu.emulator.settings import Settings

    app = create_app(Settings(data_dir=None))
    http = TestClient(app)
    auth = {"Authorization": "Bearer fw-local-dev"}
    assert http.get("/v1/accounts/local/rlorTrainerJobs", headers=auth).status_code == 200
    app.state.services.store.close()
    with caplog.at_level("WARNING", logger="fwemu"):
        r = http.get("/v1/accounts/local/rlorTrainerJobs", headers=auth)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["status"] == "UNAVAILABLE"
    assert "shutting down" in r.json()["error"]["message"]
    assert not any(rec.exc_info for rec in caplog.records), "no traceback for an orderly shutdown"

