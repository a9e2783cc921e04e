"""R9 resharded-resume: a DCP checkpoint saved by N trainer ranks resumes at M ranks.

The real service trains with a multi-GPU trainer, so a checkpoint a user resumes may have been
written by another number of ranks than the trainer that loads it. The emulator's rank count is
a server setting (`fwemu serve --trainer-ranks N`), so this property needs a target it can
restart at another count (`RANKS`: the in-process emulator). One example is a chain of
segments, each at its own rank count: train, `save_state` (with optimizer), restart at the
next count, reconnect, `load_state` with the optimizer, train on. The same program is then run
entirely at one rank, resuming at the same points; after every step both must give the same
forward-pass logprobs on the probe sequence within `RTOL` (float32: ranks add gradient shards
in another order than one process does, so the match is to rounding, not bitwise; measured
worst differences are ~1e-7 relative). Weights that lost their optimizer state, were read
from the wrong shard or were loaded as a fresh model differ by orders of magnitude more.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from fwemu.contracts import invariants as inv
from fwemu.contracts.data import batch

RTOL = 1e-5
ATOL = 1e-6          # logprobs near zero: an absolute floor for the relative tolerance
STEPS_PER_SEGMENT = 2
BATCH = 2


@dataclass
class Segment:
    ranks: int
    probes: list[tuple]


def run_chain(m, ranks: list[int], lora: bool, data_seed: str) -> list[Segment]:
    """Train `ranks` segments on one job of `m.target`, restarting it at each segment's rank count.

    Every segment after the first starts from the previous segment's DCP save, loaded with its
    optimizer by a fresh training client (what a recipe does after its trainer was replaced)."""
    lora_rank = 4 if lora else 0
    out: list[Segment] = []
    handle = job_id = saved = None
    consumed = 0
    for i, n in enumerate(ranks):
        m.target.restart(trainer_ranks=n)
        m.obs.reconnect()
        m.driver.reconnect()
        if job_id is None:
            job_id = m.driver.create_job(lora_rank, m.world.fresh("r9"))
        handle = m.driver.connect(job_id, lora_rank)
        try:
            if saved is not None:
                handle.load_state(saved, optimizer=True)
            probes = []
            for _ in range(STEPS_PER_SEGMENT):
                handle.train_step(batch(data_seed, consumed, BATCH))
                consumed += BATCH
                probes.append(handle.probe())
            out.append(Segment(n, probes))
            if i < len(ranks) - 1:
                saved = handle.save_state(f"r9-{i}-step-{consumed}")
        finally:
            handle.close()
    return out


def check_same_training(got: list[Segment], want: list[Segment], ranks: list[int]) -> None:
    """R9: each step after a resharded resume matches the one-rank resume of the same program."""
    for i, (g, w) in enumerate(zip(got, want)):
        for step, (a, b) in enumerate(zip(g.probes, w.probes), start=1):
            worst = max((abs(x - y) - RTOL * abs(y) for x, y in zip(a, b)), default=0.0)
            if len(a) != len(b) or worst > ATOL:
                where = "before any resume" if i == 0 else f"after resuming a {ranks[i - 1]}-rank save at {g.ranks} ranks"
                inv.R9.fail(
                    f"segment {i + 1} of ranks {ranks}, step {step} ({where}): the probe logprobs differ from the "
                    f"same program at one rank by up to {worst + ATOL:.3g} beyond rtol {RTOL}; the resharded load "
                    "did not restore the weights and optimizer state that were saved")
    inv.tally().exercised(inv.R9.id)


def resharded_resume(ctx):
    """The property: random rank chains, full and LoRA. Every chain changes the rank count at each
    resume, and has a resume *into* several ranks and one *from* a several-rank save, so every
    example crosses a real reshard in both roles (2 -> 1, 1 -> 2, 2 -> 3, 3 -> 2 ...)."""
    from fwemu.contracts.properties import machine_of

    def crosses_both_ways(r: list[int]) -> bool:
        moves = list(zip(r, r[1:]))
        return all(a != b for a, b in moves) and any(b > 1 for _, b in moves) and any(a > 1 for a, _ in moves)

    chains = st.lists(st.sampled_from([1, 2, 3]), min_size=2, max_size=3).filter(crosses_both_ways)

    @given(ranks=chains, lora=st.booleans())
    def a_save_at_n_ranks_resumes_at_m(ranks, lora):
        with machine_of(ctx) as m:
            seed = m.world.fresh("r9-data")
            try:
                got = run_chain(m, ranks, lora, seed)
                want = run_chain(m, [1] * len(ranks), lora, seed)
            finally:
                m.target.restart(trainer_ranks=1)
            check_same_training(got, want, ranks)
    return a_save_at_n_ranks_resumes_at_m
