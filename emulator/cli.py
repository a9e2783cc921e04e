"""The one console script, `fwemu`: a table of sub-commands, each imported only when used.

Every sub-command module exposes `configure(parser)` and `run(args) -> int`, and imports its heavy
dependencies (torch, uvicorn, hypothesis) inside `run`, so `fwemu --help` and `fwemu serve` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fwemu import __version__

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("fwemu.emulator.serve", "run the emulator (control plane + trainer gateway) over HTTP"),
    "inspect": ("fwemu.emulator.inspect.cli", "classify a checkpoint directory from its bytes"),
    "import": ("fwemu.client.commands.import_cmd", "put an existing checkpoint directory into a job"),
    "jobs": ("fwemu.client.commands.jobs_cmd", "list your account's trainer jobs"),
    "ls": ("fwemu.client.commands.ls_cmd", "list a trainer job's checkpoints"),
    "promote": ("fwemu.client.commands.promote_cmd", "promote a checkpoint to a model"),
    "train": ("fwemu.client.commands.train_cmd", "run the sft_loop recipe (TOML config or flags)"),
    "env": ("fwemu.client.commands.env_cmd", "print `export` lines for running cookbook recipes offline here"),
    "demo": ("fwemu.client.commands.demo_cmd", "save, interrupt, resume and promote on an embedded emulator"),
    "contracts": ("fwemu.contracts.cli", "run the checkpoint contract suite against a target"),
}


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; keep its message on one line, no traceback."""


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """Only the chosen sub-command's module is imported; the others show their one-line help."""
    parser = _Parser(prog="fwemu", description="Local emulator for the Fireworks checkpoint surface.")
    parser.add_argument("--version", action="version", version=f"fwemu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if name != chosen:
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.configure(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
