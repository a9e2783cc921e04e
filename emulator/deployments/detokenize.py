"""Token ids -> text for a deployment's whole vocabulary (pure, no torch).

The stand-in model of a known family (Qwen, Llama 3, ...) has a wider vocabulary than the byte
tokenizer's 259 ids (`trainer.model_config.vocab_for`): ids 259 and up are the family's added
tokens (`client.standin_families`, id = 256 + index), so a sampler may draw them and a prompt
rendered with the family's stand-in tokenizer may contain them. `client.tokenizer.decode`
refuses those ids; this module decodes them as the family's token text, the text the stand-in
Hugging Face tokenizer gives them. Ids 0..258 keep the byte tokenizer's meaning (bytes, then
BOS / EOS / PAD), which is what the trainer and the sampler's EOS rule use.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Iterable

from fwemu.client.standin_families import BYTE_IDS, family_for
from fwemu.client.tokenizer import VOCAB_SIZE, decode as byte_decode

Decode = Callable[..., str]  # (ids, *, skip_special=True) -> str


@lru_cache(maxsize=64)
def _added(base_model: str | None) -> tuple[tuple[str, bool], ...]:
    family = family_for(base_model) if base_model else None
    return family.tokens if family else ()


def token_piece(token_id: int, base_model: str | None) -> tuple[str, bool]:
    """(text, special) of one id at or above the byte tokenizer's vocabulary."""
    added = _added(base_model)
    index = token_id - BYTE_IDS
    if 0 <= index < len(added):
        return added[index]
    return f"<|token_{token_id}|>", True  # a vocabulary widened by FWEMU_MODEL_SIZE vocab=


def decode(ids: Iterable[int], base_model: str | None = None, *, skip_special: bool = True) -> str:
    """Like `client.tokenizer.decode`, for every id of the deployment's vocabulary."""
    out: list[str] = []
    run: list[int] = []
    for i in ids:
        i = int(i)
        if i < VOCAB_SIZE:
            run.append(i)
            continue
        if run:
            out.append(byte_decode(run, skip_special=skip_special))
            run = []
        text, special = token_piece(i, base_model)
        if not (special and skip_special):
            out.append(text)
    if run:
        out.append(byte_decode(run, skip_special=skip_special))
    return "".join(out)


def decoder_for(base_model: str | None) -> Decode:
    """`decode` bound to one base model (what the sampler and the wire use)."""
    def bound(ids: Iterable[int], *, skip_special: bool = True) -> str:
        return decode(ids, base_model, skip_special=skip_special)
    return bound
