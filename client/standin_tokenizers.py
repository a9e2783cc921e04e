"""Build the stand-in Hugging Face tokenizers offline and lay them out as a hub cache.

A stand-in is a real ``tokenizers`` byte-level BPE with no merges: every byte is one token and
its id is the byte's value (the mapping of ``client.tokenizer``), followed by the family's
added tokens from ``client.standin_families`` at ids 256, 257, ... . ``files_for`` gives the
files of one repo (``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``
and the small ``config.json`` that transformers 5 reads first);
``materialise`` writes every table id into ``<hf_home>/hub`` the way ``huggingface_hub`` caches
a download (``models--Org--Name/refs/main`` naming a snapshot directory), so
``AutoTokenizer.from_pretrained("Qwen/Qwen3-8B")`` resolves it with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from fwemu.client.standin_families import BYTE_IDS, FAMILIES, REPOS, Family, Repo

TOKENIZER_CLASS = "PreTrainedTokenizerFast"
MODEL_MAX_LENGTH = 131072


def byte_alphabet() -> list[str]:
    """The printable character standing for each byte in byte-level BPE vocabularies.

    Printable Latin-1 bytes stand for themselves; the others (controls, space, soft hyphen)
    are shifted to U+0100 and up, in byte order. This is the convention the ``ByteLevel``
    pre-tokenizer of ``tokenizers`` applies, so byte ``b`` becomes the vocabulary entry
    ``byte_alphabet()[b]``.
    """
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    out, shifted = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + shifted))
            shifted += 1
    return out


def build_tokenizer(family: Family):
    """A ``tokenizers.Tokenizer``: bytes at 0..255, then ``family``'s added tokens in order."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {ch: b for b, ch in enumerate(byte_alphabet())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    added = [AddedToken(t, special=special, normalized=False, single_word=False, lstrip=False, rstrip=False)
             for t, special in family.tokens]
    tok.add_tokens(added)  # keeps the given order: ids 256, 257, ...
    if family.add_bos and family.bos:
        bos_id = family.token_id(family.bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{family.bos} $A", pair=f"{family.bos} $A {family.bos} $B",
            special_tokens=[(family.bos, bos_id)])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    for content, _ in family.tokens:  # the family's order is the id order, or the data is wrong
        if tok.token_to_id(content) != family.token_id(content):
            raise AssertionError(f"{family.name}: {content!r} did not land at id {family.token_id(content)}")
    return tok


def _special_map(family: Family, repo: Repo) -> dict[str, str]:
    roles = {"bos_token": family.bos, "eos_token": repo.eos, "pad_token": family.pad, "unk_token": family.unk}
    return {k: v for k, v in roles.items() if v is not None}


def _model_config(family: Family, repo: Repo) -> dict:
    """A small ``config.json``: transformers 5 reads the model config before the tokenizer's.

    It describes what fwemu trains for this id (a LLaMA-shaped stand-in whose vocabulary is
    256 bytes + the family's tokens), not the real architecture.
    """
    ids = {f"{k}_id": family.token_id(v) for k, v in _special_map(family, repo).items()
           if k in ("bos_token", "eos_token", "pad_token")}
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": family.vocab_size,
            **ids, "fwemu_standin": {"hf_id": repo.hf_id, "family": family.name}}


def files_for(repo: Repo) -> dict[str, str]:
    """File name -> text of one stand-in tokenizer repository (deterministic bytes)."""
    family = FAMILIES[repo.family]
    tok = build_tokenizer(family)
    specials = _special_map(family, repo)
    config: dict = {
        "tokenizer_class": TOKENIZER_CLASS,
        "model_max_length": MODEL_MAX_LENGTH,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": family.add_bos,
        "add_eos_token": False,
        "added_tokens_decoder": {
            str(family.token_id(t)): {"content": t, "lstrip": False, "normalized": False,
                                      "rstrip": False, "single_word": False, "special": special}
            for t, special in family.tokens},
        "fwemu_standin": {"family": family.name, "byte_ids": BYTE_IDS, "vocab_size": family.vocab_size},
        **specials,
    }
    if family.chat_template:
        config["chat_template"] = family.chat_template
    return {
        "config.json": json.dumps(_model_config(family, repo), indent=2) + "\n",
        "tokenizer.json": tok.to_str(pretty=True) + "\n",
        "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False) + "\n",
        "special_tokens_map.json": json.dumps(specials, indent=2, ensure_ascii=False) + "\n",
    }


def revision_of(files: dict[str, str]) -> str:
    """A 40-hex commit id derived from the content, so a changed stand-in gets a new snapshot."""
    h = hashlib.sha1()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    return h.hexdigest()


def repo_cache_dir(hub: Path, hf_id: str) -> Path:
    return hub / ("models--" + hf_id.replace("/", "--"))


def _write_repo(hub: Path, repo: Repo) -> Path:
    """Publish one snapshot atomically (temp dir + rename), then point refs/main at it."""
    files = files_for(repo)
    rev = revision_of(files)
    root = repo_cache_dir(hub, repo.hf_id)
    snap = root / "snapshots" / rev
    if not snap.is_dir():
        (root / "snapshots").mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fwemu-", dir=root / "snapshots"))
        try:
            for name, text in files.items():
                (tmp / name).write_text(text, encoding="utf-8")
            os.replace(tmp, snap)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not snap.is_dir():
                raise
    refs = root / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    if (refs / "main").is_file() and (refs / "main").read_text(encoding="utf-8") == rev:
        return snap
    ref_tmp = refs / f".main.{os.getpid()}"
    ref_tmp.write_text(rev, encoding="utf-8")
    os.replace(ref_tmp, refs / "main")
    return snap


def materialise(hf_home: Path, repos: tuple[Repo, ...] = REPOS) -> dict[str, Path]:
    """Write every stand-in into ``<hf_home>/hub``; returns hf_id -> snapshot directory.

    Only paths under ``hf_home`` are touched, and an existing snapshot is left as it is.
    """
    hub = Path(hf_home) / "hub"
    hub.mkdir(parents=True, exist_ok=True)
    return {r.hf_id: _write_repo(hub, r) for r in repos}
