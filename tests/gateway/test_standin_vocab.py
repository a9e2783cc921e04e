"""Issue 12 item 3 over the wire: a job's stand-in model takes every id of its base model's
stand-in tokenizer with no setting, and an id past it fails as a user error that names the
range and how to widen it. FWEMU_MODEL_SIZE here (conftest) sets no vocab."""

from __future__ import annotations

import itertools

import pytest

from fwemu.client.standin_families import FAMILIES, family_for
from tests.gateway.helpers import Gateway, fb_body

pytest.importorskip("tokenizers", reason="the stand-in tokenizers are built with the tokenizers package")

from fwemu.client.standin_tokenizers import build_tokenizer  # noqa: E402


def _model(gw: Gateway, job_id: str, base: str) -> str:
    job = gw.create_job(job_id, base_model=base)
    body = {"session_id": gw.session(job), "model_seq_id": 0, "base_model": base,
            "lora_config": {"rank": 0, "train_unembed": True, "train_mlp": True, "train_attn": True},
            "type": "create_model"}
    model = gw.ok(job, "create_model", body)["model_id"]
    gw._seq[(job, model)] = itertools.count(1)
    return model


def _fb(gw: Gateway, job: str, model: str, tokens: list[int]) -> dict:
    """One forward_backward on ``tokens``; its future's final payload (result or user error)."""
    return gw.result(job, gw.submit(job, "forward_backward", fb_body(model, gw.seq(job, model), [_datum(tokens)])))


def _datum(tokens: list[int]) -> dict:
    n = len(tokens) - 1
    return {"model_input": {"chunks": [{"type": "encoded_text", "tokens": tokens[:-1]}]},
            "loss_fn_inputs": {"target_tokens": {"data": tokens[1:], "dtype": "int64", "shape": [n]},
                               "weights": {"data": [1.0] * n, "dtype": "float32", "shape": [n]}}}


@pytest.mark.parametrize("base", ["accounts/fireworks/models/qwen3-8b", "accounts/fireworks/models/llama-v3p1-8b-instruct",
                                  "accounts/fireworks/models/gpt-oss-20b"])
def test_every_standin_tokenizer_id_trains_and_one_past_is_a_user_error(gw, base):
    family = family_for(base)
    tok = build_tokenizer(family)
    # the tokenizer's own output, and every id it has (bytes + each added token)
    text = "".join(family.contents) + " héllo"
    tokens = tok.encode(text, add_special_tokens=True).ids
    assert max(tokens) == tok.get_vocab_size() - 1 == family.vocab_size - 1
    assert set(tokens) >= set(range(256, family.vocab_size))
    job = base.rsplit("/", 1)[-1]
    model = _model(gw, job, base)
    out = _fb(gw, job, model, tokens)
    assert "error" not in out and out["metrics"]["loss:sum"] > 0, out

    bad = _fb(gw, job, model, tokens + [family.vocab_size])
    assert bad["category"] == "user", bad
    msg = bad["error"]
    assert f"outside the vocabulary (0..{family.vocab_size - 1})" in msg
    assert f"{family.name} stand-in tokenizer" in msg and f"FWEMU_MODEL_SIZE=vocab={family.vocab_size + 1}" in msg


def test_unknown_base_model_keeps_the_byte_vocabulary(gw):
    base = "accounts/acme/models/house-lm"
    assert family_for(base) is None
    model = _model(gw, "house", base)
    ok = _fb(gw, "house", model, [256, 104, 105, 257, 258])
    assert "error" not in ok, ok
    bad = _fb(gw, "house", model, [256, 104, 259])
    assert bad["category"] == "user" and "(0..258)" in bad["error"] and "no known tokenizer family" in bad["error"]
    assert "FWEMU_MODEL_SIZE=vocab=260" in bad["error"]
    assert min(f.vocab_size for f in FAMILIES.values()) > 259  # every family widens the default
