"""Shape of the stand-in model and its Hugging Face ``config.json`` (no torch here).

Every base model name (``accounts/fireworks/models/<id>``) trains the same small LLaMA-style
stand-in, so the emulator runs on a laptop CPU while its checkpoints keep the real formats.
The shape is a ``ModelSize``: the defaults give about 0.8M parameters; the environment
variable ``FWEMU_MODEL_SIZE`` (``"hidden=64,layers=2"``) overrides fields for a whole process.
The vocabulary is widened per base model (``vocab_for``) so every id of that model's stand-in
tokenizer (256 bytes + the family's added tokens, ``client.standin_families``) is accepted
without any setting; names of no known family keep the byte tokenizer's 259.
This module stays torch-free so the control plane and the inspector tests can import it cheaply.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from fwemu.client.standin_families import family_for, vocab_size_for
from fwemu.client.tokenizer import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE

ENV_MODEL_SIZE = "FWEMU_MODEL_SIZE"

# Short spellings accepted in FWEMU_MODEL_SIZE, next to the full field names.
_ALIASES = {
    "hidden": "hidden_size",
    "layers": "num_layers",
    "heads": "num_heads",
    "kv_heads": "num_kv_heads",
    "intermediate": "intermediate_size",
    "vocab": "vocab_size",
    "theta": "rope_theta",
    "eps": "rms_norm_eps",
    "max_pos": "max_position_embeddings",
}


@dataclass(frozen=True)
class ModelSize:
    """Dimensions of the stand-in LLaMA. Validated on construction so a bad override fails early."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 352
    vocab_size: int = VOCAB_SIZE
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 2048

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads",
                     "intermediate_size", "vocab_size", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ModelSize.{name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not divisible by num_kv_heads {self.num_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for rotary embeddings")
        if self.vocab_size < VOCAB_SIZE:
            raise ValueError(f"vocab_size must be at least {VOCAB_SIZE} (the byte tokenizer's vocabulary)")
        if not self.rope_theta > 0 or not self.rms_norm_eps > 0:
            raise ValueError("rope_theta and rms_norm_eps must be positive")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def num_parameters(self) -> int:
        """Parameter count of the full model (no LoRA), for logs and the benchmark."""
        h, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        attn = 2 * h * h + 2 * h * kv
        mlp = 3 * h * self.intermediate_size
        per_layer = attn + mlp + 2 * h
        return self.num_layers * per_layer + 2 * self.vocab_size * h + h

    @classmethod
    def parse(cls, spec: str, base: "ModelSize | None" = None) -> "ModelSize":
        """Parse ``"hidden=64,layers=2"`` on top of ``base`` (defaults). Raises ValueError."""
        base = base or cls()
        fields = {f.name: f for f in dataclasses.fields(cls)}
        updates: dict[str, object] = {}
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, raw = part.partition("=")
            key = _ALIASES.get(key.strip(), key.strip())
            if not sep or key not in fields:
                known = sorted(set(_ALIASES) | set(fields))
                raise ValueError(f"bad {ENV_MODEL_SIZE} entry {part!r}; expected key=value with key in {known}")
            try:
                updates[key] = float(raw) if fields[key].type in ("float", float) else int(raw)
            except ValueError:
                raise ValueError(f"bad {ENV_MODEL_SIZE} value for {key}: {raw!r}") from None
        return dataclasses.replace(base, **updates)

    @classmethod
    def from_env(cls) -> "ModelSize":
        """Defaults, overridden by ``FWEMU_MODEL_SIZE`` when it is set."""
        spec = os.environ.get(ENV_MODEL_SIZE, "").strip()
        return cls.parse(spec) if spec else cls()


def vocab_for(base_model: str | None, vocab_size: int = VOCAB_SIZE) -> int:
    """The vocabulary the stand-in of ``base_model`` gets: ``vocab_size`` widened to cover its
    family's stand-in tokenizer. Pure; a larger explicit vocabulary is kept as it is."""
    return vocab_size_for(base_model, vocab_size) if base_model else vocab_size


def vocab_origin(base_model: str | None, vocab_size: int) -> str:
    """Why the vocabulary has this size, for the out-of-range error (no torch, no I/O)."""
    family = family_for(base_model) if base_model else None
    if family is not None and family.vocab_size == vocab_size:
        return (f"256 bytes + the {len(family.tokens)} added tokens of the {family.name} stand-in "
                f"tokenizer of {base_model!r}")
    if family is None and vocab_size == VOCAB_SIZE:
        return f"the byte tokenizer's {VOCAB_SIZE} ids; {base_model!r} is of no known tokenizer family"
    return f"{ENV_MODEL_SIZE} sets vocab={vocab_size}"


def resolve_size(size: ModelSize | None, base_model: str | None = None) -> ModelSize:
    """An explicit size wins, otherwise the environment's (or the defaults); then the vocabulary
    is widened for ``base_model`` (``vocab_for``)."""
    size = size if size is not None else ModelSize.from_env()
    vocab = vocab_for(base_model, size.vocab_size)
    return size if vocab == size.vocab_size else dataclasses.replace(size, vocab_size=vocab)


def hf_config(base_model: str, size: ModelSize | None = None) -> dict:
    """The ``config.json`` of a Hugging Face ``LlamaForCausalLM`` with this shape.

    Both the legacy ``rope_theta``/``torch_dtype`` keys and the transformers 5 spellings
    (``rope_parameters``, ``dtype``) are written so 4.x and 5.x load the directory alike.
    """
    size = resolve_size(size, base_model)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "_name_or_path": base_model,
        "hidden_size": size.hidden_size,
        "intermediate_size": size.intermediate_size,
        "num_hidden_layers": size.num_layers,
        "num_attention_heads": size.num_heads,
        "num_key_value_heads": size.num_kv_heads,
        "head_dim": size.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": size.max_position_embeddings,
        "vocab_size": size.vocab_size,
        "rms_norm_eps": size.rms_norm_eps,
        "rope_theta": size.rope_theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": size.rope_theta},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "use_cache": True,
        "torch_dtype": "float32",
        "dtype": "float32",
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
    }


def generation_config() -> dict:
    """``generation_config.json`` matching the byte tokenizer's special ids."""
    return {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID, "do_sample": False}
