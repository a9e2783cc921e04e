"""Byte-level tokenizer of the emulator's stand-in model (pure Python, no torch).

The emulator trains a tiny LLaMA whatever base model a job names, so it needs a tokenizer
that both the recipe (client side) and the trainer agree on without any download:

    ids 0..255  the raw UTF-8 bytes
    256         BOS  (begin of sequence)
    257         EOS  (end of a turn / sequence)
    258         PAD  (padding; never a training target)
    vocabulary  259

Chat template for ``{"messages": [{"role", "content"}, ...]}``::

    BOS  "<|role|>\\n" content EOS  "<|role|>\\n" content EOS ...

Only assistant turns are trained on: their content and closing EOS get weight 1, everything
else (BOS, role headers, other turns) weight 0. ``datum_from_tokens`` turns a rendered
sequence into a wire ``Datum`` with the next-token shift applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

BOS_ID = 256
EOS_ID = 257
PAD_ID = 258
VOCAB_SIZE = 259
SPECIAL_IDS = frozenset({BOS_ID, EOS_ID, PAD_ID})

_SPECIAL_TEXT = {BOS_ID: "<s>", EOS_ID: "</s>", PAD_ID: "<pad>"}


def encode(text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    """UTF-8 bytes of ``text`` as ids, optionally wrapped in BOS/EOS."""
    ids = list(text.encode("utf-8"))
    if add_bos:
        ids.insert(0, BOS_ID)
    if add_eos:
        ids.append(EOS_ID)
    return ids


def decode(ids: Iterable[int], *, skip_special: bool = True) -> str:
    """Inverse of ``encode``; invalid UTF-8 becomes U+FFFD instead of raising."""
    out: list[str] = []
    buf = bytearray()
    for i in ids:
        i = int(i)
        if 0 <= i < 256:
            buf.append(i)
            continue
        if i not in SPECIAL_IDS:
            raise ValueError(f"token id {i} is outside the byte tokenizer's vocabulary (0..{VOCAB_SIZE - 1})")
        out.append(buf.decode("utf-8", errors="replace"))
        buf.clear()
        if not skip_special:
            out.append(_SPECIAL_TEXT[i])
    out.append(buf.decode("utf-8", errors="replace"))
    return "".join(out)


@dataclass(frozen=True)
class ChatEncoding:
    """A rendered conversation: ``tokens`` and a same-length 0/1 ``weights`` mask."""

    tokens: list[int]
    weights: list[float]


def _header(role: str) -> list[int]:
    return encode(f"<|{role}|>\n")


def render_chat(example: Mapping, *, add_generation_prompt: bool = False) -> ChatEncoding:
    """Render ``{"messages": [...]}`` with the template above.

    ``add_generation_prompt`` appends an open assistant header (for sampling prompts).
    Raises ValueError on a malformed example so bad dataset rows are caught early.
    """
    messages = example.get("messages") if isinstance(example, Mapping) else None
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        raise ValueError('chat example must be {"messages": [{"role": ..., "content": ...}, ...]}')
    tokens = [BOS_ID]
    weights = [0.0]
    for n, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise ValueError(f"messages[{n}] must be an object with role and content")
        role, content = msg.get("role"), msg.get("content")
        if not isinstance(role, str) or not role or not role.replace("_", "").isalnum():
            raise ValueError(f"messages[{n}].role must be a non-empty word, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"messages[{n}].content must be a string")
        header = _header(role)
        body = encode(content) + [EOS_ID]
        tokens += header + body
        w = 1.0 if role == "assistant" else 0.0
        weights += [0.0] * len(header) + [w] * len(body)
    if add_generation_prompt:
        header = _header("assistant")
        tokens += header
        weights += [0.0] * len(header)
    return ChatEncoding(tokens, weights)


def datum_from_tokens(tokens: Sequence[int], weights: Sequence[float] | None = None) -> dict:
    """A wire ``Datum`` for next-token training on ``tokens``.

    Position i of the input predicts token i+1: inputs are ``tokens[:-1]``, targets
    ``tokens[1:]`` and the weights are shifted alike (a target's weight is its own).
    """
    if len(tokens) < 2:
        raise ValueError("a training sequence needs at least two tokens")
    if weights is None:
        weights = [1.0] * len(tokens)
    if len(weights) != len(tokens):
        raise ValueError("weights must have one entry per token")
    inputs = [int(t) for t in tokens[:-1]]
    targets = [int(t) for t in tokens[1:]]
    w = [float(x) for x in weights[1:]]
    n = len(targets)
    return {
        "model_input": {"chunks": [{"tokens": inputs, "type": "encoded_text"}]},
        "loss_fn_inputs": {
            "target_tokens": {"data": targets, "dtype": "int64", "shape": [n]},
            "weights": {"data": w, "dtype": "float32", "shape": [n]},
        },
    }


def chat_datum(example: Mapping) -> dict:
    """``render_chat`` followed by ``datum_from_tokens``: one SFT datum per conversation."""
    enc = render_chat(example)
    return datum_from_tokens(enc.tokens, enc.weights)
