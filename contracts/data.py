"""Deterministic training data and the probe sequence the suite uses to compare weights.

Weights are compared black-box: two models hold the same weights when their forward-pass
logprobs on a fixed probe sequence are bitwise equal (true on CPU, where the emulator is
deterministic). That works over the wire against any target, with either driver.
"""

from __future__ import annotations

from fwemu.client.tokenizer import BOS_ID, EOS_ID, datum_from_tokens, encode

LEARNING_RATE = 1e-2  # large enough that every step moves every probe logprob


def example(job_seed: str, index: int) -> dict:
    """Data item `index` of a job's stream: the same for every attempt of the same job."""
    text = f"{job_seed}/{index}: the cat sat on mat {index * 7 % 13}"
    return datum_from_tokens([BOS_ID, *encode(text), EOS_ID])


def batch(job_seed: str, start: int, size: int) -> list[dict]:
    return [example(job_seed, i) for i in range(start, start + size)]


PROBE = datum_from_tokens([BOS_ID, *encode("probe: the quick brown fox jumps"), EOS_ID])


def probe_key(logprobs) -> tuple:
    return tuple(float(x) for x in logprobs)
