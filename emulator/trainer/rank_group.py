"""``MultiRankTrainer``: the gateway's ``TrainerModel`` facade over N rank processes (docs/multirank.md).

The gateway drives one trainer object per model from one worker thread. With N > 1 ranks that
object is this facade: it starts N processes (``multiprocessing`` "forkserver", else
"spawn": never a fork of the threaded server), which meet through a ``TCPStore`` the facade itself hosts on a free loopback
port (so there is no port race), join a torch.distributed group (gloo on CPU, NCCL on CUDA)
and each build a ``ShardedTrainerModel`` (sharded.py). Every call is sent, unchanged, to every
rank over its own pipe (a per-rank pipe instead of a broadcast from rank 0: the same effect,
without pickling requests through the collective backend), and every rank runs it
collectively. Rank 0's reply is the answer; a ``TrainerUserError`` raised on rank 0 is raised
here, and any other failure of any rank (an exception, a dead process) breaks the group: the
ranks are stopped and every later call fails with the first cause, as a crashed trainer would.

Public surface = what the gateway uses of ``TrainerModel``: forward_backward, forward,
optim_step, save_state, load_state, save_sampler, state_digest, info, step, grad_epoch,
is_lora, model_id, plus ``close()``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import traceback
import weakref
from datetime import timedelta
from pathlib import Path
from typing import Any

from .errors import TrainerUserError

log = logging.getLogger("fwemu.trainer.ranks")
ENV_RANKS = "FWEMU_TRAINER_RANKS"
STARTUP_TIMEOUT_S = 300.0
COLLECTIVE_TIMEOUT_S = 600.0  # a rank stuck in a collective this long fails instead of hanging
POLL_S = 0.5


class RankGroupFailed(RuntimeError):
    """A rank died or failed outside the user-error path; the group is stopped."""


def ranks_from_env(default: int = 1) -> int:
    """``FWEMU_TRAINER_RANKS`` as a positive int (default 1 = the one-process trainer)."""
    raw = os.environ.get(ENV_RANKS, "").strip()
    if not raw:
        return default
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"{ENV_RANKS}={raw!r} is not a whole number of ranks") from None
    if n < 1:
        raise ValueError(f"{ENV_RANKS}={n} must be at least 1")
    return n


def _rank_main(rank: int, world: int, port: int, conn, kwargs: dict) -> None:
    """One rank: join the group, build the sharded trainer, then serve calls until "stop"."""
    import torch
    import torch.distributed as dist

    from .sharded import ShardedTrainerModel

    want = kwargs.get("device")
    cuda = torch.cuda.is_available() if want is None else str(want).startswith("cuda")
    try:
        if cuda:
            if not torch.cuda.is_available():
                raise TrainerUserError(f"device {want!r} requested but CUDA is not available")
            if torch.cuda.device_count() < world:
                raise TrainerUserError(f"{world} ranks need {world} CUDA devices, found {torch.cuda.device_count()}")
            torch.cuda.set_device(rank)
            kwargs = {**kwargs, "device": f"cuda:{rank}"}
        elif kwargs.get("device") is None:
            kwargs = {**kwargs, "device": "cpu"}
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        store = dist.TCPStore("127.0.0.1", port, world_size=None, is_master=False,
                              timeout=timedelta(seconds=STARTUP_TIMEOUT_S))
        dist.init_process_group("nccl" if cuda else "gloo", store=store, rank=rank, world_size=world,
                                timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))
        trainer = ShardedTrainerModel(**kwargs)
    except BaseException as exc:  # noqa: BLE001 - reported to the facade, then this rank ends
        conn.send(_failure(exc))
        return
    conn.send(("ok", None, _counters(trainer)))
    try:
        while True:
            try:
                msg = conn.recv()
            except EOFError:  # the facade is gone
                break
            name, args, kw = msg
            if name == "stop":
                break
            try:
                value = getattr(trainer, name)(*args, **kw)
            except BaseException as exc:  # noqa: BLE001
                conn.send(_failure(exc))
                continue
            conn.send(("ok", value if rank == 0 else None, _counters(trainer)))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _context():
    """"forkserver" where there is one: a clean single-threaded server that imported torch and
    the trainer once, so a later group starts in a fork, not a fresh interpreter; else "spawn".
    Never "fork": the gateway's process has threads."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["fwemu.emulator.trainer.sharded"])
        return ctx
    return mp.get_context("spawn")


def _counters(trainer) -> dict:
    return {"step": trainer.step, "grad_epoch": trainer.grad_epoch}


def _failure(exc: BaseException) -> tuple:
    if isinstance(exc, TrainerUserError):
        return ("user", str(exc), None)
    return ("error", "".join(traceback.format_exception_only(type(exc), exc)).strip(), traceback.format_exc())


class MultiRankTrainer:
    """See the module docstring. Constructor arguments are ``TrainerModel``'s plus ``ranks``
    (>= 2) and ``precision`` ("fp32", or "bf16" on CUDA)."""

    def __init__(self, base_model: str, lora_rank: int = 0, lora_alpha: int = 32, seed: int = 0,
                 device: str | None = None, size=None, ranks: int = 2, precision: str = "fp32") -> None:
        import torch.distributed as dist

        if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 2:
            raise TrainerUserError(f"ranks must be an int >= 2 for a multi-rank trainer, got {ranks!r}")
        from .model_config import resolve_size
        from .model_session import check_settings

        check_settings(base_model, lora_rank, lora_alpha)  # before any process starts
        try:  # resolved here: the ranks fork from a server whose environment may be older than ours
            size = resolve_size(size, base_model)
        except ValueError as exc:
            raise TrainerUserError(str(exc)) from None
        if device is None:
            device = os.environ.get("FWEMU_DEVICE") or None
        self.base_model, self.lora_rank, self.lora_alpha, self.seed = base_model, lora_rank, lora_alpha, seed
        self.ranks = ranks
        self.model_id: str | None = None
        self._lock = threading.RLock()
        self._broken: str | None = None
        self._counters = {"step": 0, "grad_epoch": 0}
        self._store = dist.TCPStore("127.0.0.1", 0, world_size=None, is_master=True,
                                    timeout=timedelta(seconds=STARTUP_TIMEOUT_S), wait_for_workers=False)
        ctx = _context()
        kwargs = dict(base_model=base_model, lora_rank=lora_rank, lora_alpha=lora_alpha, seed=seed,
                      device=device, size=size, precision=precision)
        self._conns, self._procs = [], []
        for r in range(ranks):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_rank_main, args=(r, ranks, self._store.port, child, kwargs),
                            name=f"fwemu-rank-{r}", daemon=True)
            p.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(p)
        self._finalizer = weakref.finalize(self, _shutdown, self._conns, self._procs)
        self._collect("start")

    # ------------------------------------------------------------------ plumbing

    def _collect(self, what: str) -> Any:
        replies = [self._reply(r, what) for r in range(self.ranks)]
        broken = next((r for r in replies if r[0] == "error"), None)
        for r in replies:
            if r[0] == "error":
                log.warning("rank failure in %s:\n%s", what, r[2])
        if broken is not None or any(r[0] == "user" for r in replies[1:]) and replies[0][0] != "user":
            cause = broken[1] if broken else "ranks disagreed on a user error"
            self._break(f"{what}: {cause}")
        status, value, counters = replies[0]
        if status == "user":
            if what == "start":  # every rank refused the settings and has ended
                self._broken = f"start: {value}"
                self._finalizer()
            raise TrainerUserError(value)
        self._counters = counters
        return value

    def _reply(self, rank: int, what: str) -> tuple:
        conn, proc = self._conns[rank], self._procs[rank]
        while True:
            try:
                if conn.poll(POLL_S):
                    return conn.recv()
            except (EOFError, OSError):
                pass
            else:
                if proc.is_alive():
                    continue
                if conn.poll(0):
                    continue
            self._break(f"{what}: rank {rank} exited (code {proc.exitcode})")

    def _break(self, cause: str) -> None:
        self._broken = self._broken or cause
        self._finalizer()
        raise RankGroupFailed(f"the {self.ranks}-rank trainer failed and was stopped ({self._broken})")

    def _call(self, name: str, *args, **kwargs) -> Any:
        with self._lock:
            if self._broken is not None:
                raise RankGroupFailed(f"the {self.ranks}-rank trainer failed earlier and was stopped ({self._broken})")
            for conn in self._conns:
                try:
                    conn.send((name, args, kwargs))
                except (OSError, ValueError):
                    self._break(f"{name}: a rank's pipe is closed")
            return self._collect(name)

    def close(self) -> None:
        """Stop the rank processes (waits for a call in flight to finish)."""
        with self._lock:
            self._broken = self._broken or "closed"
            self._finalizer()

    # ------------------------------------------------------------------ TrainerModel surface

    @property
    def is_lora(self) -> bool:
        return self.lora_rank > 0

    @property
    def step(self) -> int:
        return self._counters["step"]

    @property
    def grad_epoch(self) -> int:
        return self._counters["grad_epoch"]

    def forward_backward(self, data: list[dict], loss_fn: str, loss_fn_config: dict | None = None) -> dict:
        return self._call("forward_backward", data, loss_fn, loss_fn_config)

    def forward(self, data: list[dict], loss_fn: str, loss_fn_config: dict | None = None) -> dict:
        return self._call("forward", data, loss_fn, loss_fn_config)

    def optim_step(self, adam_params: dict, grad_accumulation_normalization: str | None = None) -> dict:
        return self._call("optim_step", adam_params, grad_accumulation_normalization)

    def save_state(self, dest: Path, fresh_optimizer: bool = False) -> None:
        return self._call("save_state", Path(dest), fresh_optimizer=fresh_optimizer)

    def load_state(self, src: Path, optimizer: bool) -> None:
        return self._call("load_state", Path(src), optimizer)

    def save_sampler(self, dest: Path, checkpoint_type: str, base_dir: Path | None = None,
                     base_identity: str | None = None, target_out: Path | None = None) -> None:
        return self._call("save_sampler", Path(dest), checkpoint_type, base_dir, base_identity, target_out)

    def state_digest(self) -> str:
        return self._call("state_digest")

    def info(self) -> dict:
        from .model_session import info_payload

        return info_payload(self)


def _shutdown(conns: list, procs: list) -> None:
    """Ask each rank to stop, then make sure it has: terminate, finally kill (by its own pid)."""
    for conn in conns:
        try:
            conn.send(("stop", (), {}))
        except (OSError, ValueError):
            pass
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.terminate()
            p.join(5)
        if p.is_alive():
            p.kill()
            p.join()
    for conn in conns:
        conn.close()
