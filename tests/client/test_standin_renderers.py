"""The cookbook's own renderer for each table id builds a supervised example on its stand-in.

Runs the real cookbook (shared/cookbook, imported, never copied) and its tinker_cookbook
dependency in a subprocess with Hugging Face offline and a private HF_HOME, loading each
tokenizer the way the recipes do (training.utils.tokenizers.load_tokenizer). The cookbook is
found at $FWEMU_COOKBOOK, else shared/cookbook beside or inside the checkout; tinker_cookbook
must be importable, or sit in $FWEMU_COOKBOOK_DEPS (a pip --target directory).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fwemu.client.standin_families import FAMILIES, REPOS

pytest.importorskip("tokenizers", reason="stand-ins are built with the tokenizers package")

from fwemu.client.standin_tokenizers import materialise  # noqa: E402
from tests.client.test_standin_tokenizers import ROOT, offline_env  # noqa: E402

pytestmark = pytest.mark.compat

ALIAS = "thinkingmachineslabinc/meta-llama-3-instruct-tokenizer"   # tinker_cookbook's Llama 3 source


def _cookbook() -> Path | None:
    for cand in (os.environ.get("FWEMU_COOKBOOK"), ROOT / "shared" / "cookbook", ROOT.parent / "shared" / "cookbook"):
        if cand and (Path(cand) / "training" / "renderer").is_dir():
            return Path(cand)
    return None


def _pythonpath(cookbook: Path) -> str:
    parts = [str(ROOT), str(cookbook)]
    if os.environ.get("FWEMU_COOKBOOK_DEPS"):
        parts.append(os.environ["FWEMU_COOKBOOK_DEPS"])
    return os.pathsep.join(parts)


_RENDER_ALL = r"""
import json, sys
import training.renderer  # registers the cookbook's renderers
from training.utils.supervised import resolve_renderer_name
from training.utils.tokenizers import load_tokenizer
from tinker_cookbook.renderers import TrainOnWhat, get_renderer
from tinker_cookbook.tokenizer_utils import get_tokenizer

alias, ids = sys.argv[1], json.loads(sys.argv[2])
msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi é"},
        {"role": "assistant", "content": "Yo"}]
out = {}
for hf_id in ids:
    name = "llama3" if hf_id == alias else resolve_renderer_name(hf_id)
    tok = load_tokenizer(hf_id)
    renderer = get_renderer(name, tok)
    model_input, weights = renderer.build_supervised_example(msgs, train_on_what=TrainOnWhat.LAST_ASSISTANT_MESSAGE)
    tokens = model_input.to_ints()
    trained = [t for t, w in zip(tokens, weights.tolist()) if w > 0]
    out[hf_id] = {"renderer": name, "tokens": tokens, "trained": trained, "trained_text": tok.decode(trained),
                  "text": tok.decode(tokens), "tinker_source": get_tokenizer(hf_id).name_or_path}
print(json.dumps(out))
"""


def test_cookbook_renderers_build_supervised_examples_on_the_standins(tmp_path):
    cookbook = _cookbook()
    if cookbook is None:
        pytest.skip("the real cookbook is not here: set FWEMU_COOKBOOK or provide shared/cookbook")
    env = offline_env(tmp_path / "hf", tmp_path / "home")
    (tmp_path / "home").mkdir()
    env["PYTHONPATH"] = _pythonpath(cookbook)
    probe = subprocess.run([sys.executable, "-c", "import tinker_cookbook.renderers, training.utils"], env=env,
                           capture_output=True, text=True, timeout=300)
    if probe.returncode:
        pytest.skip("the cookbook's dependencies (tinker_cookbook 0.4.3, tinker, datasets... from its "
                    "requirements-pinned.txt) do not import; install them or point FWEMU_COOKBOOK_DEPS at a "
                    f"pip --target dir: {probe.stderr.strip().splitlines()[-1][:200]}")
    materialise(tmp_path / "hf")
    ids = [r.hf_id for r in REPOS]
    proc = subprocess.run([sys.executable, "-c", _RENDER_ALL, ALIAS, json.dumps(ids)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for repo in REPOS:
        family, g = FAMILIES[repo.family], got[repo.hf_id]
        assert all(0 <= t < family.vocab_size for t in g["tokens"]), repo.hf_id
        assert "Yo" in g["trained_text"] and "Be brief." in g["text"] and "Hi é" in g["text"], (repo.hf_id, g)
        if g["renderer"] != "role_colon":  # a chat renderer trains on its end-of-turn added token
            assert any(t >= 256 for t in g["trained"]), (repo.hf_id, g)
        if repo.hf_id.startswith("meta-llama/Llama-3"):
            assert g["tinker_source"] == ALIAS  # tinker_cookbook reads Llama 3 from the ungated copy
    assert not any((tmp_path / "home").iterdir())
