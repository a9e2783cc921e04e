"""Fixtures for the cookbook compat suite: the compat venv, one `fwemu serve`, the recipe runs.

Every recipe run the selected tests need is started at once when the first of them is asked
for (they spend most of their time in the cookbook's own sleeps), each from its own log
directory; a test then waits for its run. Unselected tests start nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fwemu.emulator.server_process import ServeProcess
from tests.compat import recipes
from tests.compat.venv import Compat, locate

API_KEY = "fw-local-dev"          # `fwemu env`'s default key; the server maps it to account `local`
TOKENIZER = "Qwen/Qwen3-8B"       # resolved offline to fwemu's stand-in by `fwemu env`'s HF_HOME
BASE_MODEL = "accounts/fireworks/models/qwen3-8b"

# The runs, by the fixture name a test asks for. Each: (recipe, rows, spec without paths).
# sft_full: 8 rows / batch 4 = 2 steps, DCP every 2: the last step is a DCP step, so the final
# save reuses the name "step-2" (the row is replaced) and adds the sampler row that is promoted.
PLANS = {
    "sft_full_run": ("sft_loop", "chat", 8, dict(batch_size=4, dcp_save_interval=2, output_model_id="compat-sft-full")),
    "sft_lora_run": ("sft_loop", "chat", 8, dict(batch_size=4, lora_rank=8, output_model_id="compat-sft-lora")),
    "dpo_run": ("dpo_loop", "pairs", 4, dict(batch_size=2, output_model_id="compat-dpo")),
}
# 12 rows / batch 2 = 6 steps, DCP every 3: killed after step-3, resumed to step-6, promoted.
CRASH_PLAN = dict(batch_size=2, dcp_save_interval=3, output_model_id="compat-sft-resumed")
CRASH_FIXTURE = "crashed_and_resumed"


def write_dataset(path: Path, kind: str, rows: int) -> Path:
    """A tiny dataset in the cookbook's formats: OpenAI chat rows, or chosen/rejected pairs."""
    def chat(i: int, answer: str) -> dict:
        return {"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                             {"role": "assistant", "content": answer}]}
    items = [chat(i, str(2 * i)) if kind == "chat" else {"chosen": chat(i, str(2 * i)), "rejected": chat(i, str(2 * i + 1))}
             for i in range(rows)]
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return path


def base_spec(workdir: Path, dataset: Path, **extra) -> dict:
    """The Config fields every run sets: paths, the tokenizer, a short context, in-process rendering."""
    return dict(log_path=str(workdir / "logs"), dataset=str(dataset), tokenizer_model=TOKENIZER,
                base_model=BASE_MODEL, max_seq_len=256, epochs=1, render_workers=1, **extra)


@pytest.fixture(scope="session")
def compat() -> Compat:
    found, why = locate()
    if found is None:
        pytest.skip(why)
    return found


@pytest.fixture(scope="session")
def emulator(compat, tmp_path_factory):
    """`fwemu serve` on a free loopback port with its own data dir, the dev key for account `local`."""
    state = tmp_path_factory.mktemp("compat-state")
    server = ServeProcess(state, ["--api-key", f"{API_KEY}=local"], log_path=state.parent / "serve.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def env(compat, emulator, tmp_path_factory) -> dict[str, str]:
    return recipes.recipe_env(compat, emulator.url, emulator.data_dir, tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="session")
def launched(request, compat, emulator, env, tmp_path_factory) -> dict:
    """Start every run the session's selected tests use, together; {fixture name: Run or CrashAndResume}."""
    wanted = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    runs: dict = {}
    for name, (recipe, kind, rows, extra) in PLANS.items():
        if name in wanted:
            work = tmp_path_factory.mktemp(name)
            spec = base_spec(work, write_dataset(work / "data.jsonl", kind, rows), **extra)
            runs[name] = recipes.start(compat, env, name, recipe, spec, work)
    if wanted & {CRASH_FIXTURE, "resumed_job"}:
        work = tmp_path_factory.mktemp("crash")
        spec = base_spec(work, write_dataset(work / "data.jsonl", "chat", 12), **CRASH_PLAN)
        runs[CRASH_FIXTURE] = recipes.CrashAndResume(compat, env, spec, work, emulator.url, API_KEY,
                                                     kill_at="step-3").begin()
    yield runs
    for run in runs.values():
        for r in ([run.first, run.second] if isinstance(run, recipes.CrashAndResume) else [run]):
            if r is not None and r.proc is not None and r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait()


@pytest.fixture(scope="session")
def sft_full_run(launched):
    return launched["sft_full_run"]


@pytest.fixture(scope="session")
def sft_lora_run(launched):
    return launched["sft_lora_run"]


@pytest.fixture(scope="session")
def dpo_run(launched):
    return launched["dpo_run"]


@pytest.fixture(scope="session")
def crashed_and_resumed(launched) -> recipes.CrashAndResume:
    crash = launched[CRASH_FIXTURE].join()
    assert not crash.error, crash.error + "\n" + (crash.first.text()[-4000:] if crash.first else "")
    return crash


@pytest.fixture(scope="session")
def resumed_job(crashed_and_resumed) -> str:
    """A finished job with rows step-3 (DCP only), step-6 (DCP) and step-6-<session> (sampler)."""
    crashed_and_resumed.second.result()
    return crashed_and_resumed.job_id
