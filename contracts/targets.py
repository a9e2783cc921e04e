"""Where the contract suite runs: the in-process emulator, a running emulator by URL, or the real service.

A target says what it can do (`caps`), so a rule that needs a capability (restart, clock, reading
the blob store, rewriting a blob) is switched off by a precondition where the target lacks it,
and the report says so instead of counting it as passed:

* `InProcessTarget` (default): `create_app(Settings(data_dir=tmp, startup_delay_s=0, breaks=...))`
  served by uvicorn on a loopback socket in a thread (`running_server`'s ServerThread): the
  transport users have, and the fireworks-ai SDK driver needs a socket anyway. A single call is
  a little faster than `httpx.ASGITransport` through our client's sync bridge (a job listing:
  0.66 vs 0.91 ms), yet a whole ci run measured faster over ASGI, where examples and restarts
  start no server (`python bench/contract_speed.py` runs both); `transport="asgi"` stays available.
  It can restart (rebuild the app on the same data_dir), move the clock, read and rewrite
  blobs, use the fault API, and mint a fresh account per test.
* `UrlTarget`: a running `fwemu serve`. Admin routes (clock) are used when it answers
  `/_emulator/health`; blobs are read when that health report names a data dir on this machine.
* `CloudTarget`: the real service (FIREWORKS_API_KEY + base URL). Nothing but the public API.
"""

from __future__ import annotations

import abc

import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
TINY_MODEL_SIZE = "hidden=32,layers=1,heads=2,kv_heads=1,intermediate=64"

# Capability names used by rule preconditions and the report.
RESTART = "restart"          # rebuild the server on the same data dir
CLOCK = "clock"              # /_emulator/v1/clock:advance
BLOBS = "blobs"              # read stored checkpoint/model bytes (K1 from bytes, K5 file equality)
REWRITE = "rewrite"          # replace a stored checkpoint's bytes (a writer that lies, K1)
ACCOUNTS = "accounts"        # mint a fresh account (API key) per test
FAULT_API = "fault-api"      # server-side fault injection at /_emulator/v1/faults
QUIRKS = "quirks"            # build a variant of the target with emulator quirks switched on
SOCKET = "socket"            # reachable over a real socket (needed by the fireworks-ai SDK driver)
RANKS = "trainer-ranks"      # restart the emulator with another number of trainer ranks (R9)

CAP_TEXT = {
    RESTART: "restart the emulator on the same data dir",
    CLOCK: "move the emulator's clock (retention windows)",
    BLOBS: "read the stored bytes (blob directory)",
    REWRITE: "rewrite stored bytes behind the trainer's back",
    ACCOUNTS: "a fresh account per test",
    FAULT_API: "server-side faults (/_emulator/v1/faults)",
    QUIRKS: "emulator quirks (rename-dcp-saves)",
    SOCKET: "a real HTTP socket",
    RANKS: "restart the emulator at another trainer rank count (--trainer-ranks)",
}


@dataclass(frozen=True)
class Account:
    api_key: str
    account_id: str | None  # None: resolve with GET /v1/accounts


class Target(abc.ABC):
    """Base class: subclasses fill `name`, `caps`, `base_url` and the hooks they support.

    Hooks a target lacks (restart, variant) refuse with a clear error; the machine only calls
    them when the target's `caps` say it can."""

    name = "target"
    caps: frozenset[str] = frozenset()
    base_model = DEFAULT_BASE_MODEL
    retention_s: float | None = None
    breaks: frozenset[str] = frozenset()

    def has(self, cap: str) -> bool:
        return cap in self.caps

    @property
    def listing_may_lag(self) -> bool:
        """Whether a saved row may appear in listings only after a delay (the real service: yes)."""
        return True

    @property
    @abc.abstractmethod
    def base_url(self) -> str:
        """Root URL of the control plane (and gateway) under test."""

    def transport(self) -> Any:
        """An httpx transport for our client (None: httpx's default network transport)."""
        return None

    @abc.abstractmethod
    def new_account(self) -> Account:
        """A fresh, isolated account (API key) for one example."""

    def checkpoint_dir(self, account: str, job_id: str, name: str) -> Path | None:
        return None

    def model_dir(self, account: str, model_id: str) -> Path | None:
        return None

    def restart(self, trainer_ranks: int | None = None) -> None:
        raise RuntimeError(f"{self.name} cannot be restarted")

    def advance_clock(self, seconds: float, api_key: str) -> None:
        import httpx

        from fwemu.client.transport import as_sync_transport

        with httpx.Client(transport=as_sync_transport(self.transport()), timeout=30) as http:
            r = http.post(f"{self.base_url}/_emulator/v1/clock:advance", json={"seconds": seconds},
                          headers={"X-Api-Key": api_key})
        r.raise_for_status()

    def variant(self, **settings: Any) -> "Target":
        raise RuntimeError(f"{self.name} has no variants")

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        pass

    def __enter__(self) -> "Target":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SwapApp:
    """An ASGI app that forwards to whichever emulator app is current.

    One uvicorn thread serves the whole run; a restart (or a fresh emulator for the next example)
    closes the current app's services and swaps in a new app on the same port, in ~20 ms instead
    of ~0.2 s for stopping and starting uvicorn. Lifespan events are answered here: the swapped
    apps' services are closed explicitly.
    """

    def __init__(self) -> None:
        self.app = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await self.app(scope, receive, send)


class InProcessTarget(Target):
    """The emulator in this process. `transport="socket"` (default: uvicorn on loopback) or `"asgi"`."""

    name = "in-process"

    @property
    def listing_may_lag(self) -> bool:
        return "listing-delay" in self.quirks

    def __init__(self, *, breaks: frozenset[str] | set[str] | tuple = (), quirks: frozenset[str] | set[str] | tuple = (),
                 transport: str = "socket", retention_days: float = 30.0, model_size: str | None = TINY_MODEL_SIZE,
                 data_dir: str | os.PathLike | None = None, trainer_ranks: int = 1):
        if transport not in ("asgi", "socket"):
            raise ValueError("transport must be 'asgi' or 'socket'")
        self.breaks = frozenset(breaks)
        self.quirks = frozenset(quirks)
        self.mode = transport
        self.retention_days = retention_days
        self.retention_s = retention_days * 86400
        self.model_size = model_size
        self.trainer_ranks = self._initial_ranks = trainer_ranks
        caps = {RESTART, CLOCK, BLOBS, REWRITE, ACCOUNTS, QUIRKS, RANKS}
        if transport == "socket":
            caps.add(SOCKET)
        self.caps = frozenset(caps)
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="fwemu-contracts-"))
        self._keys: dict[str, str] = {}
        self._clock_offset_us = 0
        self._saved_env: dict[str, str | None] = {}
        self._env_set = False
        self.app = None
        self._swap = _SwapApp()
        self._server = None
        self._asgi = None
        self.restarts = 0
        self._set_env()
        self._start()
        if transport == "socket":
            from fwemu.emulator.server_thread import ServerThread

            self._server = ServerThread(self._swap).start()

    # -- lifecycle ------------------------------------------------------------------------
    def _set_env(self) -> None:
        """The trainer reads its model shape and device from the environment when a model is created:
        a tiny model, on CPU (R2 is "bitwise on CPU"; the trainer would pick CUDA where present)."""
        wanted = {"FWEMU_DEVICE": "cpu"}
        if self.model_size:
            wanted["FWEMU_MODEL_SIZE"] = self.model_size
        self._saved_env = {k: os.environ.get(k) for k, v in wanted.items() if os.environ.get(k) != v}
        for k in self._saved_env:
            os.environ[k] = wanted[k]
        self._env_set = bool(self._saved_env)

    def _start(self) -> None:
        from fwemu.emulator.app import create_app
        from fwemu.emulator.settings import Settings

        extra = {"fault_plan": None} if "fault_plan" in Settings.__dataclass_fields__ else {}
        settings = Settings(data_dir=self.data_dir, api_keys=self._keys, startup_delay_s=0,
                            retention_days=self.retention_days, breaks=self.breaks, quirks=self.quirks,
                            future_long_poll_s=2.0, trainer_ranks=self.trainer_ranks, **extra)
        self.app = create_app(settings)
        if hasattr(self.app.state, "fault_plan"):
            self.caps = self.caps | {FAULT_API}
        # The admin clock offset lives in memory; carry it over a restart so time never runs backwards.
        self.app.state.services.clock.offset_us = self._clock_offset_us
        self._swap.app = self.app
        if self.mode == "asgi":
            import httpx

            self._asgi = httpx.ASGITransport(app=self.app)

    def _stop_app(self) -> None:
        if self.app is None:
            return
        self._clock_offset_us = self.app.state.services.clock.offset_us
        self.app.state.services.close()
        self.app = None
        self._asgi = None

    def restart(self, trainer_ranks: int | None = None) -> None:
        """Stop the emulator (live trainer sessions die with it) and start it again on the same data dir;
        `trainer_ranks` also changes how many processes train each model created from then on."""
        if trainer_ranks is not None:
            self.trainer_ranks = trainer_ranks
        self._stop_app()
        self._start()
        self.restarts += 1

    def renew(self) -> "InProcessTarget":
        """A brand-new emulator (empty data dir, clock at zero) behind the same address: one per example."""
        self._stop_app()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = Path(tempfile.mkdtemp(prefix="fwemu-contracts-"))
        self._clock_offset_us = 0
        self.trainer_ranks = self._initial_ranks
        self.restarts += 1
        self._start()
        return self

    def close(self) -> None:
        self._stop_app()
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._env_set:
            for k, old in self._saved_env.items():
                if old is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = old
            self._env_set = False
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- access ---------------------------------------------------------------------------
    @property
    def services(self):
        return self.app.state.services

    @property
    def base_url(self) -> str:
        return self._server.url if self._server is not None else "http://fwemu.contracts"

    def transport(self) -> Any:
        return self._asgi

    def new_account(self) -> Account:
        """A fresh API key and account; `tml-` keys keep the fireworks-ai SDK on plain httpx."""
        tag = secrets.token_hex(4)
        key, account = f"tml-contracts-{tag}", f"contracts-{tag}"
        self._keys[key] = account
        return Account(key, account)

    def checkpoint_dir(self, account: str, job_id: str, name: str) -> Path | None:
        return self.services.store.checkpoint_dir(account, job_id, name)

    def model_dir(self, account: str, model_id: str) -> Path | None:
        return self.services.store.model_dir(account, model_id)

    def advance_clock(self, seconds: float, api_key: str) -> None:
        super().advance_clock(seconds, api_key)
        self._clock_offset_us = self.services.clock.offset_us

    def variant(self, **overrides: Any) -> "InProcessTarget":
        """A separate in-process target like this one with some settings changed (e.g. quirks)."""
        kw = dict(breaks=self.breaks, quirks=self.quirks, transport=self.mode,
                  retention_days=self.retention_days, model_size=self.model_size,
                  trainer_ranks=self._initial_ranks)
        kw.update(overrides)
        return InProcessTarget(**kw)

    def describe(self) -> str:
        extra = f", breaks={','.join(sorted(self.breaks))}" if self.breaks else ""
        extra += f", quirks={','.join(sorted(self.quirks))}" if self.quirks else ""
        return f"in-process emulator ({self.mode}{extra})"


class UrlTarget(Target):
    """A running emulator (or anything speaking the API) at `url`, used with one API key."""

    name = "url"

    def __init__(self, url: str, api_key: str, *, retention_days: float = 30.0):
        import httpx

        self.url = url.rstrip("/")
        self.api_key = api_key
        self.retention_s = retention_days * 86400
        caps = {SOCKET}
        self.data_dir: Path | None = None
        try:
            health = httpx.get(f"{self.url}/_emulator/health", timeout=5)
            is_fwemu = health.status_code == 200
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ValueError(f"nothing answers at {self.url} ({exc}); start `fwemu serve` there, or leave out "
                             "--target to test the in-process emulator") from None
        except httpx.HTTPError:
            is_fwemu = False
        if is_fwemu:
            caps.add(CLOCK)
            store = health.json().get("store")
            if isinstance(store, str) and store != "memory" and (Path(store) / "blobs").is_dir():
                self.data_dir = Path(store)
                caps |= {BLOBS, REWRITE}
            try:
                state = httpx.get(f"{self.url}/_emulator/v1/state", headers={"X-Api-Key": api_key}, timeout=5)
                if state.status_code == 200:
                    self.breaks = frozenset(state.json().get("breaks") or ())
                faults = httpx.get(f"{self.url}/_emulator/v1/faults", headers={"X-Api-Key": api_key}, timeout=5)
                if faults.status_code == 200:
                    caps.add(FAULT_API)
            except httpx.HTTPError:
                pass
        self.caps = frozenset(caps)

    @property
    def base_url(self) -> str:
        return self.url

    def new_account(self) -> Account:
        return Account(self.api_key, None)

    def checkpoint_dir(self, account: str, job_id: str, name: str) -> Path | None:
        return self.data_dir / "blobs" / account / job_id / name if self.data_dir else None

    def model_dir(self, account: str, model_id: str) -> Path | None:
        return self.data_dir / "models" / account / model_id if self.data_dir else None

    def describe(self) -> str:
        blobs = f", blobs at {self.data_dir}" if self.data_dir else ""
        return f"emulator at {self.url}{blobs}"


class CloudTarget(UrlTarget):
    """The real Fireworks service: public API only, real money. Opt-in (pytest -m cloud)."""

    name = "cloud"

    def __init__(self, url: str, api_key: str, *, base_model: str | None = None):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.retention_s = None
        self.data_dir = None
        self.caps = frozenset({SOCKET})
        self.base_model = base_model or os.environ.get("FWEMU_CLOUD_BASE_MODEL") or DEFAULT_BASE_MODEL

    def describe(self) -> str:
        return f"real service at {self.url} (base model {self.base_model})"


def make_target(spec: str | None = None, *, api_key: str | None = None, breaks: tuple = (),
                transport: str = "socket") -> Target:
    """`None`/"inprocess" -> InProcessTarget; a URL -> UrlTarget when it answers /_emulator/health
    (a running fwemu), else CloudTarget (the real service; needs FIREWORKS_API_KEY)."""
    if spec in (None, "", "inprocess", "in-process"):
        return InProcessTarget(breaks=breaks, transport=transport)
    if breaks:
        raise ValueError("break switches can only be set on the in-process target; start the remote "
                         "emulator with FWEMU_BREAK=... instead")
    key = api_key or os.environ.get("FIREWORKS_API_KEY")
    from fwemu.emulator.settings import DEV_API_KEY

    target = UrlTarget(spec, key or DEV_API_KEY)  # `fwemu serve` accepts its dev key by default
    if CLOCK in target.caps:
        return target
    if not key:
        raise ValueError(f"{spec} is not a fwemu emulator (no /_emulator/health); the real service needs "
                         "FIREWORKS_API_KEY")
    return CloudTarget(spec, key)
