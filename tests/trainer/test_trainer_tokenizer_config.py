"""client.tokenizer and emulator.trainer.model_config: ids, chat masks, size parsing, no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fwemu.client import tokenizer as tok
from fwemu.client.standin_families import FAMILIES
from fwemu.emulator.trainer.model_config import ModelSize, hf_config


@given(st.text())
def test_encode_decode_round_trip(text):
    ids = tok.encode(text, add_bos=True, add_eos=True)
    assert ids[0] == tok.BOS_ID and ids[-1] == tok.EOS_ID
    assert all(0 <= i < tok.VOCAB_SIZE for i in ids)
    assert tok.decode(ids) == text


def test_special_ids_and_decode():
    assert (tok.BOS_ID, tok.EOS_ID, tok.PAD_ID, tok.VOCAB_SIZE) == (256, 257, 258, 259)
    assert tok.encode("é") == [0xC3, 0xA9]
    assert tok.decode([256, 104, 105, 257, 258], skip_special=False) == "<s>hi</s><pad>"
    assert tok.decode([0xC3]) == "\ufffd"  # invalid UTF-8 never raises
    with pytest.raises(ValueError, match="outside"):
        tok.decode([259])


def test_chat_template_masks_only_assistant_turns():
    example = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Yo"}, {"role": "user", "content": "Bye"},
                            {"role": "assistant", "content": "Ciao"}]}
    enc = tok.render_chat(example)
    assert len(enc.tokens) == len(enc.weights) and enc.tokens[0] == tok.BOS_ID
    trained = [t for t, w in zip(enc.tokens, enc.weights) if w == 1.0]
    assert trained == tok.encode("Yo") + [tok.EOS_ID] + tok.encode("Ciao") + [tok.EOS_ID]
    assert tok.decode(enc.tokens, skip_special=False) == (
        "<s><|system|>\nBe brief.</s><|user|>\nHi</s><|assistant|>\nYo</s><|user|>\nBye</s><|assistant|>\nCiao</s>")
    prompt = tok.render_chat({"messages": example["messages"][:2]}, add_generation_prompt=True)
    assert tok.decode(prompt.tokens).endswith("<|assistant|>\n") and not any(prompt.weights)
    for bad in ({}, {"messages": []}, {"messages": [{"role": "user"}]}, {"messages": [{"role": "a b", "content": ""}]}):
        with pytest.raises(ValueError):
            tok.render_chat(bad)


def test_datum_shift():
    d = tok.datum_from_tokens([256, 10, 11, 257], [0, 0, 1, 1])
    assert d["model_input"]["chunks"] == [{"tokens": [256, 10, 11], "type": "encoded_text"}]
    assert d["loss_fn_inputs"]["target_tokens"] == {"data": [10, 11, 257], "dtype": "int64", "shape": [3]}
    assert d["loss_fn_inputs"]["weights"]["data"] == [0.0, 1.0, 1.0]


def test_model_size_parsing_and_validation(monkeypatch):
    assert ModelSize.parse("hidden=64,layers=2") == ModelSize(hidden_size=64, num_layers=2)
    assert ModelSize.parse("num_heads=8, kv_heads=4, theta=500000").rope_theta == 500000.0
    monkeypatch.setenv("FWEMU_MODEL_SIZE", "hidden=32,intermediate=96")
    assert ModelSize.from_env() == ModelSize(hidden_size=32, intermediate_size=96)
    for bad in ("hidden", "depth=3", "hidden=abc", "hidden=100", "kv_heads=3", "vocab=100", "layers=0"):
        with pytest.raises(ValueError):
            ModelSize.parse(bad)
    assert 700_000 < ModelSize().num_parameters() < 1_200_000


def test_hf_config_fields():
    cfg = hf_config("accounts/fireworks/models/qwen3-8b", ModelSize(hidden_size=64, num_layers=2))
    assert cfg["model_type"] == "llama" and cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_key_value_heads"], cfg["head_dim"]) == (64, 2, 2, 16)
    assert (cfg["torch_dtype"], cfg["tie_word_embeddings"]) == ("float32", False)
    # a Qwen3 base model's stand-in covers the Qwen3 stand-in tokenizer; unknown names keep 259
    assert cfg["vocab_size"] == 256 + len(FAMILIES["qwen3"].tokens) > tok.VOCAB_SIZE
    assert hf_config("accounts/acme/models/my-own-lm", ModelSize(hidden_size=64, num_layers=2))["vocab_size"] == 259


def test_torch_free_modules_do_not_import_torch():
    code = ("import sys; import fwemu.client.tokenizer, fwemu.emulator.trainer, fwemu.emulator.trainer.model_config; "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
