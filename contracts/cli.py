"""Run the checkpoint contract suite (docs/invariants.md) against a target and print a table.

    fwemu contracts                              # the in-process emulator, default profile
    fwemu contracts --target http://127.0.0.1:8765 --max-examples 50
    fwemu contracts --break newest-first         # prove the suite catches a broken rule (exit 1, F2 pass)
    fwemu contracts --profile nightly            # 500 examples, longer programs

Exit status: 0 when every invariant held, 1 on any failure or error, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    from fwemu.emulator.settings import BREAK_SWITCHES

    parser.add_argument("--target", default=None, metavar="URL",
                        help="a running fwemu (or the real service with FIREWORKS_API_KEY); default: in-process")
    parser.add_argument("--driver", default="client", metavar="DRIVER",
                        help="client under test: client (ours, default), sdk (the fireworks-ai SDK), cookbook[=PATH] "
                             "(the cookbook's TrainingCheckpoints from a checkout; default $FWEMU_COOKBOOK or "
                             "../shared/cookbook) or module:Class (your own driver, see contracts/README.md)")
    parser.add_argument("--profile", default="default", choices=("ci", "default", "nightly"),
                        help="examples and program length (ci: 8x20, default: 25x25, nightly: 500x40)")
    parser.add_argument("--max-examples", type=int, default=None, metavar="N", help="override the profile's examples")
    parser.add_argument("--steps", type=int, default=None, metavar="N", help="override the profile's steps per program")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="Hypothesis seed (same seed, same programs)")
    parser.add_argument("--break", dest="breaks", action="append", default=[], choices=sorted(BREAK_SWITCHES),
                        metavar="SWITCH", help="in-process only: break one rule on purpose "
                                               f"({', '.join(sorted(BREAK_SWITCHES))}); repeatable")
    parser.add_argument("--only", default=None, metavar="IDS", help="comma-separated invariant ids, e.g. K1,L1")
    parser.add_argument("--shrink-seconds", type=float, default=120.0, metavar="T",
                        help="time to shrink one failure to a short program (default 120)")
    parser.add_argument("--no-shrink", action="store_true", help="report failures unshrunk (fastest)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the clients' log messages")


def check_args(args: argparse.Namespace) -> list[str] | None:
    """Refuse bad arguments up front (exit 2), before a long run; returns the `--only` ids."""
    for flag, value in (("--max-examples", args.max_examples), ("--steps", args.steps)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} {value} must be at least 1")
    if args.shrink_seconds < 0:
        raise ValueError(f"--shrink-seconds {args.shrink_seconds} must be >= 0")
    if args.target and not args.target.startswith(("http://", "https://")):
        raise ValueError(f"--target {args.target!r} is not an http:// or https:// URL")
    from fwemu.contracts.drivers import driver_class

    driver_class(args.driver)   # DriverSpecError (a ValueError) for a bad spec: exit 2
    if not args.only:
        return None
    from fwemu.contracts.invariants import REGISTRY

    only = [s.strip().upper() for s in args.only.split(",") if s.strip()]
    unknown = [i for i in only if i not in REGISTRY]
    if unknown or not only:
        raise ValueError(f"--only {args.only!r}: unknown invariant id(s) {', '.join(unknown) or '(none given)'}; "
                         f"known: {', '.join(sorted(REGISTRY))} (docs/invariants.md)")
    return only


def run(args: argparse.Namespace) -> int:
    try:
        only = check_args(args)
    except ValueError as exc:
        print(f"fwemu contracts: {exc}", file=sys.stderr)
        return 2
    if "torch" not in sys.modules:
        # The stand-in models are tiny: one OpenMP thread per trainer is ~2x faster on small machines.
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(name)s: %(message)s")
    from fwemu.contracts.runner import run_contracts
    from fwemu.contracts.targets import make_target

    try:
        target = make_target(args.target, breaks=tuple(args.breaks))
    except ValueError as exc:
        print(f"fwemu contracts: {exc}", file=sys.stderr)
        return 2
    try:
        report = run_contracts(target, args.max_examples, args.seed, driver=args.driver, only=only,
                               profile=args.profile, steps=args.steps, shrink=not args.no_shrink,
                               shrink_seconds=args.shrink_seconds,
                               progress=(lambda s: print(s, file=sys.stderr, flush=True)))
    finally:
        target.close()
    print(report.table())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(report.to_json())
    return 0 if report.ok else 1
