"""Schema-driven fuzzing of the whole HTTP surface from /openapi.json (schemathesis, all phases).

The emulator is seeded with real jobs, rows, a model, an operation and a live trainer session,
and the fuzzer's path parameters and body fields are drawn from those ids most of the time, so
cases reach the handlers instead of stopping at 404. Passing means: no 5xx (the readiness
probe's 503 aside, see schemathesis_hooks.py), every error is the service's envelope, every
response matches its declared schema and content type, and the store is intact afterwards.

Excluded: POST /_emulator/v1/faults (a fuzzed fault plan would crash or fail the server on
purpose; test_fault_plan.py covers its validation) and POST /_emulator/v1/reset (it would wipe
the seed). FWEMU_FUZZ_EXAMPLES sets the examples per operation (CI default 40).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from fwemu.emulator.inspect import inspect_checkpoint
from tests.reliability.conftest import (
    ACCT_A, BASE, KEY_A, create_job, http_client, import_tar, promote, served,
)

pytestmark = pytest.mark.slow
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
CHECKS = "fwemu_error_envelopes,response_schema_conformance,content_type_conformance,use_after_free," \
         "ensure_resource_availability"


def seed(url: str, tars: dict[str, bytes]) -> dict[str, list[str]]:
    """Real resources for the fuzzer to aim at; returns the id dictionaries."""
    from tests.gateway.helpers import Gateway

    with http_client(url) as http:
        create_job(http, "fz-full")
        create_job(http, "fz-lora", lora_rank=4)
        for name, kind in (("hf-1", "INFERENCE_BASE"), ("peft-1", "INFERENCE_LORA"), ("dcp-1", "TRAINING")):
            assert import_tar(http, "fz-full", name, tars[kind]).status_code == 200
            assert import_tar(http, "fz-done", name, tars[kind], baseModel=BASE).status_code == 200
        assert promote(http, "fz-full", "hf-1", "promoted-1").status_code == 200
        op = promote(http, "fz-full", "peft-1", "promoted-2", async_promotion=True).json()["operation"]["name"]
        gw = Gateway(http, key=KEY_A, account=ACCT_A)
        session = gw.session("fz-full")
        model = gw.model("fz-full", session=session)
        rid = gw.submit("fz-full", "forward_backward", {"model_id": model, "seq_id": gw.seq("fz-full", model),
                                                        "forward_backward_input": {"data": [], "loss_fn": "x"}})
    return {"accounts": [ACCT_A], "jobs": ["fz-full", "fz-lora", "fz-done"],
            "checkpoints": ["hf-1", "peft-1", "dcp-1"], "models": ["promoted-1", "promoted-2"],
            "ops": [op.rsplit("/", 1)[-1]], "sessions": [session], "model_ids": [model], "requests": [rid],
            "names": ["step-1", "hf-1", "fresh-1", "cross_job://fz-done/dcp-1"]}


def config(ids: dict[str, list[str]], examples: int) -> str:
    dicts = "\n".join(f"[dictionaries.{k}]\nvalues = {json.dumps(v)}" for k, v in ids.items())
    return f"""seed = 20251129
hooks = {json.dumps(str(HOOKS))}
headers = {{ "X-Api-Key" = "{KEY_A}" }}
request-timeout = 60
workers = 1

[generation]
max-examples = {examples}

[phases.stateful]
max-steps = 10

{dicts}

[parameters]
"path.account" = {{ dictionary = "accounts", probability = 0.9 }}
"path.job_id" = {{ dictionary = "jobs", probability = 0.7 }}
"path.checkpoint" = {{ dictionary = "checkpoints", probability = 0.7 }}
"path.model_id" = {{ dictionary = "models", probability = 0.6 }}
"path.op_id" = {{ dictionary = "ops", probability = 0.6 }}
"body.session_id" = {{ dictionary = "sessions", probability = 0.6 }}
"body.model_id" = {{ dictionary = "model_ids", probability = 0.6 }}
"body.request_id" = {{ dictionary = "requests", probability = 0.6 }}
"body.path" = {{ dictionary = "names", probability = 0.5 }}
"""


def test_fuzz_every_operation_in_every_phase(tmp_path, sample_tars):
    examples = int(os.environ.get("FWEMU_FUZZ_EXAMPLES", "40"))
    with served() as srv:
        ids = seed(srv.url, sample_tars)
        cfg = tmp_path / "schemathesis.toml"
        cfg.write_text(config(ids, examples))
        out = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(cfg), "run", f"{srv.url}/openapi.json",
             "--phases", "examples,coverage,fuzzing,stateful", "--checks", CHECKS,
             "--exclude-path", "/_emulator/v1/faults", "--exclude-path", "/_emulator/v1/reset",
             "--report", "junit", "--report-junit-path", str(tmp_path / "junit.xml")],
            capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"})
        report = out.stdout + out.stderr
        assert out.returncode == 0, report[-6000:]
        cases = re.search(r"(\d+) generated, (\d+) passed", report)
        assert cases and cases.group(1) == cases.group(2) and int(cases.group(1)) >= 20 * examples, report[-3000:]
        tested = re.search(r"Tested:\s+(\d+)", report)
        assert tested and int(tested.group(1)) >= 35, report[-3000:]
        for phase in ("Coverage", "Fuzzing", "Stateful"):
            assert re.search(rf"✅\s+{phase}", report), (phase, report[-3000:])
        print(f"schemathesis: {cases.group(1)} cases over {tested.group(1)} operations, all passed")

        store = srv.app.state.services.store
        assert store.integrity_ok() and list(store.staging.iterdir()) == []
        for account, job_id in {(j.account, j.job_id) for j in store.list_jobs(ACCT_A)}:
            rows, _ = store.list_checkpoints(account, job_id, 1000)
            for row in rows:   # whatever the fuzzer managed to store is a real checkpoint
                assert inspect_checkpoint(store.checkpoint_dir(account, job_id, row.name)).kind == row.kind


def _response(status: int, body) -> SimpleNamespace:
    text = json.dumps(body) if not isinstance(body, str) else body
    return SimpleNamespace(status_code=status, text=text, json=lambda: json.loads(text))


def test_the_envelope_check_catches_what_it_must():
    """The custom check is the run's only 5xx guard, so prove it fails on a 5xx and a bare error."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fwemu_st_hooks", HOOKS)
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    check = getattr(hooks.fwemu_error_envelopes, "__wrapped__", hooks.fwemu_error_envelopes)
    env = {"error": {"code": 14, "status": "UNAVAILABLE", "message": "down"}}
    api = SimpleNamespace(path="/v1/accounts/{account}/rlorTrainerJobs")
    probe = SimpleNamespace(path="/training/v1/rlorTrainerJobs/{account}/{job_id}/api/v1/healthz")
    assert check(None, _response(200, {"ok": 1}), api) is None
    assert check(None, _response(404, {"error": {"code": 5, "status": "NOT_FOUND", "message": "x"}}), api) is None
    assert check(None, _response(503, env), probe) is None
    for response, case in ((_response(503, env), api), (_response(500, {"detail": "boom"}), api),
                           (_response(400, "<html>bad</html>"), api), (_response(422, {"detail": []}), api),
                           (_response(500, {"error": {"code": 13, "status": "INTERNAL", "message": "x"}}), probe)):
        with pytest.raises(AssertionError):
            check(None, response, case)
