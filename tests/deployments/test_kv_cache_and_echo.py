"""The key/value-cached decoder against the full forward, echo scoring, and family-token text."""

from __future__ import annotations

import json

import pytest
import torch

from fwemu.client.standin_families import family_for
from fwemu.client.tokenizer import encode
from fwemu.emulator.deployments import completions, detokenize, engine, sampler
from fwemu.emulator.deployments.sampling_params import SamplingParams
from fwemu.emulator.trainer.lora import apply_lora
from tests.gateway.helpers import BASE

SIZES = ["hidden=32,layers=2,heads=4,kv_heads=2,intermediate=64", "hidden=32,layers=1,heads=2,kv_heads=2,intermediate=48"]


@pytest.fixture(params=SIZES)
def model_engine(request, monkeypatch):
    monkeypatch.setenv("FWEMU_MODEL_SIZE", request.param)
    return engine.base_engine(BASE)


@pytest.mark.parametrize("lora", [False, True])
def test_cached_decoder_gives_the_full_forward_logits(model_engine, lora):
    if lora:
        apply_lora(model_engine.model, 4, 8.0, seed=3)
        with torch.no_grad():  # non-zero B, so the adapter changes the logits
            for n, p in model_engine.model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(n)))
    ids = encode("key value cache", add_bos=True)
    dec = model_engine.decoder()
    prefill = dec.logits(ids[:5])
    full = model_engine.logits(ids)
    assert prefill.shape == (5, full.shape[1])
    torch.testing.assert_close(prefill, full[:5], rtol=0, atol=2e-5)
    for n in range(6, len(ids) + 1):             # one new position at a time
        step = dec.logits(ids[:n])
        assert step.shape == (1, full.shape[1])
        torch.testing.assert_close(step[0], full[n - 1], rtol=0, atol=2e-5)
    again = dec.logits(ids[:3] + [7, 8])           # not an extension: starts over
    torch.testing.assert_close(again, model_engine.logits(ids[:3] + [7, 8]), rtol=0, atol=2e-5)
    several = model_engine.decoder()
    several.logits(ids[:4])
    torch.testing.assert_close(several.logits(ids[:9]), full[4:9], rtol=0, atol=2e-5)  # masked multi-step


def test_cached_sampling_is_seeded_and_scored_by_the_full_forward(model_engine):
    prompt = encode("seeded", add_bos=True)
    p = SamplingParams(max_tokens=24, temperature=1.0, ignore_eos=True, top_logprobs=2)
    runs = []
    for _ in range(2):
        c = sampler.generate(model_engine.decoder().logits, prompt, p, sampler.seeded_generator(5, 0), 2048,
                             detokenize.decoder_for(BASE))
        sampler.score(model_engine.logits, prompt, c, 2)
        runs.append(c)
    assert runs[0].tokens == runs[1].tokens and len(runs[0].tokens) == 24
    full = prompt + runs[0].tokens
    logp = torch.log_softmax(model_engine.logits(full[:-1]), dim=-1)
    expected = [float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(runs[0].tokens)]
    assert runs[0].logprobs == expected                      # bit for bit: the full forward's values
    assert runs[0].sampling_logprobs == pytest.approx(expected, abs=1e-4)   # from the cached logits


def test_echo_scores_the_prompt_too(model_engine):
    prompt = encode("echo me", add_bos=True)
    c = sampler.generate(model_engine.decoder().logits, prompt, SamplingParams(max_tokens=3, ignore_eos=True),
                         sampler.seeded_generator(1, 0), 2048)
    plain = sampler.Completion(list(c.tokens), list(c.sampling_logprobs), c.finish_reason, c.text)
    sampler.score(model_engine.logits, prompt, plain)
    sampler.score(model_engine.logits, prompt, c, top_logprobs=1, echo=True)
    assert c.logprobs == plain.logprobs and len(c.prompt_logprobs) == len(prompt) - 1
    logp = torch.log_softmax(model_engine.logits(prompt + c.tokens[:-1]), dim=-1)
    assert c.prompt_logprobs == [float(logp[i, t]) for i, t in enumerate(prompt[1:])]

    req = completions.parse({"model": "m", "prompt": prompt, "echo": True, "logprobs": 1})
    choice = completions.response(req, [c], "cmpl-e")["choices"][0]
    rows = choice["logprobs"]["content"]
    assert choice["raw_output"]["completion_token_ids"] == prompt + c.tokens
    assert [r["token_id"] for r in rows] == prompt + c.tokens
    assert rows[0]["logprob"] == 0.0 and rows[0]["sampling_logprob"] is None
    assert [r["logprob"] for r in rows[1:len(prompt)]] == c.prompt_logprobs
    assert choice["text"] == "echo me" + c.text

    sreq = completions.parse({"model": "m", "prompt": prompt, "echo": True, "logprobs": True, "stream": True})
    chunks = [json.loads(e.decode()[len("data: "):]) for e in list(completions.sse_events(sreq, [c], "x"))[:-1]]
    streamed = [row for ch in chunks for choice in ch["choices"] for row in (choice.get("logprobs") or {}).get("content", [])]
    assert [r["token_id"] for r in streamed] == prompt + c.tokens
    assert "".join(ch2["text"] for ch in chunks for ch2 in ch["choices"]) == "echo me" + c.text


def test_family_tokens_decode_and_vocab_is_the_models():
    fam = family_for(BASE)
    think = fam.token_id("<think>")
    assert think >= 259
    assert detokenize.decode([104, 105, think, 33], BASE) == "hi<think>!"       # not special: kept
    endoftext_like = 256 + len(fam.tokens) - 1
    assert detokenize.decode([104, 300], None) == "h"                          # unknown wide id: special
    assert detokenize.decode([104, 300], None, skip_special=False) == "h<|token_300|>"
    assert detokenize.decode([endoftext_like], BASE) in ("", fam.tokens[-1][0])
    req = completions.parse({"model": "m", "prompt": [65, think], "stop": [think]})
    completions.check_vocab(req, fam.vocab_size)
    with pytest.raises(completions.CompletionError, match="outside the model's vocabulary"):
        completions.check_vocab(req, 259)
