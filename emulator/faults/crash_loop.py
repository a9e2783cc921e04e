"""Kill a real `fwemu serve` again and again in the middle of writes, and prove nothing is lost.

    python -m fwemu.emulator.faults.crash_loop --kills 50 [--seed 1] [--data-dir DIR] [--json]

Each round: the server (a subprocess on one data dir) is driven by a few client threads doing
checkpoint imports, promotions and listings over real HTTP (and, every few rounds, a trainer
session doing DCP and sampler saves through the gateway); then it dies, by SIGKILL at a random
moment or, every few rounds, by an injected crash rule that exits between a blob write and its
metadata commit. It is restarted on the same data dir and checked:

* `PRAGMA integrity_check` is ok; no staging leftovers after start-up recovery;
* every row has its directory and every blob directory has its row (no orphans either way);
* every listed row's directory passes the inspector with the kind the listing shows, and no
  row is a rejected (half-written) one;
* every promoted model has its files, and they pass the inspector as a promotable kind;
* every save, import and promotion that was answered 200 is still there.

A problem is reported with its round; the exit status is 1 when there is any.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import httpx

from fwemu.emulator.faults.middleware import CRASH_EXIT_CODE
from fwemu.emulator.inspect import Kind, inspect_checkpoint
from fwemu.emulator.server_process import ServeProcess

KEY, ACCOUNT = "crash-loop-key", "crash"
BASE = "accounts/fireworks/models/crash-base"
TINY_MODEL = "hidden=32,layers=1,heads=2,kv_heads=1,intermediate=64"
PROMOTABLE = {Kind.INFERENCE_BASE.wire, Kind.INFERENCE_LORA.wire}


@dataclass
class Report:
    sigkills: int = 0
    injected_crashes: int = 0
    rounds: int = 0
    acked_imports: int = 0
    acked_promotions: int = 0
    acked_trainer_saves: int = 0
    rows_checked: int = 0
    models_checked: int = 0
    staging_leftovers: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return self.sigkills + self.injected_crashes


# ------------------------------------------------------------------------------ sample checkpoints
def sample_archives(workdir: Path) -> dict[str, tuple[bytes, str]]:
    """Tars of real checkpoints of each kind, plus a larger sharded one so kills land mid-upload."""
    import torch

    from fwemu.emulator.inspect.examples import hf_tensors, write_example, write_hf

    out: dict[str, tuple[bytes, str]] = {}
    for kind in (Kind.TRAINING, Kind.TRAINING_LORA, Kind.INFERENCE_BASE, Kind.INFERENCE_LORA):
        out[kind.value.lower()] = (_tar(write_example(kind, workdir / kind.value)), kind.wire)
    big = dict(hf_tensors(1))
    big["lm_head.weight"] = torch.randn(2048, 1024, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    dest = workdir / "big"
    dest.mkdir()
    write_hf(dest, shards=3, tensors=big)
    out["big"] = (_tar(dest), Kind.INFERENCE_BASE.wire)
    return out


def _tar(directory: Path) -> bytes:
    buf = BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in sorted(directory.iterdir()):
            tar.add(f, arcname=f.name)
    return buf.getvalue()


# ------------------------------------------------------------------------------ the server
class Server(ServeProcess):
    """`python -m fwemu.emulator.cli serve` on a data dir, as a user runs it: tiny model, one key, a log file."""

    def __init__(self, data_dir: Path, log_path: Path):
        super().__init__(data_dir, ["--api-key", f"{KEY}={ACCOUNT}"], log_path=log_path,
                         env={"FWEMU_MODEL_SIZE": TINY_MODEL, "TINKER_TELEMETRY": "0"})


# ------------------------------------------------------------------------------ what was acknowledged
@dataclass
class Acked:
    """Everything the server answered 200 for: it must survive any later death."""

    checkpoints: dict[tuple[str, str], str] = field(default_factory=dict)   # (job, name) -> expected wire kind
    models: set[str] = field(default_factory=set)
    trainer_saves: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def checkpoint(self, job: str, name: str, kind: str) -> None:
        with self.lock:
            self.checkpoints[(job, name)] = kind

    def promotable(self) -> list[tuple[str, str]]:
        with self.lock:
            return [k for k, v in self.checkpoints.items() if v in PROMOTABLE]


def _client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"X-Api-Key": KEY}, timeout=30)


class Driver(threading.Thread):
    """Imports, promotions and listings in a random mix until the server goes away."""

    def __init__(self, url: str, tag: str, rng: random.Random, archives, acked: Acked, jobs: list[str]):
        super().__init__(daemon=True, name=f"driver-{tag}")
        self.url, self.tag, self.rng, self.archives, self.acked, self.jobs = url, tag, rng, archives, acked, jobs
        self.counter = 0
        self.stop = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        with _client(self.url) as http:
            while not self.stop.is_set():
                self.counter += 1
                try:
                    self.one(http)
                except (httpx.TransportError, httpx.DecodingError):
                    return   # the server died under us: whatever was in flight is not acknowledged

    def one(self, http: httpx.Client) -> None:
        roll = self.rng.random()
        job = self.rng.choice(self.jobs)
        if roll < 0.65:
            key = self.rng.choice(sorted(self.archives))
            body, kind = self.archives[key]
            name = f"{self.tag}-{self.counter}-{key.replace('_', '-')}"
            r = http.post(f"/_emulator/v1/accounts/{ACCOUNT}/rlorTrainerJobs/{job}/checkpoints:import",
                          params={"name": name}, content=body, headers={"Content-Type": "application/x-tar"})
            if r.status_code == 200:
                self.acked.checkpoint(job, name, kind)
            else:
                self.errors.append(f"import {job}/{name}: HTTP {r.status_code} {r.text[:200]}")
        elif roll < 0.9:
            candidates = self.acked.promotable()
            if not candidates:
                return
            src_job, src = self.rng.choice(candidates)
            model = f"m-{self.tag}-{self.counter}"
            r = http.post(f"/v1/accounts/{ACCOUNT}/checkpoints/{src}:promote",
                          json={"output_model": f"accounts/{ACCOUNT}/models/{model}",
                                "trainer_job_id": f"accounts/{ACCOUNT}/rlorTrainerJobs/{src_job}", "base_model": BASE})
            if r.status_code == 200:
                with self.acked.lock:
                    self.acked.models.add(model)
            else:
                self.errors.append(f"promote {src} -> {model}: HTTP {r.status_code} {r.text[:200]}")
        else:
            r = http.get(f"/v1/accounts/{ACCOUNT}/rlorTrainerJobs/{job}/checkpoints", params={"pageSize": 1000})
            if r.status_code != 200:
                self.errors.append(f"list {job}: HTTP {r.status_code} {r.text[:200]}")


class TrainerDriver(Driver):
    """A gateway session on the trainer job: one training step, then DCP and sampler saves."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.ready = threading.Event()   # set once a step is trained: saves can start

    def run(self) -> None:
        job = self.jobs[0]
        gw = f"/training/v1/rlorTrainerJobs/{ACCOUNT}/{job}/api/v1"
        with _client(self.url) as http:
            try:
                session = http.post(f"{gw}/create_session", json={"tags": []}).json()["session_id"]
                model = self._result(http, gw, http.post(f"{gw}/create_model", json={
                    "session_id": session, "model_seq_id": 0, "base_model": BASE,
                    "lora_config": {"rank": 0}})).get("model_id")
                if not model:
                    return
                seq = 0
                tokens = list(range(1, 17))
                fb = {"forward_backward_input": {"loss_fn": "cross_entropy", "data": [{
                    "model_input": {"chunks": [{"type": "encoded_text", "tokens": tokens[:-1]}]},
                    "loss_fn_inputs": {"target_tokens": {"data": tokens[1:], "dtype": "int64", "shape": [15]},
                                       "weights": {"data": [1.0] * 15, "dtype": "float32", "shape": [15]}}}]}}
                for op, body in (("forward_backward", fb), ("optim_step", {"adam_params": {"learning_rate": 1e-3}})):
                    seq += 1
                    self._result(http, gw, http.post(f"{gw}/{op}", json={**body, "model_id": model, "seq_id": seq}))
                self.ready.set()
                while not self.stop.is_set():
                    self.counter += 1
                    seq += 1
                    sampler = self.counter % 3 == 0
                    name = f"{self.tag}-{self.counter}" + ("-0a1b2c3d" if sampler else "")
                    op = "save_weights_for_sampler" if sampler else "save_weights"
                    body = {"model_id": model, "path": name, "seq_id": seq}
                    if sampler:
                        body["checkpoint_type"] = "base"
                    out = self._result(http, gw, http.post(f"{gw}/{op}", json=body))
                    if out.get("path"):
                        kind = Kind.INFERENCE_BASE.wire if sampler else Kind.TRAINING.wire
                        self.acked.checkpoint(job, out["path"], kind)
                        with self.acked.lock:
                            self.acked.trainer_saves += 1
                    else:
                        self.errors.append(f"trainer {op} {name}: {out}")
            except (httpx.TransportError, httpx.DecodingError, KeyError, ValueError):
                return

    def _result(self, http: httpx.Client, gw: str, submitted: httpx.Response) -> dict:
        if submitted.status_code != 200:
            self.errors.append(f"gateway submit: HTTP {submitted.status_code} {submitted.text[:200]}")
            return {}
        rid = submitted.json()["request_id"]
        while True:
            out = http.post(f"{gw}/retrieve_future", json={"request_id": rid, "allow_metadata_only": True}).json()
            if out.get("type") != "try_again":
                return out


# ------------------------------------------------------------------------------ checks
def _all_rows(http: httpx.Client, job: str, problem) -> list[dict]:
    """Every listed row of the job, page by page; each name must come exactly once."""
    rows, token = [], ""
    while True:
        r = http.get(f"/v1/accounts/{ACCOUNT}/rlorTrainerJobs/{job}/checkpoints",
                     params={"pageSize": 500, "pageToken": token})
        if r.status_code != 200:
            problem(f"listing {job}: HTTP {r.status_code} {r.text[:200]}")
            return rows
        rows += r.json()["checkpoints"]
        token = r.json()["nextPageToken"]
        if not token:
            names = [row["name"] for row in rows]
            if len(names) != len(set(names)):
                problem(f"listing {job} repeats rows across pages")
            return rows


def check_store(server: Server, acked: Acked, jobs: list[str], report: Report, where: str) -> None:
    """Every invariant of the module docstring, on a freshly restarted server."""
    def problem(text: str) -> None:
        report.problems.append(f"{where}: {text}")

    root = server.data_dir
    leftovers = sorted(p.name for p in (root / "staging").iterdir())
    if leftovers:
        problem(f"staging leftovers after recovery: {leftovers[:5]}")
    db = sqlite3.connect(f"file:{root / 'fwemu.sqlite'}?mode=ro", uri=True)
    try:
        if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            problem("PRAGMA integrity_check is not ok")
        rows = {(a, j, n): k for a, j, n, k in db.execute("SELECT account, job_id, name, kind FROM checkpoints")}
        models = {(a, m) for a, m in db.execute("SELECT account, model_id FROM models")}
    finally:
        db.close()
    dirs = {tuple(p.parts[-3:]) for p in (root / "blobs").glob("*/*/*")}
    model_dirs = {tuple(p.parts[-2:]) for p in (root / "models").glob("*/*")}
    for orphan in sorted(dirs - set(rows))[:5]:
        problem(f"blob directory without a row: {'/'.join(orphan)}")
    for missing in sorted(set(rows) - dirs)[:5]:
        problem(f"row without a blob directory: {'/'.join(missing)}")
    for bad in sorted(k for k, v in rows.items() if v is None)[:5]:
        problem(f"rejected (half-written?) checkpoint row kept: {'/'.join(bad)}")
    for orphan in sorted(model_dirs - models)[:5]:
        problem(f"model directory without a row: {'/'.join(orphan)}")
    for missing in sorted(models - model_dirs)[:5]:
        problem(f"model row without files: {'/'.join(missing)}")

    with _client(server.url) as http:
        state = http.get("/_emulator/v1/state").json()
        if state.get("integrity") is not True:
            problem(f"/_emulator/v1/state integrity is {state.get('integrity')!r}")
        listed: dict[tuple[str, str], str] = {}
        for job in jobs:
            for row in _all_rows(http, job, problem):
                name = row["name"].rsplit("/", 1)[-1]
                listed[(job, name)] = row["checkpointType"]
                verdict = inspect_checkpoint(root / "blobs" / ACCOUNT / job / name)
                report.rows_checked += 1
                if verdict.kind is None or verdict.kind.wire != row["checkpointType"]:
                    problem(f"listed {job}/{name} as {row['checkpointType']} but the inspector says "
                            f"{verdict.kind.wire if verdict.kind else verdict.reason}")
        with acked.lock:
            want_rows, want_models = dict(acked.checkpoints), set(acked.models)
        for (job, name), kind in sorted(want_rows.items()):
            if listed.get((job, name)) != kind:
                problem(f"acknowledged checkpoint {job}/{name} ({kind}) is listed as {listed.get((job, name))}")
        for model in sorted(want_models):
            r = http.get(f"/v1/accounts/{ACCOUNT}/models/{model}")
            mdir = root / "models" / ACCOUNT / model
            report.models_checked += 1
            if r.status_code != 200:
                problem(f"acknowledged model {model}: HTTP {r.status_code}")
            verdict = inspect_checkpoint(mdir)
            if verdict.kind is None or verdict.kind.wire not in PROMOTABLE:
                problem(f"model {model} files do not pass the inspector: {verdict.reason or verdict.kind}")
        for _acct, model in sorted(models):
            if model not in want_models:   # promoted, but the answer was lost in the kill: must still be whole
                verdict = inspect_checkpoint(root / "models" / ACCOUNT / model)
                report.models_checked += 1
                if verdict.kind is None:
                    problem(f"unacknowledged model {model} is half there: {verdict.reason}")


# ------------------------------------------------------------------------------ the loop
def run_loop(kills: int, seed: int = 1, data_dir: Path | None = None, *, crash_every: int = 4,
             trainer_every: int = 5, max_run_s: float = 0.8, drivers: int = 3,
             log=lambda *_: None) -> Report:
    """Kill the server `kills` times with SIGKILL (plus injected crashes every `crash_every` rounds)."""
    rng = random.Random(seed)
    report = Report()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fwemu-crash-") as tmp:
        work = Path(tmp)
        data_dir = Path(data_dir) if data_dir else work / "data"
        archives = sample_archives(work)
        server = Server(data_dir, work / "server.log")
        acked = Acked()
        jobs = ["trainer", "imports-a", "imports-b"]
        server.start()
        try:
            with _client(server.url) as http:
                for job in jobs:
                    r = http.post(f"/v1/accounts/{ACCOUNT}/rlorTrainerJobs", params={"rlorTrainerJobId": job},
                                  json={"trainingConfig": {"baseModel": BASE, "loraRank": 0}})
                    if r.status_code not in (200, 409):
                        raise RuntimeError(f"cannot create job {job}: {r.status_code} {r.text}")
            while report.sigkills < kills:
                report.rounds += 1
                where = f"round {report.rounds}"
                crash_round = crash_every > 0 and report.rounds % crash_every == 0
                trainer_round = trainer_every > 0 and report.rounds % trainer_every == 1
                if crash_round:
                    op = rng.choice(["import", "import", "promote", "save_weights"] if trainer_round
                                    else ["import", "import", "promote"])
                    rule = {"operation": op, "action": "crash", "nth": rng.randint(1, 3)}
                    with _client(server.url) as http:
                        http.post("/_emulator/v1/faults", json={"rules": [rule]}).raise_for_status()
                threads: list[Driver] = [
                    Driver(server.url, f"r{report.rounds}d{i}", random.Random(rng.random()), archives, acked, jobs[1:])
                    for i in range(drivers)]
                if trainer_round:   # torch loads in the server first: start the others once it saves
                    trainer = TrainerDriver(server.url, f"r{report.rounds}t", random.Random(rng.random()),
                                            archives, acked, jobs[:1])
                    trainer.start()
                    deadline = time.monotonic() + 60
                    while not trainer.ready.wait(0.05) and server.proc.poll() is None and time.monotonic() < deadline:
                        pass
                for t in threads:
                    t.start()
                if trainer_round:
                    threads.append(trainer)
                # a crash round runs until the armed crash strikes (SIGKILL only if it never does)
                run_for = 12.0 if crash_round else rng.uniform(0.05, max_run_s) + (0.5 if trainer_round else 0.0)
                deadline = time.monotonic() + run_for
                while time.monotonic() < deadline and server.proc.poll() is None:
                    time.sleep(0.01)
                killed = server.sigkill()
                if killed:
                    report.sigkills += 1
                elif server.proc.returncode == CRASH_EXIT_CODE:
                    report.injected_crashes += 1
                else:
                    tail = server.log_path.read_text(errors="replace")[-1500:]
                    report.problems.append(f"{where}: the server died on its own with exit status "
                                           f"{server.proc.returncode}; its log ends:\n{tail}")
                for t in threads:
                    t.stop.set()
                    t.join(timeout=30)
                    for e in t.errors:
                        report.problems.append(f"{where}: server refused a valid request: {e}")
                leftovers = len(list((data_dir / "staging").iterdir())) if (data_dir / "staging").exists() else 0
                report.staging_leftovers += leftovers
                server.start()
                check_store(server, acked, jobs, report, where)
                log(f"{where}: {'SIGKILL' if killed else 'injected crash'} "
                    f"sigkills={report.sigkills} crashes={report.injected_crashes} "
                    f"acked={len(acked.checkpoints)}+{len(acked.models)} problems={len(report.problems)}")
        finally:
            server.stop()
        report.acked_trainer_saves = acked.trainer_saves
        report.acked_promotions = len(acked.models)
        report.acked_imports = len(acked.checkpoints) - report.acked_trainer_saves
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fwemu.emulator.faults.crash_loop", description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=50, help="SIGKILLs to survive (injected crashes come on top)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data-dir", type=Path, default=None, help="keep the state here (default: a temp dir)")
    p.add_argument("--crash-every", type=int, default=4, help="every Nth round also arms an injected crash")
    p.add_argument("--trainer-every", type=int, default=5, help="every Nth round also saves through the gateway")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    report = run_loop(args.kills, args.seed, args.data_dir, crash_every=args.crash_every,
                      trainer_every=args.trainer_every,
                      log=(lambda *_: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True)))
    summary = {"kills": report.kills, "sigkills": report.sigkills, "injected_crashes": report.injected_crashes,
               "rounds": report.rounds, "acked_imports": report.acked_imports,
               "acked_trainer_saves": report.acked_trainer_saves, "acked_promotions": report.acked_promotions,
               "rows_checked": report.rows_checked, "models_checked": report.models_checked,
               "staging_leftovers_swept": report.staging_leftovers, "seconds": round(report.seconds, 1),
               "problems": report.problems}
    print(json.dumps(summary, indent=2))
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
