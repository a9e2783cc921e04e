"""What a completion request asks the sampler for, and what one sampled completion holds (no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_ids: frozenset[int] = frozenset()
    stop_strings: tuple[str, ...] = ()
    ignore_eos: bool = False
    top_logprobs: int = 0


@dataclass
class Completion:
    tokens: list[int]
    sampling_logprobs: list[float]
    finish_reason: str
    text: str = ""
    logprobs: list[float] = field(default_factory=list)
    top: list[list[tuple[int, float]]] = field(default_factory=list)
    prompt_logprobs: list[float] = field(default_factory=list)   # of prompt[1:], with echo
    prompt_top: list[list[tuple[int, float]]] = field(default_factory=list)
