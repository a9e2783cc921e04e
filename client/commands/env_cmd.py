"""Print the shell environment that points an unchanged cookbook recipe at a local fwemu, offline.

    eval "$(fwemu env)"                 # then: python -m training.recipes.sft_loop ...
    eval "$(fwemu env --base-url http://127.0.0.1:8800 --data-dir /srv/fwemu)"

It sets the Fireworks SDK's and the cookbook's connection variables (FIREWORKS_BASE_URL,
FIREWORKS_API_KEY), turns telemetry and Weights & Biases off, puts Hugging Face in offline mode
and gives it a private HF_HOME under the fwemu data directory. Into that HF_HOME it writes the
stand-in tokenizers (bytes 0-255 + each family's added tokens) as a hub cache, so
AutoTokenizer.from_pretrained("Qwen/Qwen3-8B") loads offline. The real Hugging Face cache is
never read or written: the variables that could point elsewhere (HF_HUB_CACHE, ...) are unset.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from fwemu.client.commands._common import LOCAL_BASE_URL, LOCAL_DEV_API_KEY

DEFAULT_DATA_DIR = Path(".fwemu")   # the same default as `fwemu serve --data-dir`
HF_HOME_NAME = "hf-home"

# Variables that would send a Hugging Face library to a cache other than our HF_HOME.
CACHE_OVERRIDES = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_DATASETS_CACHE",
                   "HF_ASSETS_CACHE", "HF_XET_CACHE")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", default=None,
                   help=f"the emulator's URL (default where `fwemu serve` listens: {LOCAL_BASE_URL}, "
                        "or port $FWEMU_PORT when set)")
    p.add_argument("--api-key", default=LOCAL_DEV_API_KEY,
                   help=f"an API key the emulator accepts (default the dev key {LOCAL_DEV_API_KEY})")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help="fwemu data directory; the private HF_HOME is DIR/hf-home (default ./.fwemu)")


def hf_home_for(data_dir: Path) -> Path:
    return Path(data_dir).expanduser().resolve() / HF_HOME_NAME


def environment(base_url: str, api_key: str, hf_home: Path) -> list[tuple[str, str]]:
    """(name, value) pairs, in print order. Pure: the names the SDK, cookbook and HF libraries read."""
    return [
        ("FIREWORKS_BASE_URL", base_url),
        ("FIREWORKS_API_KEY", api_key),
        ("TINKER_TELEMETRY", "0"),              # the training SDK's telemetry uploads
        ("WANDB_MODE", "disabled"),
        ("WANDB_DISABLED", "true"),
        ("WANDB_SILENT", "true"),
        ("HF_HOME", str(hf_home)),
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("HF_DATASETS_OFFLINE", "1"),
        ("HF_HUB_DISABLE_TELEMETRY", "1"),
    ]


def render(pairs: list[tuple[str, str]], unset: tuple[str, ...] = CACHE_OVERRIDES) -> str:
    """POSIX ``sh`` text: one quoted ``export`` per pair, then one ``unset`` line."""
    lines = [f"export {name}={shlex.quote(value)}" for name, value in pairs]
    if unset:
        lines.append("unset " + " ".join(unset))
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    try:
        import tokenizers  # noqa: F401  (the stand-ins are real tokenizers.json files)
    except ImportError:
        print("error: fwemu env needs the tokenizers package (pip install tokenizers)", file=sys.stderr)
        return 1
    from fwemu.client.standin_tokenizers import materialise

    hf_home = hf_home_for(args.data_dir)
    try:
        materialise(hf_home)
    except OSError as exc:
        print(f"error: cannot write the stand-in tokenizers under {hf_home}: {exc}", file=sys.stderr)
        return 1
    base_url = args.base_url or (f"http://127.0.0.1:{os.environ['FWEMU_PORT']}" if os.environ.get("FWEMU_PORT")
                                 else LOCAL_BASE_URL)
    sys.stdout.write(render(environment(base_url, args.api_key, hf_home)))
    return 0
