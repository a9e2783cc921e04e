"""DCP save / load of the stand-in trainer at N = 1 and N = 2 ranks, against safetensors.

For each stand-in size (the default, and a larger one in FWEMU_MODEL_SIZE syntax) and each N:

* N = 1 is the default one-process ``TrainerModel`` (DCP with ``no_dist``); N = 2 is two gloo
  processes running ``ShardedTrainerModel`` (FSDP2), as ``FWEMU_TRAINER_RANKS=2`` runs them.
* after one training step (so Adam's moments are real) and one untimed save + load (imports,
  first-call costs), ``save_state`` and
  ``load_state(optimizer=True)`` are timed --reps times (median); a rank's time is taken between
  two barriers and the slowest rank's counts.
* peak memory per rank: the rise of the process's peak RSS (VmHWM, reset through
  /proc/self/clear_refs before each operation) over its RSS just before it; the largest rank.
* baseline: the same tensors (each rank's local weights and Adam moments) written with
  ``safetensors.torch.save_file``, every rank its own file at once, timed the same way. The ratio
  is DCP throughput / safetensors throughput, both measured in this run.

    python bench/dcp_multirank.py             # about a minute on 2 CPU cores
    python bench/dcp_multirank.py --quick     # a smaller "larger" size, one repetition
    python bench/dcp_multirank.py --json
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MiB, base_parser, emit, new_result, table, target  # noqa: E402

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
ADAM = {"learning_rate": 1e-3, "grad_clip_norm": 1.0}
LARGER = "hidden=384,layers=6,heads=6,kv_heads=2,intermediate=1024"
LARGER_QUICK = "hidden=256,layers=4,heads=4,kv_heads=2,intermediate=704"


def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _measured(fn) -> tuple[float, float]:
    """(seconds, peak RSS rise in MiB) of fn(), on this rank."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    return dt, max(0, _status_kib("VmHWM") - before) / 1024


def _rank(rank: int, world: int, port: int, sizes: list[str], reps: int, tmp: str, out: str) -> None:
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file

    from fwemu.client.tokenizer import chat_datum
    from fwemu.emulator.trainer.model_config import ModelSize
    from fwemu.emulator.trainer.model_session import TrainerModel

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if world > 1:
        from datetime import timedelta

        from fwemu.emulator.trainer.sharded import ShardedTrainerModel

        store = dist.TCPStore("127.0.0.1", port, world_size=None, is_master=False, timeout=timedelta(seconds=120))
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    data = [chat_datum({"messages": [{"role": "user", "content": "Name a colour."},
                                     {"role": "assistant", "content": "Blue."}]})] * 4
    report = []

    def sync(fn) -> tuple[float, float]:
        if world > 1:
            dist.barrier()
        dt, peak = _measured(fn)
        if world > 1:
            dist.barrier()
            both = torch.tensor([dt, peak], dtype=torch.float64)
            dist.all_reduce(both, op=dist.ReduceOp.MAX)
            dt, peak = both.tolist()
        return dt, peak

    for spec in sizes:
        size = ModelSize.parse(spec)
        t = (ShardedTrainerModel if world > 1 else TrainerModel)(BASE_MODEL, size=size, device="cpu")
        t.forward_backward(data, "cross_entropy")
        t.optim_step(ADAM)
        local = {}
        for n, p in t._trainable:
            local[n] = p.detach()
            s = t.optimizer.state[p]
            local[n + ".exp_avg"], local[n + ".exp_avg_sq"] = s["exp_avg"], s["exp_avg_sq"]
        local = {k: (v.to_local() if hasattr(v, "to_local") else v).contiguous() for k, v in local.items()}
        local_bytes = sum(v.numel() * v.element_size() for v in local.values())
        total = torch.tensor([local_bytes], dtype=torch.int64)
        if world > 1:
            dist.all_reduce(total)
        row = {"size": spec or "default", "params": size.num_parameters(), "ranks": world,
               "state_bytes": int(total.item())}
        samples: dict[str, list] = {"save": [], "load": [], "safetensors": []}
        if spec == sizes[0]:  # warm-up, untimed: first-call imports and planner caches are not what we measure
            warm = Path(tmp) / f"warm-{world}"
            sync(lambda: t.save_state(warm))
            sync(lambda: t.load_state(warm, optimizer=True))
        for i in range(reps):
            dest = Path(tmp) / f"{world}-{spec or 'default'}-{i}"
            samples["save"].append(sync(lambda: t.save_state(dest)))
            samples["load"].append(sync(lambda: t.load_state(dest, optimizer=True)))
            st = Path(tmp) / f"st-{world}-{spec or 'default'}-{i}"
            st.mkdir(parents=True, exist_ok=True)
            samples["safetensors"].append(sync(lambda: save_file(local, str(st / f"rank{rank}.safetensors"))))
        for k, v in samples.items():
            row[f"{k}_s"] = statistics.median(x[0] for x in v)
            row[f"{k}_peak_mib"] = max(x[1] for x in v)
        row["files"] = sorted(p.name for p in (Path(tmp) / f"{world}-{spec or 'default'}-0").iterdir())
        report.append(row)
        t = None  # free this size before the next is built
    if rank == 0:
        Path(out).write_text(json.dumps(report))
    if world > 1:
        dist.destroy_process_group()


def launch(world: int, sizes: list[str], reps: int, tmp: Path) -> list[dict]:
    """Run `_rank` in `world` processes (forkserver, as the gateway starts its ranks)."""
    from datetime import timedelta

    import torch.distributed as dist

    from fwemu.emulator.trainer.rank_group import _context

    ctx = _context()
    store = dist.TCPStore("127.0.0.1", 0, world_size=None, is_master=True, timeout=timedelta(seconds=120),
                          wait_for_workers=False)
    out = tmp / f"report-{world}.json"
    procs = [ctx.Process(target=_rank, args=(r, world, store.port, sizes, reps, str(tmp), str(out)))
             for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        if p.exitcode != 0:
            raise SystemExit(f"rank process exited with {p.exitcode}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=None, help="repetitions per operation (default 2, --quick 1)")
    p.add_argument("--larger", default=None, help=f"the larger size (default {LARGER!r}; --quick {LARGER_QUICK!r})")
    args = p.parse_args(argv)
    reps = args.reps or (1 if args.quick else 2)
    sizes = ["", args.larger or (LARGER_QUICK if args.quick else LARGER)]
    result = new_result("dcp_multirank", "DCP save/load at N ranks vs safetensors", args,
                        {"sizes": ["default", sizes[1]], "ranks": [1, 2], "reps": reps, "backend": "gloo (CPU)"})
    rows = []
    with tempfile.TemporaryDirectory(prefix="fwemu-bench-dcp-", dir=args.tmp_dir) as tmp:
        for world in (1, 2):
            rows += launch(world, sizes, reps, Path(tmp))
    for r in rows:
        mib = r["state_bytes"] / MiB
        r["save_mib_s"], r["safetensors_mib_s"] = mib / r["save_s"], mib / r["safetensors_s"]
        r["dcp_vs_safetensors"] = r["save_mib_s"] / r["safetensors_mib_s"]
    result["results"] = {"rows": rows}
    result["tables"].append(table(
        "DCP save_state / load_state per configuration (median; slowest rank; peak = largest rank's RSS rise)",
        ["size", "params", "N", "state MiB", "save ms", "load ms", "save MiB/s", "safetensors MiB/s",
         "DCP/safetensors", "save peak MiB/rank", "load peak MiB/rank", "data files"],
        [[r["size"], f"{r['params']:,}", r["ranks"], round(r["state_bytes"] / MiB, 1), round(r["save_s"] * 1000, 1),
          round(r["load_s"] * 1000, 1), round(r["save_mib_s"], 1), round(r["safetensors_mib_s"], 1),
          f"{r['dcp_vs_safetensors']:.2f}x", round(r["save_peak_mib"], 1), round(r["load_peak_mib"], 1),
          sum(f.endswith(".distcp") for f in r["files"])] for r in rows],
        "state = weights + Adam exp_avg + exp_avg_sq (float32); safetensors writes the same local tensors per rank"))
    two = [r for r in rows if r["ranks"] == 2]
    per_rank = all(sum(f.endswith(".distcp") for f in r["files"]) == 2 for r in two)
    result["targets"].append(target("one DCP data file per rank at N = 2", "__0_0.distcp and __1_0.distcp",
                                     "yes" if per_rank else "no", per_rank))
    larger = max(rows, key=lambda r: (r["state_bytes"], r["ranks"]))
    result["targets"].append(target(f"DCP / safetensors save throughput, larger size, N = {larger['ranks']}",
                                    "reported (no goal)", f"{larger['dcp_vs_safetensors']:.2f}x", None))
    result["notes"].append("N = 2 runs two gloo processes on the same CPUs, so on a machine with few cores the "
                           "ranks compete for them; the figures show DCP's coordination cost, not a speed-up.")
    emit(result, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
