"""Many clients at once over real loopback HTTP: one job, one model id, one store (K6, L1).

Exactly one of N simultaneous promotions to one model id wins (the rest get 409 ALREADY_EXISTS),
every save is listed exactly once, and lock contention never surfaces as a 5xx.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from fwemu.emulator.inspect import inspect_checkpoint
from tests.reliability.conftest import (
    ACCT_A, KEY_A, create_job, envelope, http_client, import_tar, listed, promote, served, short,
)

CLIENTS = 12


def run_together(n: int, fn) -> list:
    """Run fn(i) on n threads released by one barrier, so the calls really overlap."""
    barrier = threading.Barrier(n)

    def go(i: int):
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(go, range(n)))


def test_parallel_imports_and_promotions_to_one_job_and_one_model(sample_tars):
    kinds = ["TRAINING", "TRAINING_LORA", "INFERENCE_BASE", "INFERENCE_LORA"]
    with served() as srv:
        with http_client(srv.url) as http:
            create_job(http, "shared-job")
        statuses: Counter = Counter()
        lock = threading.Lock()

        def note(r: httpx.Response) -> httpx.Response:
            with lock:
                statuses[r.status_code] += 1
            return r

        def saver(i: int) -> list[str]:
            done = []
            with http_client(srv.url) as http:
                for k in range(6):
                    name = f"c{i}-s{k}"
                    if note(import_tar(http, "shared-job", name, sample_tars[kinds[(i + k) % 4]])).status_code == 200:
                        done.append(name)
                    note(http.get(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs/shared-job/checkpoints",
                                  params={"pageSize": 5}))
            return done

        acked = [n for names in run_together(CLIENTS, saver) for n in names]
        assert len(acked) == CLIENTS * 6

        def same_name(i: int) -> httpx.Response:
            with http_client(srv.url) as http:
                return note(import_tar(http, "shared-job", "contested", sample_tars["INFERENCE_BASE"]))

        contested = run_together(CLIENTS, same_name)
        assert sorted(r.status_code for r in contested) == [200] + [409] * (CLIENTS - 1)
        for r in contested:
            if r.status_code == 409:
                envelope(r, 409, "ALREADY_EXISTS")

        def same_model(i: int) -> httpx.Response:
            with http_client(srv.url) as http:
                return note(promote(http, "shared-job", "contested", "the-one"))

        promoted = run_together(CLIENTS, same_model)
        assert sorted(r.status_code for r in promoted) == [200] + [409] * (CLIENTS - 1)
        assert all("already exists" in envelope(r, 409, "ALREADY_EXISTS") for r in promoted if r.status_code == 409)

        def own_model(i: int) -> httpx.Response:
            with http_client(srv.url) as http:
                return note(promote(http, "shared-job", "contested", f"model-{i}", async_promotion=i % 2 == 0))

        assert all(r.status_code == 200 for r in run_together(CLIENTS, own_model))

        assert not [s for s in statuses if s >= 500], statuses
        with http_client(srv.url) as http:
            names = [short(r) for r in listed(http, "shared-job")]
            assert len(names) == len(set(names)) and sorted(names) == sorted(acked + ["contested"])
            models = http.get(f"/v1/accounts/{ACCT_A}/models").json()["models"]
            assert sorted(m["name"].rsplit("/", 1)[-1] for m in models) == sorted(
                ["the-one"] + [f"model-{i}" for i in range(CLIENTS)])
        store = srv.app.state.services.store
        assert store.integrity_ok() and list(store.staging.iterdir()) == []
        assert store.counts()["checkpoints"] == len(acked) + 1
        for m in ["the-one", "model-0"]:
            assert inspect_checkpoint(store.model_dir(ACCT_A, m)).kind.value == "INFERENCE_BASE"


def test_parallel_trainer_sessions_save_into_one_job():
    """Several training clients on one job save concurrently through the gateway; each save is
    listed once, with the kind its bytes have, and no call is a 5xx."""
    from tests.gateway.helpers import Gateway

    sessions = 4
    with served() as srv:
        with http_client(srv.url) as http:
            create_job(http, "gw-job")

        def trainer(i: int) -> list[tuple[str, str]]:
            with httpx.Client(base_url=srv.url, timeout=120) as http:
                gw = Gateway(http, key=KEY_A, account=ACCT_A)
                model = gw.model("gw-job")
                gw.step("gw-job", model)
                out = []
                for k in range(3):
                    res = gw.save_state("gw-job", model, f"t{i}-step-{k}")
                    assert res.get("path") == f"t{i}-step-{k}", res
                    out.append((res["path"], "CHECKPOINT_TYPE_TRAINING"))
                    res = gw.save_sampler("gw-job", model, f"t{i}-step-{k}-0a1b2c3{i}", "base")
                    assert "error" not in res, res
                    out.append((res["path"], "CHECKPOINT_TYPE_INFERENCE_BASE"))
                return out

        saved = [row for rows in run_together(sessions, trainer) for row in rows]
        with http_client(srv.url) as http:
            got = [(short(r), r["checkpointType"]) for r in listed(http, "gw-job")]
        assert len(got) == len(set(got)) and sorted(got) == sorted(saved)
