"""Classify a checkpoint directory from its bytes, as the control plane does.

Prints the kind, whether it is resumable and promotable, and for a rejection or a
non-promotable kind the reason and what to do instead. Exit status: 0 a valid kind,
1 rejected, 2 usage error (missing path, not a directory). `--json` prints exactly one object:
{"path", "kind" (bare name or null), "resumable", "promotable", "reason"}.
`--example KIND DIR` writes a small example checkpoint of KIND into DIR (needs torch).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from fwemu.emulator import rules

from .classify import inspect_checkpoint
from .kinds import Kind

KIND_NAMES = [k.value for k in Kind]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", help="checkpoint directory to classify")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--example", nargs=2, metavar=("KIND", "DIR"),
                        help=f"write an example checkpoint of KIND ({', '.join(KIND_NAMES)}) into DIR")


def run(args: argparse.Namespace) -> int:
    try:
        if args.example:
            if args.path:
                return _usage("give either PATH or --example KIND DIR, not both", args)
            return _write_example(*args.example)
        if not args.path:
            return _usage("PATH is required (or --example KIND DIR)", args)
        return _inspect(args.path, args.json)
    except Exception as e:  # never a traceback
        print(f"fwemu inspect: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def _usage(message: str, args: argparse.Namespace, path: str | None = None) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"path": path, "kind": None, "resumable": False, "promotable": False,
                          "reason": message}))
    else:
        print(f"fwemu inspect: error: {message}", file=sys.stderr)
    return 2


def _inspect(path: str, as_json: bool) -> int:
    if not os.path.lexists(path):
        return _usage(f"{path} does not exist", argparse.Namespace(json=as_json), path)
    if not os.path.isdir(path):
        return _usage(f"{path} is not a directory", argparse.Namespace(json=as_json), path)
    v = inspect_checkpoint(path)
    resumable = v.kind is not None and rules.is_resumable(v.kind)
    promotable = v.kind is not None and rules.is_promotable(v.kind)
    if as_json:
        # reason: why it was rejected, or why a valid kind cannot be promoted (null when it can)
        reason = v.reason if v.kind is None else (None if promotable else rules.promotion_refusal(v.kind))
        print(json.dumps({"path": path, "kind": v.kind.value if v.kind else None,
                          "resumable": resumable, "promotable": promotable, "reason": reason}))
        return 0 if v.kind else 1

    yes_no = {True: "yes", False: "no"}
    lines = [f"path:        {path}",
             f"kind:        {f'{v.kind.value} ({v.kind.wire})' if v.kind else 'rejected'}",
             f"resumable:   {yes_no[resumable]}",
             f"promotable:  {yes_no[promotable]}"]
    if v.kind is None:
        lines.append(f"reason:      {v.reason}")
        lines.append("instead:     " + (v.details.get("hint") or default_hint(v.file)))
    else:
        if v.details:
            facts = ", ".join(f"{k}={v.details[k]}" for k in v.details)
            lines.append(f"details:     {facts}")
        if not promotable:
            lines.append(f"promotion:   {rules.promotion_refusal(v.kind)}")
    lines.append(f"bytes read:  {v.bytes_read}")
    print("\n".join(lines))
    return 0 if v.kind else 1


def default_hint(file: str | None) -> str:
    """What to do about a rejection without a rule-specific hint; only names a file when there is one."""
    if file and file != ".":
        return f"fix or remove {file}, or save the checkpoint again with the trainer"
    return ("point at the directory the trainer wrote (it holds .metadata and *.distcp, or "
            "*.safetensors with config.json or adapter_config.json), or save the checkpoint again")


def _write_example(kind: str, dest: str) -> int:
    try:
        parsed = Kind.parse(kind)
    except ValueError:
        return _usage(f"unknown kind {kind!r} (one of {', '.join(KIND_NAMES)})", argparse.Namespace())
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        return _usage(f"{dest} must be a new or empty directory", argparse.Namespace())
    from .examples import write_example  # imports torch lazily, only on this path

    write_example(parsed, dest)
    print(f"wrote an example {parsed.value} checkpoint to {dest}; try: fwemu inspect {dest}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m fwemu.emulator.inspect.cli ...`: the same command without the `fwemu` dispatcher."""
    parser = argparse.ArgumentParser(prog="fwemu inspect", description=__doc__.strip())
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
