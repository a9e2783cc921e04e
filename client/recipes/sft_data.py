"""SFT examples from JSONL, turned into wire Datums with the byte tokenizer, in a seeded order.

Each line is `{"messages": [...]}` (only assistant turns are trained on) or `{"text": "..."}`
(every token is). `data_order` fixes which example every position of the run uses, so
`data_consumed` alone says where a resumed run continues.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from fwemu.client.tokenizer import datum_from_tokens, encode, render_chat


def load_examples(path: str | Path) -> list[dict]:
    """Parse the JSONL file; a bad line is a ValueError naming the file and line."""
    examples: list[dict] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: not JSON ({exc})") from None
            if not isinstance(row, dict) or not ("messages" in row or isinstance(row.get("text"), str)):
                raise ValueError(f'{path}:{lineno}: expected {{"messages": [...]}} or {{"text": "..."}}')
            examples.append(row)
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


def to_datum(example: dict, max_seq_len: int) -> dict:
    """One cross-entropy Datum; the sequence is cut so the model input is at most `max_seq_len`."""
    if "messages" in example:
        enc = render_chat(example)
        tokens, weights = enc.tokens, enc.weights
    else:
        tokens = encode(example["text"], add_bos=True, add_eos=True)
        weights = [1.0] * len(tokens)
    tokens, weights = tokens[: max_seq_len + 1], weights[: max_seq_len + 1]
    return datum_from_tokens(tokens, weights)


def weight_sum(datums: list[dict]) -> float:
    """Number of trained target tokens: the denominator of a mean per-token loss."""
    return sum(sum(d["loss_fn_inputs"]["weights"]["data"]) for d in datums)


def data_order(n_examples: int, epochs: int, seed: int) -> list[int]:
    """Example indices for the whole run: one seeded shuffle per epoch, concatenated."""
    order: list[int] = []
    for epoch in range(epochs):
        idx = list(range(n_examples))
        random.Random(f"fwemu-sft:{seed}:{epoch}").shuffle(idx)
        order.extend(idx)
    return order
