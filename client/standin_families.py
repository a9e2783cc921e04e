"""Which special tokens each model family's stand-in tokenizer has, and which ids map to it.

The emulator cannot download a real tokenizer, yet the cookbook's renderers need the real
family's control tokens (``<|im_end|>`` for Qwen, ``<|eot_id|>`` for Llama 3, ...) to encode
as exactly one id. A stand-in tokenizer keeps fwemu's byte ids (0-255 are the UTF-8 bytes, as
in ``client.tokenizer``) and appends the family's added tokens from id 256 on, in the family's
own order. This module is the data behind that: pure, no ``tokenizers``/torch import, so the
trainer can size its vocabulary from it (``vocab_size_for``) as cheaply as the client can.

The lists are written from the public model cards' token tables; long runs of the families'
unnamed reserved tokens (``<|reserved_special_token_N|>``) are left out, so only the order of
named tokens is kept, not the real ids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BYTE_IDS = 256  # ids 0..255 are the raw bytes in every stand-in


@dataclass(frozen=True)
class Family:
    """One tokenizer family: its added tokens in order, and which of them play which role.

    ``tokens`` is ``(content, special)``: ``special`` is whether the real tokenizer marks it
    special (skipped by ``decode(skip_special_tokens=True)``); non-special added tokens such as
    Qwen's ``<think>`` still encode as one id. ``eos_chat``/``eos_base`` are the end tokens of
    the family's chat and base checkpoints, which differ in Qwen and Llama.
    """

    name: str
    tokens: tuple[tuple[str, bool], ...]
    eos_chat: str
    eos_base: str
    bos: str | None = None
    pad: str | None = None
    unk: str | None = None
    add_bos: bool = False          # encode(add_special_tokens=True) prepends ``bos``
    chat_template: str | None = None

    @property
    def contents(self) -> tuple[str, ...]:
        return tuple(t for t, _ in self.tokens)

    @property
    def vocab_size(self) -> int:
        return BYTE_IDS + len(self.tokens)

    def token_id(self, content: str) -> int:
        """The stand-in id of one added token (ValueError when the family has no such token)."""
        return BYTE_IDS + self.contents.index(content)


def _s(*names: str) -> tuple[tuple[str, bool], ...]:
    return tuple((n, True) for n in names)


def _a(*names: str) -> tuple[tuple[str, bool], ...]:
    return tuple((n, False) for n in names)


_QWEN2_5_TOKENS = (
    _s("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
       "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
       "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
    + _a("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
         "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")
)
_QWEN3_TOKENS = _QWEN2_5_TOKENS + _a("<tool_response>", "</tool_response>", "<think>", "</think>")

# A plain ChatML template (our own, minimal) for callers of apply_chat_template; the cookbook's
# renderers build tokens themselves and do not read it.
_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_LLAMA3_CHAT = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("qwen2_5", _QWEN2_5_TOKENS, eos_chat="<|im_end|>", eos_base="<|endoftext|>",
           pad="<|endoftext|>", chat_template=_CHATML),
    Family("qwen3", _QWEN3_TOKENS, eos_chat="<|im_end|>", eos_base="<|endoftext|>",
           pad="<|endoftext|>", chat_template=_CHATML),
    # Qwen3.5 / 3.6 share Qwen3's control tokens for text; their extra multimodal tokens are
    # not modelled (the stand-in trains text only).
    Family("qwen3_5", _QWEN3_TOKENS, eos_chat="<|im_end|>", eos_base="<|endoftext|>",
           pad="<|endoftext|>", chat_template=_CHATML),
    Family("llama3", _s("<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                        "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>",
                        "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
                        "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"),
           eos_chat="<|eot_id|>", eos_base="<|end_of_text|>", bos="<|begin_of_text|>",
           pad="<|finetune_right_pad_id|>", add_bos=True, chat_template=_LLAMA3_CHAT),
    Family("deepseek_v3",
           _s("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>")
           + _a("<think>", "</think>", "<｜fim▁hole｜>", "<｜fim▁begin｜>", "<｜fim▁end｜>",
                "<｜User｜>", "<｜Assistant｜>")
           + _s("<|EOT|>")
           + _a("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>",
                "<｜tool▁call▁end｜>", "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>",
                "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>", "<｜tool▁sep｜>"),
           eos_chat="<｜end▁of▁sentence｜>", eos_base="<｜end▁of▁sentence｜>",
           bos="<｜begin▁of▁sentence｜>", pad="<｜▁pad▁｜>", add_bos=True),
    Family("gpt_oss", _s("<|startoftext|>", "<|endoftext|>", "<|reserved_200000|>", "<|reserved_200001|>",
                         "<|return|>", "<|constrain|>", "<|reserved_200004|>", "<|channel|>", "<|start|>",
                         "<|end|>", "<|message|>", "<|reserved_200009|>", "<|reserved_200010|>",
                         "<|reserved_200011|>", "<|call|>", "<|reserved_200013|>", "<|reserved_200014|>",
                         "<|reserved_200015|>", "<|reserved_200016|>", "<|reserved_200017|>",
                         "<|endofprompt|>"),
           eos_chat="<|return|>", eos_base="<|return|>", bos="<|startoftext|>", pad="<|endoftext|>"),
    # Nemotron 3 speaks ChatML with Qwen-style think/tool tags; the order of these tokens in the
    # real vocabulary is not reproduced, only their presence as single tokens.
    Family("nemotron3", _s("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>")
           + _a("<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"),
           eos_chat="<|im_end|>", eos_base="</s>", bos="<s>", unk="<unk>", pad="</s>", chat_template=_CHATML),
)}


@dataclass(frozen=True)
class Repo:
    """One Hugging Face tokenizer id the cookbook can ask for, and the stand-in it resolves to."""

    hf_id: str
    family: str
    chat: bool = True

    @property
    def eos(self) -> str:
        f = FAMILIES[self.family]
        return f.eos_chat if self.chat else f.eos_base


def _repos() -> tuple[Repo, ...]:
    """Every id of tinker_cookbook's model_info table and the cookbook's resolve_renderer_name
    exact matches whose renderer works on a stand-in (Kimi needs remote tokenizer code: none)."""
    qwen3_chat = ("Qwen3-0.6B", "Qwen3-1.7B", "Qwen3-4B", "Qwen3-8B", "Qwen3-14B", "Qwen3-32B",
                  "Qwen3-30B-A3B", "Qwen3-4B-Instruct-2507", "Qwen3-30B-A3B-Instruct-2507",
                  "Qwen3-235B-A22B-Instruct-2507", "Qwen3-235B-A22B-Instruct-2507-FP8",
                  "Qwen3-VL-30B-A3B-Instruct", "Qwen3-VL-235B-A22B-Instruct")
    qwen35_chat = ("Qwen3.5-4B", "Qwen3.5-9B", "Qwen3.5-27B", "Qwen3.5-35B-A3B", "Qwen3.5-397B-A17B",
                   "Qwen3.6-27B", "Qwen3.6-35B-A3B")
    out = [Repo(f"Qwen/{n}", "qwen3") for n in qwen3_chat]
    out += [Repo(f"Qwen/{n}", "qwen3", chat=False) for n in ("Qwen3-8B-Base", "Qwen3-30B-A3B-Base")]
    out += [Repo(f"Qwen/{n}", "qwen3_5") for n in qwen35_chat]
    out += [Repo(f"Qwen/{n}", "qwen3_5", chat=False) for n in ("Qwen3.5-9B-Base", "Qwen3.5-35B-A3B-Base")]
    out.append(Repo("Qwen/Qwen2.5-32B-Instruct", "qwen2_5"))
    out += [Repo(f"meta-llama/{n}", "llama3") for n in ("Llama-3.1-8B-Instruct", "Llama-3.3-70B-Instruct")]
    out += [Repo(f"meta-llama/{n}", "llama3", chat=False)
            for n in ("Llama-3.2-1B", "Llama-3.2-3B", "Llama-3.1-8B", "Llama-3.1-70B")]
    # tinker_cookbook loads every meta-llama/Llama-3* tokenizer from this ungated copy.
    out.append(Repo("thinkingmachineslabinc/meta-llama-3-instruct-tokenizer", "llama3"))
    out += [Repo("deepseek-ai/DeepSeek-V3.1", "deepseek_v3"),
            Repo("deepseek-ai/DeepSeek-V3.1-Base", "deepseek_v3", chat=False)]
    out += [Repo(f"openai/{n}", "gpt_oss") for n in ("gpt-oss-20b", "gpt-oss-120b")]
    out += [Repo(f"nvidia/{n}", "nemotron3") for n in (
        "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", "NVIDIA-Nemotron-3-Super-120B-A12B-BF16",
        "NVIDIA-Nemotron-3-Ultra-550B-A55B-BF16")]
    return tuple(out)


REPOS: tuple[Repo, ...] = _repos()
_BY_ID = {r.hf_id.lower(): r for r in REPOS}

# Name patterns for ids outside the table, notably Fireworks base models
# (accounts/fireworks/models/qwen3-8b, llama-v3p1-8b-instruct, deepseek-v3p1, gpt-oss-20b).
# First match wins, so the more specific spellings come first.
_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"qwen3(?:\.|p|_)[56]", "qwen3_5"),
    (r"qwen3", "qwen3"),
    (r"qwen2(?:\.|p)5", "qwen2_5"),
    (r"llama-?(?:v)?3", "llama3"),
    (r"deepseek-?v3", "deepseek_v3"),
    (r"gpt-oss", "gpt_oss"),
    (r"nemotron-?3", "nemotron3"),
)


def repo_for(hf_id: str) -> Repo | None:
    """The table entry for an exact Hugging Face id (case-insensitive), else None."""
    return _BY_ID.get(hf_id.strip().lower())


def family_for(model_name: str) -> Family | None:
    """The stand-in family of a Hugging Face id or a Fireworks base model name, else None."""
    if not isinstance(model_name, str):
        return None
    repo = repo_for(model_name)
    if repo is not None:
        return FAMILIES[repo.family]
    last = model_name.strip().lower().rsplit("/", 1)[-1]
    for pattern, family in _PATTERNS:
        if re.search(pattern, last):
            return FAMILIES[family]
    return None


def vocab_size_for(model_name: str, default: int) -> int:
    """Vocabulary the stand-in model of ``model_name`` needs: 256 bytes + the family's tokens,
    never below ``default`` (unknown names keep ``default``)."""
    family = family_for(model_name)
    return max(default, family.vocab_size) if family else default
