"""Helpers for the trainer tests: a small model shape, fixed SFT batches, a training loop."""

from __future__ import annotations

from fwemu.client.tokenizer import chat_datum
from fwemu.emulator.trainer.model_config import ModelSize

# Small enough that a step takes a few milliseconds on one CPU core.
SMALL = ModelSize(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128)
BASE = "accounts/fireworks/models/qwen3-8b"
ADAM = {"learning_rate": 3e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.01, "grad_clip_norm": 1.0}

QA = [
    ("What is 2+2?", "4"),
    ("Name a colour.", "Blue."),
    ("Say hello.", "Hello there!"),
    ("Capital of France?", "Paris."),
    ("Opposite of up?", "Down."),
    ("Spell cat.", "c-a-t"),
]


def sft_batch(n: int = 4, offset: int = 0) -> list[dict]:
    """``n`` chat datums (user question, assistant answer) in wire format."""
    out = []
    for i in range(n):
        q, a = QA[(i + offset) % len(QA)]
        out.append(chat_datum({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}))
    return out


def train(model, batch: list[dict], steps: int, adam: dict | None = None) -> list[float]:
    """``steps`` rounds of forward_backward + optim_step; returns the losses seen."""
    seen = []
    for _ in range(steps):
        out = model.forward_backward(batch, "cross_entropy")
        seen.append(out["metrics"]["loss:sum"])
        model.optim_step(adam or ADAM)
    return seen
