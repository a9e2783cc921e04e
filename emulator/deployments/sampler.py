"""Token sampling from a logits function: temperature, top-k, top-p, stops, seeds (torch, no HTTP).

`generate` draws one completion. Each step takes the last position's logits from `logits_fn`
(the server passes a `kv_cache.CachedDecoder`, which computes only the new position) and
samples from the filtered distribution with a private `torch.Generator`, so a seed gives the
same tokens on every run and never touches torch's global RNG. What it reports per token:

* `sampling_logprob`: log-probability of the token under the distribution it was drawn from
  (after temperature, top-k and top-p; 0.0 for greedy decoding, whose distribution is a point);
* `logprob`: the raw model log-probability (temperature 1, no filter), computed afterwards in
  one pass over prompt + completion, exactly as the trainer's `forward` computes target
  log-probabilities, so the two agree bit for bit for the same weights and tokens. (The
  cached decoder's logits equal the full forward's only up to float32 rounding, so they are
  used to sample, never to report `logprob`.)

Stops: a stop token id ends the completion with that token included; a stop string ends it at
the token that completes the string, and the text is cut before the string. EOS always stops
unless `ignore_eos`. Otherwise `max_tokens` (or the context window) ends it with "length".
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from fwemu.client.tokenizer import EOS_ID

from .detokenize import Decode, decoder_for

from .sampling_params import Completion, SamplingParams

__all__ = ["Completion", "SamplingParams", "filtered_logprobs", "generate", "score", "seeded_generator"]

LogitsFn = Callable[[list[int]], torch.Tensor]  # ids -> float32 [positions, vocab]; generate reads the last


def filtered_logprobs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor | None:
    """Log-probabilities of the distribution actually sampled from; None means greedy."""
    if params.temperature == 0.0:
        return None
    logp = torch.log_softmax(logits.double() / params.temperature, dim=-1)
    keep = torch.ones_like(logp, dtype=torch.bool)
    if 0 < params.top_k < logp.numel():
        kth = torch.topk(logp, params.top_k).values[-1]
        keep &= logp >= kth
    if params.top_p < 1.0:
        order = torch.argsort(logp, descending=True)
        probs = logp[order].exp()
        before = torch.cumsum(probs, 0) - probs  # mass of the tokens ranked above each one
        in_nucleus = torch.zeros_like(keep)
        in_nucleus[order] = before < params.top_p
        keep &= in_nucleus
    masked = torch.where(keep, logp, torch.full_like(logp, -math.inf))
    return torch.log_softmax(masked, dim=-1)


def _stop_cut(text: str, stops: Sequence[str]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


def generate(logits_fn: LogitsFn, prompt: list[int], params: SamplingParams, generator: torch.Generator,
             context_limit: int, decode: Decode | None = None) -> Completion:
    """One completion of `prompt` (see the module docstring); tokens never exceed `context_limit`.

    `decode` turns ids into text (stop strings, the completion's text); default: the byte
    tokenizer plus placeholders for wider vocabularies (`detokenize`)."""
    decode = decode or decoder_for(None)
    ids, tokens, sampling_lps = list(prompt), [], []
    finish = "length"
    budget = min(params.max_tokens, max(0, context_limit - len(prompt)))
    for _ in range(budget):
        last = logits_fn(ids)[-1]
        dist = filtered_logprobs(last, params)
        if dist is None:
            tok, lp = int(torch.argmax(last)), 0.0
        else:
            tok = int(torch.multinomial(dist.exp().float().cpu(), 1, generator=generator))
            lp = float(dist[tok])
        ids.append(tok)
        tokens.append(tok)
        sampling_lps.append(lp)
        if tok in params.stop_ids or (tok == EOS_ID and not params.ignore_eos):
            finish = "stop"
            break
        if params.stop_strings and _stop_cut(decode(tokens), params.stop_strings) is not None:
            finish = "stop"
            break
    text = decode(tokens)
    cut = _stop_cut(text, params.stop_strings) if params.stop_strings else None
    if cut is not None:
        text = text[:cut]
    return Completion(tokens, sampling_lps, finish, text)


def score(logits_fn: LogitsFn, prompt: list[int], completion: Completion, top_logprobs: int = 0,
          echo: bool = False) -> None:
    """Fill `completion.logprobs` (and `.top`): the raw model log-probabilities of its tokens;
    with `echo` also `.prompt_logprobs` / `.prompt_top` of `prompt[1:]`.

    Same computation as the trainer's target log-probabilities for the datum
    (input = full[:-1], targets = full[1:]): one forward, log_softmax in float32, gather.
    """
    full = list(prompt) + completion.tokens
    first = 0 if echo else len(prompt) - 1   # the first row to report
    if len(full) < 2 or first >= len(full) - 1:
        return
    logp = torch.log_softmax(logits_fn(full[:-1]), dim=-1)[first:]
    targets = torch.tensor(full[first + 1:], dtype=torch.int64, device=logp.device)
    values = [float(v) for v in logp.gather(-1, targets[:, None])[:, 0].cpu()]
    top: list[list[tuple[int, float]]] = []
    if top_logprobs > 0:
        k = min(top_logprobs, logp.shape[-1])
        tv, ti = torch.topk(logp, k, dim=-1)
        top = [[(int(i), float(v)) for i, v in zip(ri.cpu(), rv.cpu())] for ri, rv in zip(ti, tv)]
    split = len(prompt) - 1 - first          # rows before `split` belong to the prompt
    completion.logprobs, completion.prompt_logprobs = values[split:], values[:split]
    if top:
        completion.top, completion.prompt_top = top[split:], top[:split]


def seeded_generator(seed: int | None, choice: int) -> torch.Generator:
    """Choice `i` of a seeded request always draws the same stream; no seed: a fresh random one."""
    gen = torch.Generator(device="cpu")
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed((int(seed) * 1_000_003 + choice) & ((1 << 63) - 1))
    return gen
