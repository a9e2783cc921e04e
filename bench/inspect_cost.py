"""How much does classifying a checkpoint cost, as the weights grow from 1 MiB to 16 GiB?

Builds sparse Hugging Face checkpoints (config.json + model.safetensors, or an index and 4 GiB
shards above 4 GiB, the way HF shards) in a temp dir: the header is written and the data section
is a hole made with truncate, so even 16 GiB uses almost no disk. Each is classified a few times
with `inspect_checkpoint`; the table shows the median time and the bytes read. In the same run,
a baseline reads the same headers with the safetensors library (`safe_open` + keys + metadata per
shard, + json.load of config.json), and for sizes up to 256 MiB a full read of every file (what
hashing or loading the weights would cost). Ratios are inspect / baseline.

    python bench/inspect_cost.py [--json] [--reps 7] [--max-gib 16]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fwemu.emulator.inspect import inspect_checkpoint  # noqa: E402
from fwemu.emulator.inspect.examples import CONFIG  # noqa: E402
from fwemu.emulator.inspect.safetensors_header import encode_header  # noqa: E402

MiB, GiB = 1 << 20, 1 << 30
SIZES = [1 * MiB, 16 * MiB, 256 * MiB, 4 * GiB, 16 * GiB]
SHARD_MAX = 4 * GiB
LAYERS = 32                      # a LLaMA-like tensor list: 32 layers x 9 tensors + 3
FULL_READ_MAX = 256 * MiB


def tensor_names() -> list[str]:
    names = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        names += [p + f"self_attn.{x}_proj.weight" for x in "qkvo"]
        names += [p + f"mlp.{x}_proj.weight" for x in ("gate", "up", "down")]
        names += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
    return names


def build(root: Path, total: int) -> int:
    """A sparse HF checkpoint of about `total` bytes of BF16 weights; returns its data size."""
    root.mkdir()
    (root / "config.json").write_text(json.dumps(CONFIG))
    names = tensor_names()
    cols = 256
    rows = max(1, total // (len(names) * cols * 2))
    per = rows * cols * 2
    n_shards = max(1, -(-len(names) * per // SHARD_MAX))
    weight_map: dict[str, str] = {}
    for s in range(n_shards):
        shard = "model.safetensors" if n_shards == 1 else f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        mine = names[s::n_shards]
        tensors = {n: ("BF16", [rows, cols], i * per, (i + 1) * per) for i, n in enumerate(mine)}
        header = encode_header(tensors, {"format": "pt"})
        with open(root / shard, "wb") as f:
            f.write(header)
            f.truncate(len(header) + len(mine) * per)  # a hole: no data blocks written
        weight_map.update({n: shard for n in mine})
    if n_shards > 1:
        index = {"metadata": {"total_size": len(names) * per}, "weight_map": weight_map}
        (root / "model.safetensors.index.json").write_text(json.dumps(index))
    return len(names) * per


def median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def safe_open_baseline(root: Path) -> None:
    from safetensors import safe_open

    json.loads((root / "config.json").read_text())
    for shard in sorted(root.glob("*.safetensors")):
        with safe_open(str(shard), framework="numpy") as f:
            list(f.keys())
            f.metadata()


def full_read(root: Path) -> None:
    for p in sorted(root.iterdir()):
        with open(p, "rb") as f:
            while f.read(16 * MiB):
                pass


def human(n: int) -> str:
    return f"{n / GiB:g} GiB" if n >= GiB else f"{n / MiB:g} MiB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--reps", type=int, default=7, help="repetitions per measurement (median)")
    ap.add_argument("--max-gib", type=float, default=16, help="skip sizes above this many GiB")
    args = ap.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="fwemu-bench-") as tmp:
        free = shutil.disk_usage(tmp).free
        for size in SIZES:
            if size > args.max_gib * GiB:
                continue
            root = Path(tmp, f"ckpt-{size}")
            data = build(root, size)
            used = sum(p.stat().st_blocks * 512 for p in root.iterdir())
            if used > free // 2:  # the filesystem did not keep the file sparse: do not fill the disk
                shutil.rmtree(root)
                print(f"skipping {human(size)}: not sparse on this filesystem", file=sys.stderr)
                continue
            verdict = inspect_checkpoint(root)
            t_inspect = median_time(lambda: inspect_checkpoint(root), args.reps)
            t_safe = median_time(lambda: safe_open_baseline(root), args.reps)
            t_full = median_time(lambda: full_read(root), 1) if size <= FULL_READ_MAX else None
            rows.append({
                "size": size, "data_bytes": data, "files": len(list(root.iterdir())),
                "disk_used": used, "kind": verdict.kind.value if verdict.kind else None,
                "inspect_s": t_inspect, "bytes_read": verdict.bytes_read,
                "safe_open_s": t_safe, "ratio_vs_safe_open": t_inspect / t_safe,
                "full_read_s": t_full, "ratio_vs_full_read": t_inspect / t_full if t_full else None,
            })
            shutil.rmtree(root)

    if args.json:
        print(json.dumps({"reps": args.reps, "results": rows}, indent=2))
        return 0
    print(f"inspect_checkpoint on sparse HF checkpoints ({3 + 9 * LAYERS} BF16 tensors; "
          f"median of {args.reps}; baselines measured in the same run)")
    head = (f"{'size':>9} {'files':>5} {'kind':<15} {'inspect':>10} {'bytes read':>10} "
            f"{'safe_open':>10} {'ratio':>6} {'full read':>10} {'ratio':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        full = f"{r['full_read_s'] * 1e3:8.2f}ms" if r["full_read_s"] else f"{'-':>10}"
        ratio_full = f"{r['ratio_vs_full_read']:8.4f}" if r["ratio_vs_full_read"] else f"{'-':>8}"
        print(f"{human(r['size']):>9} {r['files']:>5} {r['kind'] or 'REJECTED':<15} "
              f"{r['inspect_s'] * 1e3:8.2f}ms {r['bytes_read']:>10} {r['safe_open_s'] * 1e3:8.2f}ms "
              f"{r['ratio_vs_safe_open']:6.2f} {full} {ratio_full}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
