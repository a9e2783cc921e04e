"""The sampler and the completions request rules as pure functions (a fixed logits table, no server)."""

from __future__ import annotations

import math

import pytest
import torch

from fwemu.client.tokenizer import EOS_ID, VOCAB_SIZE, encode
from fwemu.emulator.deployments import completions, sampler, states
from fwemu.emulator.deployments.sampling_params import SamplingParams
from fwemu.emulator.inspect import Kind


def table_logits(ids: list[int]) -> torch.Tensor:
    """A deterministic stand-in 'model': the logits at each position depend on the token there."""
    gen = torch.Generator().manual_seed(1234)
    table = torch.randn(VOCAB_SIZE, VOCAB_SIZE, generator=gen) * 3
    return table[torch.tensor(ids)]


def run(params: SamplingParams, seed: int | None = 7, prompt=(65, 66)):
    c = sampler.generate(table_logits, list(prompt), params, sampler.seeded_generator(seed, 0), 64)
    sampler.score(table_logits, list(prompt), c, params.top_logprobs)
    return c


def test_seeded_sampling_is_reproducible_and_seeds_differ():
    p = SamplingParams(max_tokens=20, ignore_eos=True)
    assert run(p, 7).tokens == run(p, 7).tokens
    assert run(p, 7).tokens != run(p, 8).tokens
    assert sampler.seeded_generator(7, 0).initial_seed() != sampler.seeded_generator(7, 1).initial_seed()


def test_greedy_and_top_k_1_pick_the_argmax():
    greedy = run(SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True))
    topk1 = run(SamplingParams(max_tokens=10, top_k=1, ignore_eos=True), seed=99)
    assert greedy.tokens == topk1.tokens
    ids = [65, 66] + greedy.tokens
    assert all(int(torch.argmax(table_logits(ids[: 2 + i])[-1])) == t for i, t in enumerate(greedy.tokens))
    assert greedy.sampling_logprobs == [0.0] * 10 and topk1.sampling_logprobs == [0.0] * 10


def test_logprobs_are_raw_and_sampling_logprobs_follow_the_filter():
    c = run(SamplingParams(max_tokens=8, temperature=0.7, top_k=5, top_logprobs=3, ignore_eos=True))
    ids = [65, 66] + c.tokens
    for i, tok in enumerate(c.tokens):
        row = table_logits(ids[: 2 + i])[-1]
        assert c.logprobs[i] == pytest.approx(float(torch.log_softmax(row, -1)[tok]), abs=1e-5)
        kept = torch.topk(row / 0.7, 5).values
        expected = float(row[tok] / 0.7 - torch.logsumexp(kept.double(), 0))
        assert c.sampling_logprobs[i] == pytest.approx(expected, abs=1e-5)
        assert [t for t, _ in c.top[i]] == torch.topk(row, 3).indices.tolist()


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0])
    probs = torch.softmax(logits.double(), 0)
    dist = sampler.filtered_logprobs(logits, SamplingParams(top_p=float(probs[0] + probs[1] - 1e-9)))
    assert torch.isfinite(dist).tolist() == [True, True, False, False]
    assert math.isclose(float(dist.exp().sum()), 1.0, rel_tol=1e-9)


def scripted(text: bytes, prompt_len: int):
    """Logits that make `text` (then EOS) overwhelmingly likely, one byte per step."""
    script = list(text) + [EOS_ID]

    def logits(ids: list[int]) -> torch.Tensor:
        out = torch.zeros(len(ids), VOCAB_SIZE)
        for pos in range(len(ids)):
            k = pos + 1 - prompt_len
            if 0 <= k < len(script):
                out[pos, script[k]] = 30.0
        return out
    return logits


def test_stops_and_finish_reasons():
    fn = scripted(b"hello world", 1)

    def gen(**kw):
        return sampler.generate(fn, [65], SamplingParams(**kw), sampler.seeded_generator(0, 0), 64)

    eos = gen(max_tokens=40)
    assert (eos.text, eos.finish_reason, eos.tokens[-1]) == ("hello world", "stop", EOS_ID)
    assert gen(max_tokens=5).finish_reason == "length" and gen(max_tokens=5).text == "hello"
    by_id = gen(max_tokens=40, stop_ids=frozenset({ord(" ")}))
    assert by_id.tokens == list(b"hello ") and by_id.finish_reason == "stop"
    by_str = gen(max_tokens=40, stop_strings=("lo w",))
    assert (by_str.text, by_str.finish_reason, by_str.tokens) == ("hel", "stop", list(b"hello w"))
    ignored = gen(max_tokens=14, ignore_eos=True)
    assert len(ignored.tokens) == 14 and ignored.finish_reason == "length"


def test_context_window_ends_with_length():
    c = sampler.generate(table_logits, [65] * 60, SamplingParams(max_tokens=50, ignore_eos=True),
                         sampler.seeded_generator(1, 0), 64)
    assert len(c.tokens) == 4 and c.finish_reason == "length"


def test_request_rules():
    req = completions.parse({"model": "accounts/a/deployments/d", "prompt": "hi", "logprobs": 2, "stop": [10, "x"]})
    assert req.prompt == encode("hi") and req.params.top_logprobs == 2 and req.logprobs
    assert req.params.stop_ids == {10} and req.params.stop_strings == ("x",)
    for bad, text in [({"routing_matrix_format": "parquet_v1"}, "Extra inputs are not permitted, field: "
                                                                "'routing_matrix_format'"),
                      ({"prompt": [-1]}, "token ids"), ({"prompt": [1 << 30]}, "token ids"), ({"top_p": 0}, "top_p"),
                      ({"temperature": -1}, "temperature"), ({"presence_penalty": 0.5}, "presence_penalty"),
                      ({"echo": "yes"}, "echo"), ({"n": 0}, "n must")]:
        with pytest.raises(completions.CompletionError) as err:
            completions.parse({"model": "m", "prompt": [1], **bad})
        assert text in err.value.message and err.value.body()["error"]["code"] == "invalid_request_error"


def test_sse_stream_text_joins_to_the_final_text():
    req = completions.parse({"model": "m", "prompt": [65], "stream": True, "logprobs": True})
    c = sampler.Completion(tokens=list("héllo".encode()) + [EOS_ID], sampling_logprobs=[-1.0] * 7,
                           finish_reason="stop", text="héllo", logprobs=[-0.5] * 7)
    import json

    events = [e.decode() for e in completions.sse_events(req, [c], "cmpl-x")]
    assert events[-1] == "data: [DONE]\n\n"
    chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
    text = "".join(ch["text"] for chunk in chunks for ch in chunk["choices"])
    assert text == "héllo"
    assert chunks[-2]["choices"][0]["raw_output"]["completion_token_ids"] == c.tokens
    assert chunks[-1]["usage"]["completion_tokens"] == 7


@pytest.mark.parametrize("kind,meta,current,full,base,expected", [
    (Kind.INFERENCE_BASE, None, None, False, None, "full"),
    (Kind.INFERENCE_BASE, {"x": 1}, None, False, None, "INCREMENTAL_ON_BASE"),
    (Kind.INFERENCE_LORA, None, "s0", True, None, "lora"),
    (Kind.INFERENCE_LORA, {"x": 1}, None, False, None, "INCREMENTAL_ON_LORA"),
    (Kind.INFERENCE_ARC_V2, None, "s0", True, "s0", "DELTA_WITHOUT_METADATA"),
    (Kind.INFERENCE_ARC_V2, "ok", "s0", True, "s0", "delta"),
    (Kind.INFERENCE_ARC_V2, "ok", "s1", True, "s0", "CHAIN_MISMATCH"),
    (Kind.INFERENCE_ARC_V2, "ok", "s0", True, "s9", "CHAIN_MISMATCH"),
    (Kind.INFERENCE_ARC_V2, "ok", "s0", False, "s0", "CHAIN_MISMATCH"),
    (Kind.TRAINING, None, None, False, None, "NOT_A_SAMPLER_SNAPSHOT"),
    (None, None, None, False, None, "SNAPSHOT_REJECTED"),
    (Kind.INFERENCE_ARC_V2, "ok", "snap", True, "s0", "current"),     # already served: nothing to do
    (Kind.INFERENCE_BASE, None, "snap", True, None, "current"),
    (Kind.TRAINING, None, "snap", True, None, "NOT_A_SAMPLER_SNAPSHOT"),
])
def test_hot_load_plan(kind, meta, current, full, base, expected):
    if meta == "ok":
        meta = {"previous_snapshot_identity": "s0", "compression_format": "arc_v2", "checksum_format": "alder32"}
    plan = states.plan_hot_load(kind, "snap", current, full, meta, base)
    assert (plan if isinstance(plan, str) else plan.reason) == expected


def test_update_mask_rules():
    rec = states.new_record("a", "d", {"baseModel": "accounts/fireworks/models/m", "enableHotLoad": True},
                            accept_shapeless_risk=True)
    assert rec["hotLoadTransitionType"] == "ASYNC" and rec["maxReplicaCount"] == 1
    scaled = states.apply_update(rec, "a", {"minReplicaCount": 0, "maxReplicaCount": 0},
                                 states.mask_fields(None, {"minReplicaCount": 0, "maxReplicaCount": 0}))
    assert scaled["maxReplicaCount"] == 0 and scaled["baseModel"] == rec["baseModel"]
    with pytest.raises(states.RuleError, match="another account"):
        states.apply_update(rec, "a", {"hotLoadTrainerJob": "accounts/b/rlorTrainerJobs/j"}, ["hotLoadTrainerJob"])
    with pytest.raises(states.RuleError, match="not a deployment field"):
        states.mask_fields("no_such_field", {})
    with pytest.raises(states.RuleError, match="larger than"):
        states.apply_update(rec, "a", {"minReplicaCount": 2}, ["minReplicaCount"])


def test_pod_identity_changes_exactly_when_the_attachment_changes():
    """SDK 1.2.9's reattach_trainer waits for replicas[0].identity to change after its PATCH."""
    rec = {"name": "accounts/a/deployments/d1", "hotLoadTrainerJob": "accounts/a/rlorTrainerJobs/j1"}
    same = states.pod_identity({**rec, "maxReplicaCount": 3})
    assert states.pod_identity(rec) == same and same.startswith("d1-")
    moved = states.pod_identity({**rec, "hotLoadTrainerJob": "accounts/a/rlorTrainerJobs/j2"})
    retyped = states.pod_identity({**rec, "hotLoadTransitionType": "SYNC"})
    assert len({same, moved, retyped, states.pod_identity({"name": rec["name"]})}) == 4
