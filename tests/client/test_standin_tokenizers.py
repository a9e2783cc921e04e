"""Stand-in tokenizers (issue 12 item 2): byte ids as client.tokenizer, each family's added
tokens as single ids in the family's order, and a hub cache AutoTokenizer resolves offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fwemu.client import tokenizer as byte_tok
from fwemu.client.standin_families import FAMILIES, REPOS, family_for, repo_for, vocab_size_for

pytest.importorskip("tokenizers", reason="stand-ins are built with the tokenizers package")

from tokenizers import pre_tokenizers  # noqa: E402

from fwemu.client.standin_tokenizers import (  # noqa: E402
    build_tokenizer, byte_alphabet, files_for, materialise, repo_cache_dir, revision_of)

ROOT = Path(__file__).resolve().parents[2]
_TOKENIZERS = {name: build_tokenizer(f) for name, f in FAMILIES.items()}


def test_byte_alphabet_is_the_byte_level_alphabet():
    alphabet = byte_alphabet()
    assert len(set(alphabet)) == 256 and set(alphabet) == set(pre_tokenizers.ByteLevel.alphabet())
    tok = _TOKENIZERS["qwen3"]
    assert [tok.token_to_id(ch) for ch in alphabet] == list(range(256))
    text = "".join(chr(c) for c in range(0x800))  # every 1- and 2-byte UTF-8 character
    assert tok.encode(text, add_special_tokens=False).ids == list(text.encode("utf-8"))
    assert tok.decode(list(text.encode("utf-8"))) == text


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40), st.sampled_from(sorted(FAMILIES)))
def test_plain_text_ids_equal_the_byte_tokenizer(text, family):
    tok = _TOKENIZERS[family]
    f = FAMILIES[family]
    if any(t in text for t in f.contents):
        return
    assert tok.encode(text, add_special_tokens=False).ids == byte_tok.encode(text)
    assert tok.decode(byte_tok.encode(text)) == text


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_added_tokens_are_single_ids_in_family_order(family):
    f, tok = FAMILIES[family], _TOKENIZERS[family]
    assert tok.get_vocab_size() == f.vocab_size == 256 + len(f.tokens)
    assert len(set(f.contents)) == len(f.contents)
    for i, content in enumerate(f.contents):
        assert tok.encode(content, add_special_tokens=False).ids == [256 + i]
        # inside text too, next to bytes that could glue onto it
        ids = tok.encode(f"a{content}b", add_special_tokens=False).ids
        assert ids == [ord("a"), 256 + i, ord("b")]
    assert f.eos_chat in f.contents and f.eos_base in f.contents
    if f.add_bos:
        assert tok.encode("hi").ids == [f.token_id(f.bos), ord("h"), ord("i")]


def test_family_orders_start_as_the_real_ones():
    assert FAMILIES["qwen3"].contents[:3] == ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
    assert FAMILIES["qwen3"].contents[-4:] == ("<tool_response>", "</tool_response>", "<think>", "</think>")
    assert FAMILIES["llama3"].contents[:2] == ("<|begin_of_text|>", "<|end_of_text|>")
    llama = FAMILIES["llama3"].contents
    assert llama.index("<|start_header_id|>") < llama.index("<|end_header_id|>") < llama.index("<|eot_id|>")


def test_lookup_of_hf_ids_and_fireworks_names():
    assert repo_for("qwen/qwen3-8b").hf_id == "Qwen/Qwen3-8B"
    cases = {"Qwen/Qwen3-8B": "qwen3", "accounts/fireworks/models/qwen3-8b": "qwen3",
             "accounts/fireworks/models/qwen3p5-9b": "qwen3_5", "Qwen/Qwen3.6-27B": "qwen3_5",
             "accounts/fireworks/models/qwen2p5-32b-instruct": "qwen2_5",
             "accounts/fireworks/models/llama-v3p1-8b-instruct": "llama3", "meta-llama/Llama-3.2-1B": "llama3",
             "accounts/fireworks/models/deepseek-v3p1": "deepseek_v3", "openai/gpt-oss-120b": "gpt_oss",
             "accounts/fireworks/models/gpt-oss-20b": "gpt_oss"}
    for name, family in cases.items():
        assert family_for(name).name == family, name
    for unknown in ("accounts/acme/models/house-lm", "", "moonshotai/Kimi-K2.5"):
        assert family_for(unknown) is None and vocab_size_for(unknown, 259) == 259
    assert vocab_size_for("Qwen/Qwen3-8B", 259) == 256 + len(FAMILIES["qwen3"].tokens)
    assert vocab_size_for("Qwen/Qwen3-8B", 100_000) == 100_000  # a wider explicit vocabulary stays


def test_files_are_deterministic_and_name_their_roles():
    repo = repo_for("Qwen/Qwen3-8B-Base")
    files = files_for(repo)
    assert files == files_for(repo) and len(revision_of(files)) == 40
    cfg = json.loads(files["tokenizer_config.json"])
    assert cfg["eos_token"] == "<|endoftext|>" and cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert json.loads(files_for(repo_for("Qwen/Qwen3-8B"))["special_tokens_map.json"])["eos_token"] == "<|im_end|>"
    assert cfg["added_tokens_decoder"]["258"]["content"] == "<|im_end|>"


def test_materialise_is_a_hub_cache_and_idempotent(tmp_path):
    snaps = materialise(tmp_path)
    assert set(snaps) == {r.hf_id for r in REPOS}
    root = repo_cache_dir(tmp_path / "hub", "Qwen/Qwen3-8B")
    rev = (root / "refs" / "main").read_text()
    assert snaps["Qwen/Qwen3-8B"] == root / "snapshots" / rev
    assert sorted(p.name for p in snaps["Qwen/Qwen3-8B"].iterdir()) == [
        "config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert materialise(tmp_path) == snaps
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before


_LOAD_ALL = r"""
import json, sys
from transformers import AutoTokenizer
out = {}
for hf_id, contents in json.loads(sys.argv[1]).items():
    tok = AutoTokenizer.from_pretrained(hf_id)
    out[hf_id] = {"single": [tok.encode(c, add_special_tokens=False) for c in contents],
                  "bytes": tok.encode("hé!", add_special_tokens=False), "eos": tok.eos_token,
                  "len": len(tok), "path": tok.name_or_path,
                  "chat": tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
                          if tok.chat_template else None}
print(json.dumps(out))
"""


def offline_env(hf_home: Path, home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HOME=str(home), HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=str(ROOT))
    return env


def test_auto_tokenizer_resolves_every_table_id_offline(tmp_path):
    pytest.importorskip("transformers", reason="AutoTokenizer comes from transformers")
    hf_home, home = tmp_path / "hf", tmp_path / "home"
    home.mkdir()
    materialise(hf_home)
    want = {r.hf_id: list(FAMILIES[r.family].contents) for r in REPOS}
    proc = subprocess.run([sys.executable, "-c", _LOAD_ALL, json.dumps(want)], env=offline_env(hf_home, home),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for repo in REPOS:
        fam, g = FAMILIES[repo.family], got[repo.hf_id]
        assert g["single"] == [[256 + i] for i in range(len(fam.tokens))], repo.hf_id
        assert g["bytes"] == list("hé!".encode()) and g["eos"] == repo.eos and g["len"] == fam.vocab_size
        if fam.chat_template:
            assert "hi" in g["chat"]
    assert not any(home.iterdir())  # nothing was written into HOME
