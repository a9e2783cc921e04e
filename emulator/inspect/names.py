"""File and tensor names the inspector knows, and the caps on what it will read.

Everything the file-list check (step 1 of the decision order) needs to sort a directory entry
into a family lives here, so the whole vocabulary can be read in one place.
"""

from __future__ import annotations

import re

# --- caps: the inspector reads headers and metadata only, and never more than these ---------
MAX_FILES = 10_000                      # entries in one checkpoint directory
MAX_SAFETENSORS_HEADER = 100_000_000    # N in a safetensors header (the library's own cap)
MAX_DCP_METADATA = 64 * 1024 * 1024     # size of a DCP `.metadata` pickle
MAX_JSON = 16 * 1024 * 1024             # config.json, adapter_config.json, delta.json
MAX_INDEX_JSON = 64 * 1024 * 1024       # model.safetensors.index.json (large models: ~10 MB)
MAX_TOTAL_READ = 512 * 1024 * 1024      # all reads for one verdict together
MAX_NDIM = 64                           # dimensions of one tensor

# --- DCP ------------------------------------------------------------------------------------
DCP_METADATA = ".metadata"
DCP_DATA_RE = re.compile(r"__(0|[1-9][0-9]{0,5})_(0|[1-9][0-9]{0,5})\.distcp")
DCP_SUFFIX = ".distcp"

# --- PEFT -----------------------------------------------------------------------------------
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

# --- Hugging Face full weights (and the ARC_V2 delta, which has the same layout) ------------
HF_CONFIG = "config.json"
HF_SINGLE = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"
DELTA_MANIFEST = "delta.json"
SAFETENSORS_SUFFIX = ".safetensors"

# Pickle weight files: loading one runs code, so they are refused by name, never opened.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# Files that may sit beside any checkpoint and are never read.
HARMLESS_EXTRAS = frozenset({
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.json",
    "chat_template.jinja",
    "README.md",
    "LICENSE",
    ".gitattributes",
})

# --- LoRA -----------------------------------------------------------------------------------
# A tensor is a LoRA tensor when one of these is a whole dotted segment of its name.
LORA_SEGMENTS = frozenset({
    "lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector",
})
LORA_PAIRS = {"lora_A": "lora_B", "lora_embedding_A": "lora_embedding_B"}


def lora_segment(tensor_name: str) -> str | None:
    """The LoRA segment of a dotted tensor name (`...q_proj.lora_A.weight` -> `lora_A`), or None."""
    for segment in tensor_name.split("."):
        if segment in LORA_SEGMENTS:
            return segment
    return None


def shown(name: str) -> str:
    """A file or tensor name as it appears in a reason: as is, or repr() if it has odd characters."""
    if name.isprintable() and name.strip() == name and name:
        return name
    return repr(name)
