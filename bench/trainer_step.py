"""Wall-clock costs of the default stand-in trainer (CPU unless --device says otherwise).

Measures, as the median of --reps repetitions after one warm-up:
  step         forward_backward + optim_step on 8 sequences x 128 tokens (cross_entropy)
  save_state   DCP save (weights + Adam state)
  load_state   DCP load with the optimizer
  save_base    sampler export, HF full weights
  save_delta   sampler export, ARC_V2 delta against the base

    python bench/trainer_step.py            # table
    python bench/trainer_step.py --json     # one JSON object
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fwemu.client.tokenizer import BOS_ID, datum_from_tokens  # noqa: E402
from fwemu.emulator.trainer.model_config import ModelSize  # noqa: E402

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
ADAM = {"learning_rate": 1e-4, "beta1": 0.9, "beta2": 0.95, "eps": 1e-12, "weight_decay": 0.0, "grad_clip_norm": 1.0}


def batch(n: int, length: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    # length + 1 tokens give `length` input positions after the next-token shift.
    return [datum_from_tokens([BOS_ID] + [rng.randrange(256) for _ in range(length)]) for _ in range(n)]


def timed(fn, reps: int) -> float:
    fn()  # warm-up: first-call allocations and lazy imports are not what we measure
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def run(reps: int, device: str, batch_size: int, seq_len: int) -> dict:
    from fwemu.emulator.trainer.model_session import TrainerModel

    size = ModelSize()
    m = TrainerModel(BASE_MODEL, device=device, size=size)
    data = batch(batch_size, seq_len)
    import torch

    out: dict = {"device": str(m.device), "params": size.num_parameters(), "batch": f"{batch_size}x{seq_len}",
                 "reps": reps, "threads": torch.get_num_threads()}

    def step():
        m.forward_backward(data, "cross_entropy")
        m.optim_step(ADAM)

    out["step_s"] = timed(step, reps)
    with tempfile.TemporaryDirectory(prefix="fwemu-bench-") as tmp:
        root = Path(tmp)
        n = iter(range(10_000))
        out["save_state_s"] = timed(lambda: m.save_state(root / f"state-{next(n)}"), reps)
        other = TrainerModel(BASE_MODEL, device=device, size=size)
        out["load_state_s"] = timed(lambda: other.load_state(root / "state-0", optimizer=True), reps)
        out["save_base_s"] = timed(lambda: m.save_sampler(root / f"base-{next(n)}", "base"), reps)
        base = root / "base-ref"
        m.save_sampler(base, "base")
        step()  # the delta's target differs from its base, as in a real weight-sync chain
        out["save_delta_s"] = timed(
            lambda: m.save_sampler(root / f"delta-{next(n)}", "delta", base_dir=base, base_identity="base-ref"), reps)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    res = run(args.reps, args.device, args.batch, args.seq_len)
    if args.json:
        print(json.dumps(res, sort_keys=True))
        return 0
    print(f"fwemu trainer, default stand-in ({res['params']:,} params) on {res['device']}, "
          f"{res['threads']} threads, batch {res['batch']}, median of {res['reps']}")
    print(f"{'operation':<34}{'ms':>10}")
    rows = [("forward_backward + optim_step", "step_s"), ("save_state (DCP)", "save_state_s"),
            ("load_state (DCP, with optimizer)", "load_state_s"), ("save_sampler base (HF)", "save_base_s"),
            ("save_sampler delta (ARC_V2)", "save_delta_s")]
    for label, key in rows:
        print(f"{label:<34}{res[key] * 1000:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
