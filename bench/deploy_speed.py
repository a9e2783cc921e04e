"""Deployments: completions, delta hot loads and server memory, each against a direct baseline.

Everything goes through a real `fwemu serve` subprocess on loopback, as a user's SDK would:

* completions: POST /inference/v1/completions of --tokens tokens (ignore_eos, temperature 1,
  logprobs=true as the SDK always asks, not streamed), one request at a time on a keep-alive
  connection, vs the same stand-in model (same base weights, same torch thread count) sampling
  the same number of tokens directly in this process: (1) with the key/value cache the server
  uses (the baseline the goal is measured against), (2) the plain loop rerunning the whole prefix
  per token (what the model's own forward offers). Both processes run torch on --threads threads
  (OMP_NUM_THREADS; default 1). The requests and the two loops are
  interleaved, one of each per repetition, so load changes hit all three alike; medians.
* delta hot load: the SDK-shaped POST /hot_load/v1/models/hot_load of an ARC_V2 delta (the
  deployment holds its base, re-loaded before every repetition) vs applying the same delta to
  the same base with numpy in this process (stream both shards in 8 MiB pieces, XOR in place,
  write the result; no checksum, no model). Per model size (--sizes); the same POST again (the
  snapshot already served: nothing to apply) gives the request's fixed cost, and the server's
  work measured in-process (arc_v2.apply_delta, building the served model) explains the rest.
* memory: the server's RSS (VmRSS) after each block of hot loads, cycling a chain base, d1..dK
  (a full load and K deltas per cycle), e.g. after 5 and after 50 loads.

Snapshots come from a trainer job of the same server (the real SDK's training client:
forward_backward + optim_step, save_weights_for_sampler_ext base/delta).

    python bench/deploy_speed.py            # tables
    python bench/deploy_speed.py --quick    # default model size only, few repetitions
    python bench/deploy_speed.py --sizes large --parts b   # the delta hot load of a 91 MiB model only
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (API_KEY, ACCOUNT, MiB, ServeProcess, base_parser, emit, new_result,  # noqa: E402
                     proc_status_kib, ratio, table, target, warm_bytecode)

BASE = "accounts/fireworks/models/qwen3-8b"
SIZES = {"default": "", "large": "hidden=512,layers=8,heads=8,kv_heads=4,intermediate=1408"}
PROMPT_TEXT = "fwemu serves the stand-in model with the weights it hot-loaded; "


# ------------------------------------------------------------------------------ server set-up
class Setup:
    """A serve process with one trainer job, one training client and one hot-load deployment."""

    def __init__(self, tmp: Path, size_spec: str):
        self.size_spec = size_spec
        os.environ["FWEMU_MODEL_SIZE"] = size_spec
        os.environ.setdefault("TINKER_TELEMETRY", "0")
        self.data = tmp / "data"
        self.server = ServeProcess(self.data, stderr_path=tmp / "serve.err").start()
        import httpx
        from fireworks.training.sdk import FiretitanServiceClient, TrainerJobConfig, TrainerJobManager

        self.http = httpx.Client(base_url=self.server.url, headers={"x-api-key": API_KEY}, timeout=300)
        self.jobs = TrainerJobManager(api_key=API_KEY, base_url=self.server.url)
        self.endpoint = self.jobs.create_and_wait(TrainerJobConfig(base_model=BASE, lora_rank=0), poll_interval_s=0.1)
        self.job_name = f"accounts/{ACCOUNT}/rlorTrainerJobs/{self.endpoint.job_id}"
        self.service = FiretitanServiceClient(base_url=self.endpoint.base_url, api_key=API_KEY)
        self.client = self.service.create_training_client(BASE, lora_rank=0)
        r = self.http.post(f"/v1/accounts/{ACCOUNT}/deployments", params={"deploymentId": "bench-dep",
                                                                          "acceptShapelessRisk": "true"},
                           json={"baseModel": BASE, "enableHotLoad": True, "hotLoadTrainerJob": self.job_name})
        r.raise_for_status()
        self.model = f"accounts/{ACCOUNT}/deployments/bench-dep"

    def train(self, seed: int) -> None:
        from fireworks.training.sdk import types as T

        from fwemu.client.tokenizer import BOS_ID
        toks = [BOS_ID] + [(seed * 31 + i * 7) % 256 for i in range(64)]
        datum = T.Datum(model_input=T.ModelInput.from_ints(toks[:-1]),
                        loss_fn_inputs={"target_tokens": toks[1:], "weights": [1.0] * (len(toks) - 1)})
        fb = self.client.forward_backward([datum], "cross_entropy")
        step = self.client.optim_step(T.AdamParams(learning_rate=1e-2))
        fb.result()
        step.result()

    def chain(self, deltas: int, tag: str) -> list[str]:
        """A base snapshot and `deltas` deltas, each against the previous one."""
        names = [self.client.save_weights_for_sampler_ext(f"{tag}-0", checkpoint_type="base").snapshot_name]
        for i in range(deltas):
            self.train(i)
            names.append(self.client.save_weights_for_sampler_ext(f"{tag}-{i + 1}",
                                                                  checkpoint_type="delta").snapshot_name)
        return names

    def hot_load(self, identity: str, previous: str | None) -> float:
        body: dict = {"identity": identity, "reset_prompt_cache": True}
        if previous is not None:
            body["incremental_snapshot_metadata"] = {"previous_snapshot_identity": previous,
                                                     "compression_format": "arc_v2", "checksum_format": "alder32"}
        t0 = time.perf_counter()
        r = self.http.post("/hot_load/v1/models/hot_load", json=body,
                           headers={"fireworks-deployment": self.model, "fireworks-model": BASE})
        took = time.perf_counter() - t0
        r.raise_for_status()
        replica = r.json()["replicas"][0]
        if replica["current_snapshot_identity"] != identity:
            raise RuntimeError(f"hot load of {identity} not applied: {replica['loading_state']}")
        return took

    def snapshot_dir(self, identity: str) -> Path:
        return self.data / "blobs" / ACCOUNT / self.endpoint.job_id / identity

    def close(self) -> None:
        try:
            self.service.close()
        finally:
            self.http.close()
            self.server.stop()


# ------------------------------------------------------------------------------ (a) completions
def completions_part(s: Setup, tokens: int, reps: int, res: dict) -> None:
    import torch

    from fwemu.client.tokenizer import encode
    from fwemu.emulator.deployments import engine as engines

    prompt = encode(PROMPT_TEXT, add_bos=True)
    body = {"model": s.model, "prompt": prompt, "max_tokens": tokens, "temperature": 1.0, "ignore_eos": True,
            "logprobs": True}
    # the deployment serves the base weights until a hot load: build the same model here
    eng = engines.base_engine(BASE)

    def over_http(seed: int) -> float:
        t0 = time.perf_counter()
        r = s.http.post("/inference/v1/completions", json={**body, "seed": seed})
        took = time.perf_counter() - t0
        r.raise_for_status()
        got = len(r.json()["choices"][0]["raw_output"]["completion_token_ids"])
        if got != tokens:
            raise RuntimeError(f"asked for {tokens} tokens, got {got}")
        return took

    @torch.no_grad()
    def direct(seed: int, cached: bool) -> float:
        gen = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        ids = list(prompt)
        step = eng.decoder().logits if cached else eng.logits
        for _ in range(tokens):
            logits = step(ids)[-1]
            ids.append(int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)))
        return time.perf_counter() - t0

    over_http(0), direct(0, True), direct(0, False)  # warm-up: model build, first allocations
    cpu0 = s.server.cpu_s()
    http_s, cached_s, full_s = [], [], []
    for i in range(reps):
        http_s.append(over_http(i + 1))
        cached_s.append(direct(i + 1, True))
        full_s.append(direct(i + 1, False))
    server_cpu = (s.server.cpu_s() - cpu0) / reps if cpu0 is not None else None
    med = {k: statistics.median(v) for k, v in (("http", http_s), ("cached", cached_s), ("full", full_s))}
    x = ratio(med["http"], med["cached"])
    res["completions"] = {"tokens": tokens, "prompt_tokens": len(prompt), "reps": reps,
                          "threads": torch.get_num_threads(), **{f"{k}_ms": round(v * 1e3, 2) for k, v in med.items()},
                          "server_cpu_ms_per_request": round(server_cpu * 1e3, 1) if server_cpu else None,
                          "x_cached": x, "x_full_prefix": ratio(med["http"], med["full"])}
    res["_tables"].append(table(
        f"(a) {tokens} tokens after a {len(prompt)}-token prompt (median of {reps})",
        ["path", "ms per completion", "ms per token", "x direct (KV cache)"],
        [["POST /inference/v1/completions (logprobs, KV cache + 1 scoring forward)", med["http"] * 1e3,
          med["http"] * 1e3 / tokens, f"{x:.2f}x"],
         ["direct torch, KV cache (baseline)", med["cached"] * 1e3, med["cached"] * 1e3 / tokens, "1.00x"],
         ["direct torch, whole prefix per token (no cache)", med["full"] * 1e3, med["full"] * 1e3 / tokens,
          f"{ratio(med['full'], med['cached']):.2f}x"]],
        note=f"server CPU per request {res['completions']['server_cpu_ms_per_request']} ms; "
             f"torch threads {torch.get_num_threads()} in both processes"))
    res["_targets"].append(target("completions of 64 tokens over HTTP vs direct torch (KV cache)", "<= 1.5x",
                                  f"{x:.2f}x ({med['http'] * 1e3:.0f} vs {med['cached'] * 1e3:.0f} ms)",
                                  x is not None and x <= 1.5))


# ------------------------------------------------------------------------------ (b) delta hot load
def numpy_apply(base: Path, delta: Path, out: Path, chunk: int = 8 << 20) -> float:
    """The bare work, done well: stream both shards' data sections in `chunk`-byte pieces into
    preallocated numpy buffers, XOR in place, write the target shard (base header kept)."""
    import numpy as np

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    buf_b, buf_d = np.empty(chunk, dtype=np.uint8), np.empty(chunk, dtype=np.uint8)
    for shard in sorted(p.name for p in delta.glob("*.safetensors")):
        with open(base / shard, "rb") as fb, open(delta / shard, "rb") as fd, open(out / shard, "wb") as fo:
            hb = int.from_bytes(fb.read(8), "little")
            fo.write(hb.to_bytes(8, "little") + fb.read(hb))
            fd.seek(8 + int.from_bytes(fd.read(8), "little"))
            while True:
                n = fb.readinto(memoryview(buf_b))
                if not n:
                    break
                fd.readinto(memoryview(buf_d)[:n])
                np.bitwise_xor(buf_b[:n], buf_d[:n], out=buf_b[:n])
                fo.write(memoryview(buf_b)[:n])
    return time.perf_counter() - t0


def hot_load_part(s: Setup, label: str, reps: int, res: dict, tmp: Path) -> None:
    from fwemu.emulator.deployments import engine as engines
    from fwemu.emulator.trainer import arc_v2

    base, delta = s.chain(1, f"hl-{label}")
    size_mib = (s.snapshot_dir(base) / "model.safetensors").stat().st_size / MiB
    s.hot_load(base, None)
    s.hot_load(delta, base)  # warm-up
    full_s, delta_s, noop_s, numpy_s, apply_s, build_s = [], [], [], [], [], []
    for i in range(reps):
        full_s.append(s.hot_load(base, None))
        delta_s.append(s.hot_load(delta, base))
        noop_s.append(s.hot_load(delta, base))  # already served: the request's fixed cost only
        out = tmp / f"np-{label}-{i}"
        numpy_s.append(numpy_apply(s.snapshot_dir(base), s.snapshot_dir(delta), out))
        shutil.rmtree(out)
        t0 = time.perf_counter()
        arc_v2.apply_delta(s.snapshot_dir(base), s.snapshot_dir(delta), out)
        apply_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        engines.full_engine(out)
        build_s.append(time.perf_counter() - t0)
        shutil.rmtree(out)
    med = {k: statistics.median(v) for k, v in (("full", full_s), ("delta", delta_s), ("noop", noop_s),
                                                 ("numpy", numpy_s), ("apply", apply_s), ("build", build_s))}
    x = ratio(med["delta"], med["numpy"])
    res.setdefault("hot_load", {})[label] = {"weights_mib": round(size_mib, 1), "reps": reps,
                                             **{f"{k}_ms": round(v * 1e3, 2) for k, v in med.items()},
                                             "x_numpy": x}
    res["_rows_hl"].append([label, f"{size_mib:.1f}", med["delta"] * 1e3, med["numpy"] * 1e3, f"{x:.2f}x",
                            med["noop"] * 1e3, med["apply"] * 1e3, med["build"] * 1e3, med["full"] * 1e3])


# ------------------------------------------------------------------------------ (c) memory
def memory_part(s: Setup, loads: list[int], chain_len: int, res: dict) -> None:
    names = s.chain(chain_len - 1, "mem")
    rss, done = {}, 0
    prev: str | None = None
    rss[0] = proc_status_kib(s.server.pid, "VmRSS")
    for n in sorted(loads):
        while done < n:
            name = names[done % chain_len]
            s.hot_load(name, None if done % chain_len == 0 else prev)
            prev, done = name, done + 1
        rss[n] = proc_status_kib(s.server.pid, "VmRSS")
    first, last = min(loads), max(loads)
    growth = (rss[last] - rss[first]) / 1024
    res["memory"] = {"chain": chain_len, "rss_mib": {str(k): round(v / 1024, 1) for k, v in rss.items()},
                     "growth_mib": round(growth, 1)}
    res["_tables"].append(table(
        f"(c) server RSS while hot-loading a chain of {chain_len} (1 full + {chain_len - 1} deltas) over and over",
        ["hot loads so far", "VmRSS MiB"], [[k, v / 1024] for k, v in sorted(rss.items())],
        note="0 = before the first load of this part (the server had already served the parts above)"))
    res["_targets"].append(target(f"server memory flat in the number of hot loads (RSS after {last} - after {first})",
                                  "<= 16 MiB", f"{growth:+.1f} MiB", growth <= 16))


def run(args) -> dict:
    sizes = [x for x in (args.sizes or ("default" if args.quick else "default,large")).split(",") if x]
    reps = args.reps or (3 if args.quick else 7)
    parts = set(args.parts.split(","))
    loads = [int(x) for x in (args.loads or ("5,20" if args.quick else "5,10,20,30,40,50")).split(",")]
    result = new_result("deploy_speed", "Deployments: completions, delta hot load, memory", args,
                        {"tokens": args.tokens, "reps": reps, "sizes": {k: SIZES.get(k, k) or "(default)" for k in sizes},
                         "loads": loads, "chain": args.chain, "parts": sorted(parts), "torch_threads": args.threads or "default"})
    res = {"_tables": [], "_targets": [], "_rows_hl": []}
    warm_bytecode()
    saved_env = os.environ.get("FWEMU_MODEL_SIZE")
    tmp_root = Path(tempfile.mkdtemp(prefix="fwemu-bench-deploy-", dir=args.tmp_dir))
    try:
        for label in sizes:
            tmp = tmp_root / label
            tmp.mkdir()
            s = Setup(tmp, SIZES.get(label, label))
            try:
                if label == sizes[0] and "a" in parts:
                    completions_part(s, args.tokens, reps, res)
                if "b" in parts:
                    hot_load_part(s, label, reps, res, tmp)
                if label == sizes[0] and "c" in parts:
                    memory_part(s, loads, args.chain, res)
            finally:
                s.close()
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
        if saved_env is None:
            os.environ.pop("FWEMU_MODEL_SIZE", None)
        else:
            os.environ["FWEMU_MODEL_SIZE"] = saved_env
    rows = res.pop("_rows_hl")
    result["tables"] = res.pop("_tables")
    if rows:
        result["tables"].insert(1 if "a" in parts else 0, table(
        f"(b) delta hot load vs applying the same delta with numpy (median of {reps})",
            ["model size", "weights MiB", "hot load ms (POST)", "numpy XOR ms", "x numpy",
             "same snapshot again ms (POST, nothing to apply)", "in-process: arc_v2.apply_delta ms",
             "in-process: build served model ms", "full (base) hot load ms"],
            rows, note="the POST is answered once the delta is applied, checked (adler32) and the served model rebuilt; "
                       "'same snapshot again' is the request's fixed cost (HTTP, auth, row lookups, status)"))
    found = res.pop("_targets")   # [completions, memory]
    hot = [target(f"delta hot load vs numpy apply ({label} model, {hl['weights_mib']} MiB)", "<= 1.2x",
                  f"{hl['x_numpy']:.2f}x ({hl['delta_ms']:.1f} vs {hl['numpy_ms']:.1f} ms)",
                  hl["x_numpy"] is not None and hl["x_numpy"] <= 1.2) for label, hl in res.get("hot_load", {}).items()]
    first = [t for t in found if t["name"].startswith("completions")]
    result["targets"] = first + hot + [t for t in found if t not in first]
    result["results"] = res
    return result


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--reps", type=int, help="repetitions per measurement (default 7; --quick: 3)")
    p.add_argument("--sizes", help="comma list of model sizes: default, large, or a FWEMU_MODEL_SIZE spec")
    p.add_argument("--loads", help="comma list of hot-load counts to sample RSS at (default 5,10,20,30,40,50)")
    p.add_argument("--parts", default="a,b,c", help="a: completions, b: delta hot load, c: memory (comma list)")
    p.add_argument("--chain", type=int, default=5, help="snapshots per chain in the memory part (1 base + deltas)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads in the server and in the baseline (default 1: on a small shared machine "
                        "more threads than idle cores make OpenMP spin; 0 = torch's default)")
    args = p.parse_args(argv)
    if args.threads:  # before torch is imported here or in the server
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    emit(run(args), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
