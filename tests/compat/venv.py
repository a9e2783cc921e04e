"""Where the real cookbook is, and the interpreter that can run it (the cached compat venv).

The cookbook only works under its own pinned dependency set (fireworks-ai 1.2.9 + tinker 0.23),
which is not fwemu's dev install, so its recipes always run in a subprocess with the venv's
python that scripts/compat_env.sh builds once and caches. Anything missing becomes a skip
reason that says exactly what is missing and how to provide it.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "compat_env.sh"
BUILD_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Compat:
    python: Path      # the compat venv's interpreter
    cookbook: Path    # the directory holding training/ (goes on PYTHONPATH)


def cookbook_dir() -> Path:
    """$FWEMU_COOKBOOK, else ../shared/cookbook beside the checkout (as scripts/compat_env.sh)."""
    return Path(os.environ.get("FWEMU_COOKBOOK") or ROOT.parent / "shared" / "cookbook").resolve()


def locate() -> tuple[Compat | None, str]:
    """(Compat, "") when usable, else (None, why not): a skip reason a user can act on."""
    cookbook = cookbook_dir()
    if not (cookbook / "training" / "recipes" / "sft_loop.py").is_file():
        return None, (f"the real cookbook is not at {cookbook} (no training/recipes/sft_loop.py): "
                      "set FWEMU_COOKBOOK to a fw-ai/cookbook checkout")
    if not (cookbook / "requirements-pinned.txt").is_file():
        return None, f"{cookbook} has no requirements-pinned.txt, so the compat venv cannot be built"
    env = {**os.environ, "FWEMU_COOKBOOK": str(cookbook)}
    try:
        done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"building the compat venv ({SCRIPT.name}) took over {BUILD_TIMEOUT_S} s"
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if not ln.startswith("WARNING: Location")]
        return None, (f"the compat venv could not be built ({SCRIPT.name} exit {done.returncode}): "
                      + " | ".join(lines[-6:])[-900:])
    python = Path(done.stdout.strip().splitlines()[-1])
    return Compat(python=python, cookbook=cookbook), ""
