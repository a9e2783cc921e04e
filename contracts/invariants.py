"""The invariants of docs/invariants.md as named checks, each raising `InvariantViolation(id, message)`.

Checks take plain observed data (rows as listed, what the inspector says of the bytes, what the
harness's model expects) so they can be unit-tested without a server, and so a failure message
says exactly which row broke which rule. Nothing here imports torch, hypothesis or httpx: the
pytest plugin imports this module's registry in every test run of the repository.

A check never passes by not looking: every call records, in the active `Tally`, that the
invariant was exercised, and the report shows how many examples exercised each one.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Mapping, NoReturn, Sequence

KINDS = ("TRAINING", "TRAINING_LORA", "INFERENCE_BASE", "INFERENCE_LORA", "INFERENCE_ARC_V2")
PROMOTABLE = frozenset({"INFERENCE_BASE", "INFERENCE_LORA"})
RESUMABLE = frozenset({"TRAINING", "TRAINING_LORA"})
MODEL_KIND = {"INFERENCE_BASE": "HF_BASE_MODEL", "INFERENCE_LORA": "HF_PEFT_ADDON"}
MODEL_ID_RE = re.compile(r"[a-z0-9-]{1,63}")  # use fullmatch


class InvariantViolation(AssertionError):
    """A named invariant did not hold. `id` is the short id (K1...F2), `message` says where and why.

    Raising `InvariantViolation(id, msg)` raises the subclass for that id (`K2Violation`, ...):
    Hypothesis tells failures apart by exception type and raise site, and every violation is raised
    from the same line, so without distinct types it would shrink a K2 failure into, say, an L1 one.
    """

    _by_id: dict[str, type] = {}

    def __new__(cls, inv_id: str, message: str = ""):
        if cls is InvariantViolation:
            cls = cls._by_id.get(inv_id) or cls._by_id.setdefault(
                inv_id, type(f"{inv_id}Violation", (InvariantViolation,), {"__module__": __name__}))
        return super().__new__(cls, inv_id, message)

    def __init__(self, inv_id: str, message: str = ""):
        self.id = inv_id
        self.message = message
        inv = REGISTRY.get(inv_id)
        title = f" {inv.title}" if inv else ""
        super().__init__(f"[{inv_id}{title}] {message}")

    def __reduce__(self):
        return (InvariantViolation, (self.id, self.message))


@dataclass(frozen=True)
class Invariant:
    id: str
    title: str
    statement: str
    side: str  # "server", "client" or "faults"

    def fail(self, message: str) -> NoReturn:
        tally().exercised(self.id)
        raise InvariantViolation(self.id, message)

    def held(self) -> None:
        """Record that this invariant was checked and held (for a check expressed as control flow)."""
        tally().exercised(self.id)

    def require(self, condition: object, message: str) -> None:
        if not condition:
            self.fail(message)
        tally().exercised(self.id)


REGISTRY: dict[str, Invariant] = {}


def _inv(inv_id: str, title: str, side: str, statement: str) -> Invariant:
    inv = Invariant(inv_id, title, " ".join(statement.split()), side)
    REGISTRY[inv_id] = inv
    return inv


K1 = _inv("K1", "kind-from-bytes", "server", """every listed row's checkpointType equals what the
    inspector says of the stored bytes; the writer's claim is never trusted""")
K2 = _inv("K2", "promotable-iff", "server", """promotable is true exactly for INFERENCE_BASE and
    INFERENCE_LORA""")
K3 = _inv("K3", "promote-accepts-iff-promotable", "server", """promote succeeds on a promotable row
    and fails with a 4xx in the service's error shape (naming the kind) on any other row; nothing
    changes on failure""")
K4 = _inv("K4", "chain", "server", """full-parameter weight-sync chain: the first sampler save is
    promotable, later ones are ARC_V2 and not; LoRA: every sampler save is INFERENCE_LORA and
    promotable, whatever checkpoint_type was asked for""")
K5 = _inv("K5", "promoted-model", "server", """a promoted model is READY, HF_BASE_MODEL (full) or
    HF_PEFT_ADDON (LoRA, with peftDetails.baseModel and r), and its files equal the checkpoint's""")
K6 = _inv("K6", "model-ids", "server", """an invalid or existing output model id is refused before
    anything is written; two concurrent promotes to one id: exactly one wins""")
K7 = _inv("K7", "promote-preconditions", "server", """every precondition of promotion (base model equals
    the job's, row promotable, checkpoint exists, model id valid and free) is enforced on every way a
    promotion can be asked for: synchronous, long-running operation, and through the client""")
K8 = _inv("K8", "rejudged", "server", """a row whose stored bytes change out-of-band is judged again: bytes of
    another kind are listed and promoted as that kind; bytes that are no longer a checkpoint leave the
    listing and promote answers NOT_FOUND""")
L1 = _inv("L1", "oldest-first", "server", """rows come oldest createTime first; pagination returns
    every row exactly once""")
L2 = _inv("L2", "durable", "server", """a row, once listed, stays listed across restarts (until
    its job's retention ends); a failed save never shows a row""")
L3 = _inv("L3", "deleted-jobs", "server", """a deleted job's checkpoints stay listable and
    promotable for the retention window, then answer NOT_FOUND""")
L4 = _inv("L4", "replace", "server", """a save under a name the job already has replaces that row: it
    is listed once, with a later createTime, its kind judged from the new bytes; a model promoted
    from the old bytes keeps its files""")
L5 = _inv("L5", "inside-retention", "server", """inside the retention window (checked part-way and just
    before its end, not only right after the delete) every row of a deleted job is still listed and a
    promotable one still promotes""")
R1 = _inv("R1", "newest-resumable", "client", """automatic resume loads the newest resumable row
    by parsed time, restores weights and optimizer state, the step, and data_consumed""")
R2 = _inv("R2", "equivalence", "client", """training N steps straight gives the same weights as
    training k, being interrupted after a resumable save, resuming and finishing""")
R3 = _inv("R3", "interval", "client", """dcp_save_interval n > 0 gives a resumable row every n
    steps; 0 gives none and a rerun starts from step 0""")
R4 = _inv("R4", "cross-job-init", "client", """init_from_checkpoint="job:name" loads those weights
    at step 0 with data_consumed 0; refused together with an adapter warm start""")
R5 = _inv("R5", "final", "client", """a finished run writes a final resumable + promotable save,
    promotes the newest promotable row, and a rerun does not skip promotion silently""")
R6 = _inv("R6", "dataloader.json", "client", """keyed by the listed name (renamed saves included),
    capped at 20 entries, a corrupt file starts fresh with a warning""")
R7 = _inv("R7", "no-promotable", "client", """promote_latest with no promotable row fails with a
    clear message and promotes nothing""")
R8 = _inv("R8", "load-what-is-named", "client", """loading a checkpoint by name restores exactly that
    row's weights, also when another attempt of the same step (a save retried under a free name,
    step-N-1) holds different weights""")
F1 = _inv("F1", "faults", "faults", """a fault in any single call leaves the server state valid, and
    the client retries to success or fails with a clear error""")
F2 = _inv("F2", "catches-broken-target", "faults", """against an emulator with one rule broken on
    purpose, the suite fails and names the invariant (tests/contracts/test_teeth.py)""")
R9 = _inv("R9", "resharded-resume", "server", """a DCP save written by N trainer ranks, loaded with its
    optimizer by a trainer of M ranks, trains on like a one-rank resume of the same program
    (probe logprobs within rtol 1e-5 after every step)""")
K9 = _inv("K9", "save-and-hotload", "server", """WeightSyncer.save_and_hotload's chain: the first save is
    promotable for LoRA and full runs, later saves for LoRA only; after each hot load the deployment
    names that snapshot current and serves exactly its weights; a delta on a snapshot it does not
    serve is a failed load that keeps the previous weights""")


# ------------------------------------------------------------------------------ tally
class Tally:
    """How often each invariant was exercised, per example (test case) of a run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.example = 0
        self.examples_by_id: dict[str, set[int]] = defaultdict(set)
        self.checks_by_id: dict[str, int] = defaultdict(int)
        self.notes: dict[str, set[str]] = defaultdict(set)
        self.policies: dict[str, str] = {}   # non-default policies the driver's checkpoint logic declared

    def new_example(self) -> None:
        with self._lock:
            self.example += 1

    def exercised(self, inv_id: str) -> None:
        with self._lock:
            self.examples_by_id[inv_id].add(self.example)
            self.checks_by_id[inv_id] += 1

    def note(self, inv_id: str, text: str) -> None:
        with self._lock:
            self.notes[inv_id].add(text)

    def policy(self, name: str, value: str, default: str) -> None:
        if value != default:
            with self._lock:
                self.policies[name] = value

    def examples(self, inv_id: str) -> int:
        return len(self.examples_by_id.get(inv_id, ()))


_TALLY = Tally()


def tally() -> Tally:
    return _TALLY


def reset_tally() -> Tally:
    global _TALLY
    _TALLY = Tally()
    return _TALLY


# ------------------------------------------------------------------------------ observed data
@dataclass(frozen=True)
class ListedRow:
    """One row as the control plane listed it."""

    name: str                  # short name (last segment)
    full_name: str
    checkpoint_type: str       # as sent, e.g. CHECKPOINT_TYPE_INFERENCE_BASE
    promotable: object         # as sent (must be a bool)
    create_time: str | None
    parsed_time: datetime | None

    @property
    def kind(self) -> str:
        return bare_kind(self.checkpoint_type)

    @classmethod
    def from_wire(cls, body: Mapping) -> "ListedRow":
        from fwemu.client.timeparse import parse_rfc3339_or_none

        full = str(body.get("name") or "")
        ctime = body.get("createTime")
        return cls(name=full.rsplit("/", 1)[-1], full_name=full,
                   checkpoint_type=str(body.get("checkpointType") or ""),
                   promotable=body.get("promotable"), create_time=ctime if isinstance(ctime, str) else None,
                   parsed_time=parse_rfc3339_or_none(ctime))


def bare_kind(value: str | None) -> str:
    return str(value or "").upper().removeprefix("CHECKPOINT_TYPE_")


def mentions_kind(message: str, kind: str) -> bool:
    """True when `message` names `kind` as a whole word (TRAINING is not found in TRAINING_LORA)."""
    pattern = rf"(?:^|[^A-Z_])(?:CHECKPOINT_TYPE_)?{re.escape(kind)}(?![A-Z_])"
    return re.search(pattern, message or "") is not None


# ------------------------------------------------------------------------------ server-side checks
def check_k1(job_id: str, rows: Sequence[ListedRow], inspected: Mapping[str, str | None] | None,
             expected: Mapping[str, str] | None = None) -> None:
    """Each listed kind equals the inspector's verdict on the bytes (when the bytes are readable),
    else the kind the harness knows it wrote. Every listed kind must be one of the five."""
    for row in rows:
        K1.require(row.kind in KINDS, f"job {job_id}: row {row.name} is listed with unknown type "
                                      f"{row.checkpoint_type!r}")
        K1.require(row.checkpoint_type.startswith("CHECKPOINT_TYPE_"),
                   f"job {job_id}: row {row.name}: the wire uses the prefixed spelling, got {row.checkpoint_type!r}")
        if inspected is not None:
            truth = inspected.get(row.name, "<no directory>")
            K1.require(truth == row.kind, f"job {job_id}: row {row.name} is listed as {row.kind} but its stored "
                                          f"bytes are {truth or 'rejected by the inspector'}")
        elif expected is not None and row.name in expected:
            K1.require(expected[row.name] == row.kind, f"job {job_id}: row {row.name} is listed as {row.kind} "
                                                       f"but the bytes written there are {expected[row.name]}")


def check_k2(job_id: str, rows: Sequence[ListedRow]) -> None:
    for row in rows:
        K2.require(isinstance(row.promotable, bool),
                   f"job {job_id}: row {row.name} has promotable={row.promotable!r}, not a bool")
        should = row.kind in PROMOTABLE
        K2.require(row.promotable is should, f"job {job_id}: row {row.name} is {row.kind} but listed "
                                             f"promotable={row.promotable} (must be {should})")


def check_k4(job_id: str, rows: Sequence[ListedRow], expected_sampler: Mapping[str, tuple[str, str]]) -> None:
    """`expected_sampler`: row name -> (expected kind, how it was saved) for sampler saves."""
    listed = {r.name: r for r in rows}
    for name, (kind, how) in expected_sampler.items():
        row = listed.get(name)
        if row is None:
            continue  # absence is L2's business
        K4.require(row.kind == kind, f"job {job_id}: sampler save {name} ({how}) is listed as {row.kind}, "
                                     f"expected {kind}")


def check_l1_order(job_id: str, rows: Sequence[ListedRow]) -> None:
    for row in rows:
        L1.require(row.parsed_time is not None,
                   f"job {job_id}: row {row.name} has no parseable createTime ({row.create_time!r})")
    for a, b in zip(rows, rows[1:]):
        L1.require(a.parsed_time <= b.parsed_time,  # type: ignore[operator]
                   f"job {job_id}: row {b.name} ({b.create_time}) is listed after {a.name} ({a.create_time}), "
                   "which is newer: rows must come oldest createTime first")


def check_l1_pages(job_id: str, full: Sequence[str], pages: Sequence[Sequence[str]], page_size: int) -> None:
    flat = [n for page in pages for n in page]
    dupes = sorted({n for n in flat if flat.count(n) > 1})
    L1.require(not dupes, f"job {job_id}: pageSize={page_size} returned {dupes} more than once")
    for page in pages:
        L1.require(len(page) <= page_size, f"job {job_id}: a page of pageSize={page_size} held {len(page)} rows")
    L1.require(list(flat) == list(full), f"job {job_id}: pageSize={page_size} pages give {list(flat)}, "
                                         f"the full listing gives {list(full)}")


def check_l2(job_id: str, rows: Sequence[ListedRow], must_list: Mapping[str, str | None],
             may_list: Iterable[str], *, listing_may_lag: bool = False) -> None:
    """`must_list`: row -> createTime first seen (None: not listed yet but its save succeeded);
    `may_list`: rows whose save outcome is uncertain (a fault hit it). Anything else is a row that
    a failed or never-made save left behind. With `listing_may_lag` (a target whose new rows appear
    after a delay, like the real service), a saved row only has to stay once it has been listed."""
    listed = {r.name: r for r in rows}
    for name, first_time in must_list.items():
        if first_time is None and listing_may_lag and name not in listed:
            continue
        L2.require(name in listed, f"job {job_id}: row {name} was saved/listed before and is gone now")
        if first_time is not None:
            L2.require(listed[name].create_time == first_time,
                       f"job {job_id}: row {name} changed createTime from {first_time} to {listed[name].create_time}")
    allowed = set(must_list) | set(may_list)
    extra = sorted(set(listed) - allowed)
    L2.require(not extra, f"job {job_id}: rows {extra} are listed but no save that succeeded made them")


def check_l4_newer(job_id: str, row: ListedRow, replaced_time: str) -> None:
    """The row that replaced another of its name is newer than the one it replaced."""
    if not replaced_time:
        return                                   # the replaced row was never listed: nothing to compare
    from fwemu.client.timeparse import parse_rfc3339_or_none

    old = parse_rfc3339_or_none(replaced_time)
    L4.require(row.parsed_time is not None and old is not None and row.parsed_time > old,
               f"job {job_id}: row {row.name} was saved again, but its createTime {row.create_time} is not "
               f"later than the replaced row's {replaced_time}")


def check_l3_listing(job_id: str, status: int, within_retention: bool) -> None:
    if within_retention:
        L3.require(status == 200, f"deleted job {job_id}: listing answered HTTP {status} inside the retention window")
    else:
        L3.require(status == 404, f"deleted job {job_id}: listing answered HTTP {status} after the retention "
                                  "window; expected 404 NOT_FOUND")


def check_error_envelope(inv: Invariant, what: str, status: int, body: object) -> None:
    """4xx with `{"error": {"code": int, "status": str, "message": str}}`."""
    inv.require(400 <= status < 500, f"{what}: answered HTTP {status}, expected a 4xx")
    err = body.get("error") if isinstance(body, dict) else None
    inv.require(isinstance(err, dict) and isinstance(err.get("code"), int) and isinstance(err.get("status"), str)
                and isinstance(err.get("message"), str) and err.get("message"),
                f"{what}: error body is not the service envelope {{error: {{code, status, message}}}}: "
                f"{str(body)[:200]}")


def check_promote_refused(row: str, kind: str, status: int, body: object) -> None:
    check_error_envelope(K3, f"promote of {row} ({kind})", status, body)
    message = body["error"]["message"]  # type: ignore[index]
    K3.require(mentions_kind(message, kind), f"promote of {row} ({kind}) was refused without naming the kind: "
                                             f"{message!r}")


def check_promoted_model(model: Mapping, row: str, kind: str, base_model: str, lora_rank: int) -> None:
    K5.require(model.get("state") == "READY", f"model promoted from {row} is {model.get('state')!r}, not READY")
    want = MODEL_KIND.get(kind, "?")
    K5.require(model.get("kind") == want, f"model promoted from {row} ({kind}) has kind {model.get('kind')!r}, "
                                          f"expected {want}")
    if kind == "INFERENCE_LORA":
        peft = model.get("peftDetails") or {}
        K5.require(peft.get("baseModel") == base_model,
                   f"model promoted from {row}: peftDetails.baseModel {peft.get('baseModel')!r} != {base_model!r}")
        K5.require(peft.get("r") == lora_rank, f"model promoted from {row}: peftDetails.r {peft.get('r')!r} "
                                                f"!= the job's LoRA rank {lora_rank}")


def check_same_files(inv: Invariant, what: str, left: Mapping[str, bytes], right: Mapping[str, bytes]) -> None:
    inv.require(sorted(left) == sorted(right), f"{what}: files {sorted(left)} != {sorted(right)}")
    differ = sorted(n for n in left if left[n] != right[n])
    inv.require(not differ, f"{what}: file contents differ: {differ}")


# ------------------------------------------------------------------------------ client-side checks
@dataclass
class ResumeExpectation:
    """What automatic resume must pick: `name` None means a fresh start."""

    name: str | None
    step: int = 0
    data_consumed: int = 0
    data_restored: bool = True
    probe: tuple | None = None
    why: str = ""
    candidates: list[str] = field(default_factory=list)


def check_resume(job_id: str, got, want: ResumeExpectation) -> None:
    """`got` is the client's ResumeInfo (or None for a fresh start)."""
    got_name = got.checkpoint_name if got is not None else None
    R1.require(got_name == want.name, f"job {job_id}: resume picked {got_name or 'a fresh start'}, expected "
                                      f"{want.name or 'a fresh start'} ({want.why}; resumable rows oldest "
                                      f"first: {want.candidates})")
    if want.name is None:
        return
    R1.require(got.step == want.step, f"job {job_id}: resume from {want.name} restored step {got.step}, "
                                      f"expected {want.step}")
    if want.data_restored:
        R1.require(got.data_consumed == want.data_consumed and got.data_consumed_restored,
                   f"job {job_id}: resume from {want.name} restored data_consumed={got.data_consumed} "
                   f"(restored={got.data_consumed_restored}), dataloader.json says {want.data_consumed}")


def check_probe(inv: Invariant, what: str, got: tuple, want: tuple | None) -> None:
    """Same forward-pass logprobs on a fixed probe sequence == same weights (bitwise on CPU)."""
    if want is None:
        return
    if got != want:
        worst = max((abs(a - b) for a, b in zip(got, want)), default=float("inf"))
        inv.fail(f"{what}: the model's logprobs on the probe sequence differ from the reference "
                 f"(max |diff| {worst:.3g}), so the weights are not the ones expected")
    tally().exercised(inv.id)
