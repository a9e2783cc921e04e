"""`fwemu env`: eval'd export lines give an offline, private-HF_HOME environment in which
AutoTokenizer loads the stand-ins, and the user's HOME (and its HF cache) stays untouched."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fwemu.client.commands import env_cmd

ROOT = Path(__file__).resolve().parents[2]


def test_render_quotes_values_for_sh():
    pairs = [("A", "plain"), ("B", "with space"), ("C", "it's $HOME `x` \"q\""), ("D", "")]
    text = env_cmd.render(pairs, unset=("ZAP",))
    out = subprocess.run(["sh", "-c", text + 'printf "%s\\n" "$A" "$B" "$C" "$D" "${ZAP-unset}"'],
                         env={"PATH": os.environ["PATH"], "ZAP": "set"}, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["plain", "with space", "it's $HOME `x` \"q\"", "", "unset"]
    assert all(line.startswith(("export ", "unset ")) for line in text.splitlines())


def test_environment_names_and_private_hf_home(tmp_path):
    names = dict(env_cmd.environment("http://h:1", "k", tmp_path / "hf"))
    assert names["FIREWORKS_BASE_URL"] == "http://h:1" and names["FIREWORKS_API_KEY"] == "k"
    assert (names["HF_HUB_OFFLINE"], names["TRANSFORMERS_OFFLINE"], names["TINKER_TELEMETRY"],
            names["WANDB_MODE"]) == ("1", "1", "0", "disabled")
    assert env_cmd.hf_home_for(Path("rel/dir")) == Path("rel/dir").resolve() / "hf-home"


_CHECK = r"""
import json, os
from transformers import AutoTokenizer
from huggingface_hub import constants
tok = AutoTokenizer.from_pretrained("Qwen/Qwen3-8B")
llama = AutoTokenizer.from_pretrained("meta-llama/Llama-3.1-8B-Instruct")
print(json.dumps({"im_end": tok.encode("<|im_end|>", add_special_tokens=False),
                  "eot": llama.encode("<|eot_id|>", add_special_tokens=False),
                  "hub_cache": constants.HF_HUB_CACHE, "offline": constants.HF_HUB_OFFLINE,
                  "env": {k: os.environ.get(k) for k in ("FIREWORKS_BASE_URL", "FIREWORKS_API_KEY", "HF_HOME",
                                                          "HF_HUB_CACHE", "WANDB_MODE", "TINKER_TELEMETRY")}}))
"""


def test_eval_fwemu_env_then_load_tokenizers_offline(tmp_path):
    pytest.importorskip("transformers", reason="AutoTokenizer comes from transformers")
    pytest.importorskip("tokenizers", reason="stand-ins are built with the tokenizers package")
    home = tmp_path / "home"
    real_cache = home / ".cache" / "huggingface" / "hub"
    (real_cache / "models--someone--theirs").mkdir(parents=True)
    (real_cache / "models--someone--theirs" / "marker").write_text("the user's own cache")
    before = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    data_dir = tmp_path / "data dir"           # a space: the value must be quoted
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    # a user environment that points the HF libraries at the real cache; fwemu env must undo it
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), HF_HUB_CACHE=str(real_cache),
               FIREWORKS_BASE_URL="https://api.fireworks.ai")
    script = (f"eval \"$({shlex.quote(sys.executable)} -m fwemu env --data-dir {shlex.quote(str(data_dir))} "
              f"--base-url http://127.0.0.1:8799 --api-key 'k y')\" && "
              f"exec {shlex.quote(sys.executable)} -c {shlex.quote(_CHECK)}")
    proc = subprocess.run(["sh", "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["im_end"] == [258] and got["eot"] == [256 + 9]
    hf_home = (data_dir / "hf-home").resolve()
    assert got["env"] == {"FIREWORKS_BASE_URL": "http://127.0.0.1:8799", "FIREWORKS_API_KEY": "k y",
                          "HF_HOME": str(hf_home), "HF_HUB_CACHE": None, "WANDB_MODE": "disabled",
                          "TINKER_TELEMETRY": "0"}
    assert got["hub_cache"] == str(hf_home / "hub") and got["offline"] is True
    assert (hf_home / "hub" / "models--Qwen--Qwen3-8B" / "refs" / "main").is_file()
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == before


def test_unwritable_data_dir_is_one_error_line(tmp_path):
    pytest.importorskip("tokenizers", reason="stand-ins are built with the tokenizers package")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = subprocess.run([sys.executable, "-m", "fwemu", "env", "--data-dir", str(blocker)],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("error: cannot write the stand-in tokenizers") and "Traceback" not in proc.stderr
