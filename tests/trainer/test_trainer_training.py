"""TrainerModel training semantics: learning, accumulation, normalisation, Adam(W), clipping, metrics."""

from __future__ import annotations

import copy

import pytest
import torch

from fwemu.client.standin_families import family_for
from fwemu.client.tokenizer import datum_from_tokens, encode
from fwemu.emulator.trainer.model_session import TrainerModel, TrainerUserError
from tests.trainer.trainer_helpers import ADAM, BASE, SMALL, sft_batch, train


def grads(m: TrainerModel) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in m.model.named_parameters() if p.requires_grad}


def weights(m: TrainerModel) -> dict[str, torch.Tensor]:
    return {n: t.detach().cpu().clone() for n, t in m.trainable_state_dict().items()}


def first_moments(m: TrainerModel) -> dict[str, torch.Tensor]:
    """Adam's exp_avg per parameter: after one step it is (1 - beta1) * the gradient the step used.

    Tests compare these rather than the updated weights: Adam's first update is g / (|g| + eps),
    which turns last-bit differences in near-zero gradient elements into visible weight
    differences whose size depends on the CPU's float kernels (AVX2 vs AVX-512).
    """
    return {n: m.optimizer.state[p]["exp_avg"].detach().clone() for n, p in m._trainable}


def assert_moments_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float) -> None:
    assert a and set(a) == set(b)
    for n, t in a.items():
        torch.testing.assert_close(b[n], t, rtol=rtol, atol=rtol * float(t.abs().max()))


def test_loss_falls_full_and_lora():
    batch = sft_batch(4)
    full = train(TrainerModel(BASE, size=SMALL), batch, 20)
    lora = train(TrainerModel(BASE, lora_rank=8, size=SMALL), batch, 20)
    assert full[-1] < 0.5 * full[0], full
    # A rank-8 adapter on a random base has far less capacity; it still must clearly learn.
    assert lora[-1] < 0.9 * lora[0], lora


def test_fresh_lora_matches_its_base_and_only_adapters_train():
    batch = sft_batch(3)
    full, lora = TrainerModel(BASE, size=SMALL), TrainerModel(BASE, lora_rank=4, size=SMALL)
    # B starts at zero: the adapter changes nothing until the first step.
    assert full.forward(batch, "cross_entropy")["metrics"] == lora.forward(batch, "cross_entropy")["metrics"]
    frozen = {n: p.detach().clone() for n, p in lora.model.named_parameters() if not p.requires_grad}
    train(lora, batch, 2)
    assert all(torch.equal(p, frozen[n]) for n, p in lora.model.named_parameters() if not p.requires_grad)
    assert set(lora.trainable_state_dict()) == {n for n in dict(lora.model.named_parameters()) if ".lora_" in n}
    assert len(lora.trainable_state_dict()) == 2 * 7 * SMALL.num_layers


def test_gradient_accumulation_equals_one_call_and_commutes():
    d = sft_batch(2)
    split, joint, reverse = (TrainerModel(BASE, size=SMALL) for _ in range(3))
    l0 = split.forward_backward(d[:1], "cross_entropy")["metrics"]["loss:sum"]
    l1 = split.forward_backward(d[1:], "cross_entropy")["metrics"]["loss:sum"]
    both = joint.forward_backward(d, "cross_entropy")["metrics"]["loss:sum"]
    reverse.forward_backward(d[1:], "cross_entropy")
    reverse.forward_backward(d[:1], "cross_entropy")
    assert l0 + l1 == pytest.approx(both, rel=1e-6)
    g_split, g_joint, g_rev = grads(split), grads(joint), grads(reverse)
    for n in g_joint:
        torch.testing.assert_close(g_split[n], g_joint[n], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g_rev[n], g_split[n], rtol=1e-5, atol=1e-6)
    # ...and the step that follows agrees too.
    for m in (split, joint):
        m.optim_step(ADAM)
    assert_moments_close(first_moments(joint), first_moments(split), rtol=1e-5)


def test_forward_leaves_gradients_alone():
    m = TrainerModel(BASE, size=SMALL)
    out = m.forward(sft_batch(2), "cross_entropy")
    assert out["metrics"]["loss:sum"] > 0
    assert all(p.grad is None for p in m.model.parameters())


@pytest.mark.parametrize("mode", ["num_loss_tokens", "num_sequences"])
def test_grad_accumulation_normalization_divides_by_the_count(mode):
    batch = sft_batch(3)
    n_tokens = sum(sum(1 for w in d["loss_fn_inputs"]["weights"]["data"] if w) for d in batch)
    divisor = n_tokens if mode == "num_loss_tokens" else len(batch)
    scaled = copy.deepcopy(batch)
    for d in scaled:
        w = d["loss_fn_inputs"]["weights"]
        w["data"] = [x / divisor for x in w["data"]]
    # eps >> |g| makes the first Adam step ~ lr * g / eps: the weights then show the gradient's scale.
    sgd_like = {"learning_rate": 1.0, "eps": 1.0}
    a, b = TrainerModel(BASE, size=SMALL), TrainerModel(BASE, size=SMALL)
    a.forward_backward(batch, "cross_entropy")
    ma = a.optim_step(sgd_like, grad_accumulation_normalization=mode)["metrics"]
    b.forward_backward(scaled, "cross_entropy")
    mb = b.optim_step(sgd_like, grad_accumulation_normalization="none")["metrics"]
    assert ma["grad_norm:mean"] == pytest.approx(mb["grad_norm:mean"], rel=1e-4)
    assert ma["loss_tokens:sum"] == n_tokens
    for n, t in weights(a).items():
        torch.testing.assert_close(weights(b)[n], t, rtol=1e-4, atol=1e-6)


def test_weight_decay_is_decoupled():
    m = TrainerModel(BASE, size=SMALL)
    before = weights(m)
    # No gradients: Adam's update is exactly 0, only AdamW's decay p *= 1 - lr * wd acts.
    m.optim_step({"learning_rate": 0.1, "weight_decay": 0.5, "eps": 1e-8})
    for n, t in weights(m).items():
        torch.testing.assert_close(t, before[n] * (1 - 0.1 * 0.5), rtol=0, atol=0)
    assert m.step == 1


def test_grad_clip_scales_gradients_to_the_norm():
    batch = sft_batch(2)
    probe = TrainerModel(BASE, size=SMALL)
    probe.forward_backward(batch, "cross_entropy")
    norm = probe.optim_step({"learning_rate": 0.0})["metrics"]["grad_norm:mean"]
    clip = norm / 10
    clipped, scaled = TrainerModel(BASE, size=SMALL), TrainerModel(BASE, size=SMALL)
    clipped.forward_backward(batch, "cross_entropy")
    metrics = clipped.optim_step(dict(ADAM, grad_clip_norm=clip, weight_decay=0.0))["metrics"]
    assert metrics["grad_norm:mean"] == pytest.approx(norm, rel=1e-5)  # reported before clipping
    small = copy.deepcopy(batch)
    for d in small:
        d["loss_fn_inputs"]["weights"]["data"] = [x * clip / norm for x in d["loss_fn_inputs"]["weights"]["data"]]
    scaled.forward_backward(small, "cross_entropy")
    scaled.optim_step(dict(ADAM, grad_clip_norm=0.0, weight_decay=0.0))
    first = first_moments(clipped)
    assert_moments_close(first, first_moments(scaled), rtol=1e-4)
    # The clipped step's gradient has the requested global norm.
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in first.values()]))
    assert float(total) / (1 - ADAM.get("beta1", 0.9)) == pytest.approx(clip, rel=1e-4)


def test_output_shape_and_metric_keys():
    m = TrainerModel(BASE, size=SMALL)
    batch = sft_batch(3)
    out = m.forward_backward(batch, "cross_entropy")
    assert out["loss_fn_output_type"] == "ArrayRecord"
    assert len(out["loss_fn_outputs"]) == len(batch)
    for d, o in zip(batch, out["loss_fn_outputs"]):
        n = len(d["model_input"]["chunks"][0]["tokens"])
        assert o["logprobs"]["shape"] == [n] and o["logprobs"]["dtype"] == "float32"
        assert all(lp <= 0 for lp in o["logprobs"]["data"])
        # loss:sum is the weighted NLL summed over datums.
    nll = sum(-lp * w for d, o in zip(batch, out["loss_fn_outputs"])
              for lp, w in zip(o["logprobs"]["data"], d["loss_fn_inputs"]["weights"]["data"]))
    assert out["metrics"]["loss:sum"] == pytest.approx(nll, rel=1e-5)
    step = m.optim_step(ADAM)
    for key in list(out["metrics"]) + list(step["metrics"]):
        assert key.count(":") == 1, key
    assert {"grad_norm:mean", "step:max"} <= set(step["metrics"])
    for ppo_key in m.forward_backward(_policy_batch(m), "ppo")["metrics"]:
        assert ppo_key.count(":") == 1, ppo_key


def _policy_batch(m: TrainerModel, advantages=(1.0, -0.5), shift: float = 0.0) -> list[dict]:
    """Datums whose sampling logprobs are the model's own (+ shift), so the ratio is exp(-shift)."""
    batch = sft_batch(len(advantages))
    current = m.forward(batch, "cross_entropy")["loss_fn_outputs"]
    for d, o, adv in zip(batch, current, advantages):
        n = len(o["logprobs"]["data"])
        d["loss_fn_inputs"] = {
            "target_tokens": d["loss_fn_inputs"]["target_tokens"],
            "logprobs": [x + shift for x in o["logprobs"]["data"]],
            "advantages": [adv] * n,
        }
    return batch


def test_importance_sampling_and_ppo_at_ratio_one_are_policy_gradient():
    m = TrainerModel(BASE, size=SMALL)
    batch = _policy_batch(m)
    ref = TrainerModel(BASE, size=SMALL)
    # -sum(A * logp) has the same gradient as the IS objective at ratio 1.
    pg = copy.deepcopy(batch)
    for d in pg:
        adv = d["loss_fn_inputs"]["advantages"]
        d["loss_fn_inputs"] = {"target_tokens": d["loss_fn_inputs"]["target_tokens"], "weights": adv}
    ref.forward_backward(pg, "cross_entropy")
    out = m.forward_backward(batch, "importance_sampling")
    n_tok = [len(o["logprobs"]["data"]) for o in out["loss_fn_outputs"]]
    assert out["metrics"]["loss:sum"] == pytest.approx(-(1.0 * n_tok[0] - 0.5 * n_tok[1]), rel=1e-4)
    assert out["metrics"]["importance_ratio:mean"] == pytest.approx(1.0, abs=1e-5)
    g_is, g_ref = grads(m), grads(ref)
    for n in g_ref:
        torch.testing.assert_close(g_is[n], g_ref[n], rtol=1e-4, atol=1e-6)
    m.optim_step({"learning_rate": 0.0})
    m.forward_backward(batch, "ppo")
    for n, g in grads(m).items():
        torch.testing.assert_close(g, g_ref[n], rtol=1e-4, atol=1e-6)


def test_ppo_clips_large_ratios():
    m = TrainerModel(BASE, size=SMALL)
    # Sampling logprobs 1 nat below the model's: ratio e > 1.2 with positive advantage -> clipped, no gradient.
    out = m.forward_backward(_policy_batch(m, advantages=(1.0, 2.0), shift=-1.0), "ppo",
                             {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2})
    assert out["metrics"]["clip_fraction:mean"] == pytest.approx(1.0)
    assert all(float(g.abs().max()) == 0.0 for g in grads(m).values())
    n = sum(len(o["logprobs"]["data"]) * a for o, a in zip(out["loss_fn_outputs"], (1.0, 2.0)))
    assert out["metrics"]["loss:sum"] == pytest.approx(-1.2 * n, rel=1e-5)


def test_wire_tensor_forms_are_equivalent():
    tokens = encode("hello wire format", add_bos=True, add_eos=True)
    weights_ = [0.0] * 6 + [1.0] * (len(tokens) - 6)
    dense = datum_from_tokens(tokens, weights_)
    raw = copy.deepcopy(dense)
    raw["loss_fn_inputs"] = {k: v["data"] for k, v in raw["loss_fn_inputs"].items()}
    n = len(tokens) - 1
    nz = [i for i, w in enumerate(weights_[1:]) if w]
    csr = copy.deepcopy(dense)
    csr["loss_fn_inputs"]["weights"] = {  # [N] viewed as 1 x N, CSR
        "data": [1.0] * len(nz), "dtype": "float32", "shape": [1, n],
        "sparse_crow_indices": [0, len(nz)], "sparse_col_indices": nz}
    m = TrainerModel(BASE, size=SMALL)
    a = m.forward([dense], "cross_entropy")
    b = m.forward([raw], "cross_entropy")
    assert a == b
    # A 2-D [N, K] target set: K=1 CSR weights must equal the dense 1-D datum.
    csr["loss_fn_inputs"]["target_tokens"] = {"data": dense["loss_fn_inputs"]["target_tokens"]["data"],
                                              "dtype": "int64", "shape": [n, 1]}
    csr["loss_fn_inputs"]["weights"]["shape"] = [n, 1]
    csr["loss_fn_inputs"]["weights"]["sparse_crow_indices"] = [0] + [sum(1 for j in nz if j <= i) for i in range(n)]
    csr["loss_fn_inputs"]["weights"]["sparse_col_indices"] = [0] * len(nz)
    c = m.forward([csr], "cross_entropy")
    assert c["metrics"]["loss:sum"] == pytest.approx(a["metrics"]["loss:sum"], rel=1e-6)
    assert c["loss_fn_outputs"][0]["logprobs"]["shape"] == [n, 1]


@pytest.mark.parametrize("where", ["input", "target", "negative"])
def test_out_of_vocabulary_tokens_are_user_errors(where):
    d = datum_from_tokens(encode("abc", add_bos=True))
    if where == "input":
        d["model_input"]["chunks"][0]["tokens"][1] = 300
    elif where == "target":
        d["loss_fn_inputs"]["target_tokens"]["data"][2] = 151643  # a Qwen id
    else:
        d["model_input"]["chunks"][0]["tokens"][0] = -1
    m = TrainerModel(BASE, size=SMALL)
    top = family_for(BASE).vocab_size - 1  # qwen3-8b: 256 bytes + the Qwen3 stand-in's added tokens
    with pytest.raises(TrainerUserError, match=rf"outside the vocabulary \(0\.\.{top}\).*qwen3 stand-in"
                                               r".*client\.tokenizer") as err:
        m.forward_backward([d], "cross_entropy")
    assert ("FWEMU_MODEL_SIZE=vocab=" in str(err.value)) == (where != "negative")
    assert all(p.grad is None for p in m.model.parameters())


def test_bad_requests_are_user_errors():
    m = TrainerModel(BASE, size=SMALL)
    d = sft_batch(1)
    with pytest.raises(TrainerUserError, match="supported: cross_entropy, importance_sampling, ppo"):
        m.forward_backward(d, "cispo")
    short = copy.deepcopy(d)
    short[0]["loss_fn_inputs"]["target_tokens"]["data"].pop()
    short[0]["loss_fn_inputs"]["target_tokens"]["shape"] = None
    with pytest.raises(TrainerUserError, match="aligned with the inputs"):
        m.forward_backward(short, "cross_entropy")
    with pytest.raises(TrainerUserError, match="advantages is required"):
        m.forward_backward([{**d[0], "loss_fn_inputs": {**d[0]["loss_fn_inputs"], "logprobs": [0.0] * 40}}],
                           "importance_sampling")
    with pytest.raises(TrainerUserError, match="beta1"):
        m.optim_step({"learning_rate": 1e-3, "beta1": 1.5})
    with pytest.raises(TrainerUserError, match="grad_accumulation_normalization"):
        m.optim_step(ADAM, grad_accumulation_normalization="per_batch")
    with pytest.raises(TrainerUserError, match="embeddings / contrastive"):
        m.forward(d, "cross_entropy", {"output": "embeddings", "pooling": "mean"})
    long = datum_from_tokens([65] * (SMALL.max_position_embeddings + 2))
    with pytest.raises(TrainerUserError, match="context of 2048 .*FWEMU_MODEL_SIZE"):
        m.forward_backward([long], "cross_entropy")
    with pytest.raises(TrainerUserError, match="encoded_text"):
        m.forward([{"model_input": {"chunks": [{"type": "image", "data": "x"}]}, "loss_fn_inputs": {}}], "cross_entropy")
    assert m.step == 0


def test_initial_weights_depend_on_base_model_only():
    a, b = TrainerModel(BASE, size=SMALL), TrainerModel(BASE, seed=7, size=SMALL)
    c = TrainerModel("accounts/fireworks/models/llama-v3p1-8b-instruct", size=SMALL)
    assert a.state_digest() == b.state_digest() != c.state_digest()
    la, lb = TrainerModel(BASE, lora_rank=4, size=SMALL), TrainerModel(BASE, lora_rank=4, seed=1, size=SMALL)
    assert la.state_digest() != lb.state_digest()
    assert la.state_digest() == TrainerModel(BASE, lora_rank=4, size=SMALL).state_digest()
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    TrainerModel(BASE, lora_rank=2, size=SMALL)
    assert torch.equal(torch.rand(1), before)  # init never touches the global RNG


def test_info_payload():
    m = TrainerModel(BASE, lora_rank=4, size=SMALL)
    assert m.info() == {"model_data": {"arch": "llama", "model_name": BASE}, "is_lora": True,
                        "lora_rank": 4, "model_name": BASE}
    m.model_id = "model-0"
    assert m.info()["model_id"] == "model-0"
