"""Run the emulator over HTTP (uvicorn): control plane, trainer gateway and admin routes on one port.

Point the SDK at it with base_url=http://HOST:PORT (or FIREWORKS_BASE_URL). Keys map to accounts
with --api-key KEY=ACCOUNT (repeatable) or FWEMU_API_KEYS="k1=a1,k2=a2"; with none, the value of
FIREWORKS_API_KEY (else the dev key fw-local-dev) maps to account `local`.
"""

from __future__ import annotations

import argparse
import errno
import gc
import os
import socket
import sys
from pathlib import Path

from fwemu import __version__
from fwemu.emulator.settings import BREAK_SWITCHES, QUIRKS


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="TCP port (default: $FWEMU_PORT, else 8700)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--data-dir", type=Path, default=Path(".fwemu"), help="state directory (default ./.fwemu)")
    where.add_argument("--in-memory", action="store_true", help="keep nothing after exit")
    p.add_argument("--api-key", action="append", default=[], metavar="KEY=ACCOUNT")
    p.add_argument("--startup-delay", type=float, default=0.0, metavar="SECONDS",
                   help="time a trainer job takes from CREATING to RUNNING (default 0: RUNNING at once)")
    p.add_argument("--retention-days", type=float, default=30.0)
    p.add_argument("--quirk", action="append", default=[], choices=sorted(QUIRKS),
                   help="reproduce a behaviour of the real service (repeatable; see README)")
    p.add_argument("--break", dest="breaks", action="append", default=[], choices=sorted(BREAK_SWITCHES),
                   metavar="SWITCH", help="TEST ONLY: break one rule on purpose so a contract suite can prove it "
                   "catches it (repeatable): " + "; ".join(f"{k}: {v}" for k, v in sorted(BREAK_SWITCHES.items())))
    p.add_argument("--fault-plan", metavar="FILE.json",
                   help="inject faults from this plan (docs/quirks.md); default env FWEMU_FAULT_PLAN")
    p.add_argument("--fsync", action="store_true", default=None,
                   help="fsync every checkpoint and commit so they survive power loss (default: atomic and "
                        "safe if the emulator crashes, not fsynced; env FWEMU_FSYNC=1)")
    p.add_argument("--no-path-import", dest="path_import", action="store_false",
                   help="refuse checkpoints:import by local path (sourcePath); only tar streams are accepted")
    p.add_argument("--trainer-ranks", type=int, default=None, metavar="N",
                   help="processes per trainer model: N > 1 runs FSDP2 over N ranks (gloo on CPU, NCCL on "
                        "CUDA; docs/multirank.md); default env FWEMU_TRAINER_RANKS, else 1")
    p.add_argument("--trainer-precision", choices=["fp32", "bf16"], default=None,
                   help="trainer compute precision (bf16: CUDA only; weights, Adam state and checkpoints stay float32); "
                        "default env FWEMU_TRAINER_PRECISION, else fp32")
    p.add_argument("--log-level", default="warning", choices=LOG_LEVELS, help="uvicorn's log level (default warning)")


LOG_LEVELS = ["critical", "error", "warning", "info", "debug", "trace"]


class UsageError(ValueError):
    """A bad argument, reported as one line and exit status 2 before anything is announced."""


def check_args(args: argparse.Namespace) -> None:
    if args.port is None:
        env = os.environ.get("FWEMU_PORT", "8700")
        try:
            args.port = int(env)
        except ValueError:
            raise UsageError(f"FWEMU_PORT={env!r} is not a port number") from None
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a TCP port (1-65535)")
    if args.startup_delay < 0:
        raise UsageError(f"--startup-delay {args.startup_delay} must be >= 0 seconds")
    if args.retention_days < 0:
        raise UsageError(f"--retention-days {args.retention_days} must be >= 0")
    if args.trainer_ranks is not None and args.trainer_ranks < 1:
        raise UsageError(f"--trainer-ranks {args.trainer_ranks} must be at least 1")
    if not args.in_memory:
        d = Path(args.data_dir)
        if d.exists() and not d.is_dir():
            raise UsageError(f"--data-dir {d} is a file, not a directory; pass a directory (it is created "
                             "if missing) or --in-memory")
        parent = next((p for p in [d, *d.parents] if p.exists()), Path("."))
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UsageError(f"--data-dir {d}: {parent} is not writable by this user; pass another directory "
                             "or --in-memory")


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket before the banner, so a busy port is a usage error, not a late crash."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: cannot resolve ({exc.strerror})") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = "stop the other server or pick another --port" if exc.errno == errno.EADDRINUSE else "check --host and --port"
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; {hint}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def banner(args: argparse.Namespace, settings) -> str:
    where = "in memory" if settings.data_dir is None else f"data dir {settings.data_dir}"
    lines = [f"fwemu {__version__} serving on http://{args.host}:{args.port} ({where})"]
    for key, account in sorted(settings.api_keys.items(), key=lambda kv: kv[1]):
        lines.append(f"  API key {key}  -> account {account}")
    lines.append(f"  use: FIREWORKS_BASE_URL=http://{args.host}:{args.port} FIREWORKS_API_KEY=<key above>")
    lines.append(f"  dashboard: http://{args.host}:{args.port}/dashboard   API reference: /docs")
    if settings.trainer_ranks > 1 or settings.trainer_precision != "fp32":
        lines.append(f"  trainer: {settings.trainer_ranks} rank(s) per model (FSDP2), {settings.trainer_precision}")
    for name in sorted(settings.quirks):
        lines.append(f"  quirk {name}: {QUIRKS[name]}")
    for name in sorted(settings.breaks):
        lines.append(f"  WARNING break switch {name} is ON: {BREAK_SWITCHES[name]}; for contract-suite tests only")
    return "\n".join(lines)


def settings_from_args(args: argparse.Namespace):
    from fwemu.emulator.settings import Settings, default_api_keys, parse_api_keys

    keys = parse_api_keys(",".join(args.api_key)) if args.api_key else default_api_keys()
    kwargs = {}
    if args.quirk:
        kwargs["quirks"] = frozenset(args.quirk)
    if args.breaks:
        kwargs["breaks"] = frozenset(args.breaks)
    if args.fault_plan:
        kwargs["fault_plan"] = args.fault_plan
    if args.fsync:
        kwargs["fsync"] = True
    if not args.path_import:
        kwargs["allow_path_import"] = False
    if args.trainer_ranks is not None:
        kwargs["trainer_ranks"] = args.trainer_ranks
    if args.trainer_precision is not None:
        kwargs["trainer_precision"] = args.trainer_precision
    from fwemu.emulator.faults.plan import load_plan

    load_plan(kwargs.get("fault_plan") or os.environ.get("FWEMU_FAULT_PLAN"))  # a bad plan is a usage error
    return Settings(data_dir=None if args.in_memory else args.data_dir, api_keys=keys,
                    startup_delay_s=args.startup_delay, retention_days=args.retention_days, **kwargs)


def run(args: argparse.Namespace) -> int:
    try:
        check_args(args)
        settings = settings_from_args(args)
        sock = bind(args.host, args.port)
    except ValueError as exc:
        print(f"fwemu serve: {exc}", file=sys.stderr)
        return 2
    # Start-up allocates only what lives as long as the process (modules, classes, routes, the
    # store), so collecting garbage meanwhile is wasted work: ~15 ms of young collections and,
    # once the heap is big enough, a ~25 ms full one scanning every module. The collector is off
    # until the app is built; then everything so far is frozen out of its sight, so later
    # collections only scan what requests allocate. (`fwemu serve` owns its process.)
    gc.disable()
    try:
        import uvicorn

        from fwemu.emulator.app import create_app

        try:
            app = create_app(settings)
        except OSError as exc:
            sock.close()
            print(f"fwemu serve: cannot open the data dir {settings.data_dir}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    finally:
        gc.freeze()
        gc.enable()
    print(banner(args, settings), file=sys.stderr, flush=True)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
