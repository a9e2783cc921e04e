"""The three file families and what makes each one a kind (steps 3-5 of the decision order).

Each `check_*` function gets a `CheckpointDir` whose file list already passed step 1 and holds
files of its family only, and returns `(kind, details)` or raises `Rejected`. They read headers
and metadata only: the DCP `.metadata` pickle (through the safe unpickler), JSON configs, and
safetensors headers. Tensor data is never read, so the cost does not grow with the weights.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

from . import dcp_layout, dcp_metadata
from .kinds import Kind
from .names import (
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, DCP_DATA_RE, DCP_METADATA, DELTA_MANIFEST, HF_CONFIG,
    HF_INDEX, HF_SINGLE, LORA_PAIRS, MAX_DCP_METADATA, MAX_INDEX_JSON, MAX_JSON,
    SAFETENSORS_SUFFIX, lora_segment, shown,
)
from .reader import CheckpointDir, Rejected
from .safetensors_header import Header, read_header

Details = dict[str, object]

# --- DCP (TRAINING / TRAINING_LORA) -----------------------------------------------------------

SAVE_STATE_HINT = ("save a resumable checkpoint with save_state (DCP of the model and its "
                   "optimizer), or export inference weights with save_weights_for_sampler")


def check_dcp(d: CheckpointDir) -> tuple[Kind, Details]:
    """DCP: safe-unpickle `.metadata`, tie every storage entry to a data file, classify LoRA."""
    data_files = sorted(n for n in d.entries if DCP_DATA_RE.fullmatch(n))
    if DCP_METADATA not in d.entries:
        raise Rejected(DCP_METADATA, f"missing; DCP data files ({', '.join(data_files[:3])}) "
                                     "are unreadable without it")
    raw = d.read_small(DCP_METADATA, MAX_DCP_METADATA)
    if not raw.startswith(b"\x80") or len(raw) < 2 or not 2 <= raw[1] <= 5:
        raise Rejected(DCP_METADATA, "not a pickle of DCP metadata (expected a protocol 2-5 "
                                     "header, torch writes 80 04)")
    try:
        md = dcp_metadata.validate(dcp_metadata.unpickle(raw))
    except dcp_metadata.UnsafePickle as e:
        raise Rejected(DCP_METADATA, f"{e}; refusing to load it (a crafted .metadata runs code "
                                     "in torch)") from None
    except dcp_metadata.BadMetadata as e:
        raise Rejected(DCP_METADATA, f"malformed DCP metadata: {e}") from None
    except Exception as e:  # any failure of the standard unpickler on corrupt bytes
        raise Rejected(DCP_METADATA, "not a valid DCP metadata pickle "
                                     f"({type(e).__name__}: {_short(e)})") from None

    _check_storage(d, md, data_files)
    return _classify_dcp(md, data_files)


def _short(e: BaseException, limit: int = 120) -> str:
    text = str(e).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def _check_storage(d: CheckpointDir, md: dcp_metadata.DcpMetadata, data_files: list[str]) -> None:
    """Every entry inside an existing data file, no overlaps, every chunk stored, every file used."""
    by_file: dict[str, list[dcp_metadata.StorageEntry]] = defaultdict(list)
    chunk_sizes = {key: dict(entry.chunks) for key, entry in md.items.items() if entry is not None}
    stored = set()
    for e in md.storage:
        path = e.relative_path
        if "/" in path or "\\" in path or path in ("", ".", ".."):
            raise Rejected(DCP_METADATA, f"storage entry for {shown(e.fqn)} points outside the "
                                         f"checkpoint directory ({path!r})")
        if not DCP_DATA_RE.fullmatch(path):
            raise Rejected(DCP_METADATA, f"storage entry for {shown(e.fqn)} refers to {path!r}, "
                                         "which is not a DCP data file name (__<rank>_<n>.distcp)")
        if path not in d.entries:
            raise Rejected(DCP_METADATA, f"storage entry for {shown(e.fqn)} refers to missing "
                                         f"data file {path}")
        size = d.size(path)
        if e.file_offset + e.length > size:
            raise Rejected(path, f"truncated or wrong: holds {size} bytes but .metadata stores "
                                 f"{shown(e.fqn)} at bytes {e.file_offset}..{e.file_offset + e.length}")
        entry = md.items[e.fqn]
        if entry is not None:
            sizes = chunk_sizes[e.fqn].get(e.offset)
            if sizes is None:
                raise Rejected(DCP_METADATA, f"storage entry for {shown(e.fqn)} at offsets "
                                             f"{list(e.offset or ())} matches none of its chunks")
            need = dcp_metadata.numel(sizes) * entry.dtype.itemsize
            if not e.transformed and e.length < need:
                raise Rejected(DCP_METADATA, f"storage entry for {shown(e.fqn)} is {e.length} bytes, "
                                             f"too short for its {need}-byte tensor chunk")
        stored.add((e.fqn, e.offset))
        by_file[path].append(e)

    for key, entry in md.items.items():
        wanted = [(key, None)] if entry is None else [(key, c[0]) for c in entry.chunks]
        for item in wanted:
            if item not in stored:
                raise Rejected(DCP_METADATA, f"{shown(key)} has no storage entry; its data is nowhere")

    for path, entries in by_file.items():
        entries.sort(key=lambda e: (e.file_offset, e.length))
        for a, b in zip(entries, entries[1:]):
            if b.file_offset < a.file_offset + a.length:
                raise Rejected(DCP_METADATA, f"storage entries for {shown(a.fqn)} and {shown(b.fqn)} "
                                             f"overlap in {path}")
    for name in data_files:
        if name not in by_file:
            raise Rejected(name, "not referenced by .metadata; an unreferenced data file means "
                                 "the checkpoint is incomplete or mixed with another")


def _classify_dcp(md: dcp_metadata.DcpMetadata, data_files: list[str]) -> tuple[Kind, Details]:
    """Weights, optimizer state and extras by the rule of dcp_layout; LoRA-ness of the trained tensors."""
    try:
        layout = dcp_layout.layout_of(md)
    except dcp_layout.LayoutError as e:
        raise Rejected(DCP_METADATA, str(e), SAVE_STATE_HINT if e.hint_save else None) from None
    ranks = {int(DCP_DATA_RE.fullmatch(n).group(1)) for n in data_files}
    details = {"ranks": len(ranks), "tensors": len(layout.weights), "layout": layout.style}
    if layout.frozen:
        details["frozen"] = len(layout.frozen)
    if layout.extras:
        details["extras"] = len(layout.extras)
    return (Kind.TRAINING_LORA if layout.lora else Kind.TRAINING), details


# --- PEFT (INFERENCE_LORA) --------------------------------------------------------------------

def check_peft(d: CheckpointDir) -> tuple[Kind, Details]:
    """adapter_config.json (LORA, r, lora_alpha, target_modules, base model) + paired lora_A/lora_B."""
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if name not in d.entries:
            other = ADAPTER_WEIGHTS if name == ADAPTER_CONFIG else ADAPTER_CONFIG
            raise Rejected(name, f"missing; a PEFT adapter needs both {ADAPTER_CONFIG} and "
                                 f"{ADAPTER_WEIGHTS} ({other} is here)")
    cfg = d.read_json(ADAPTER_CONFIG, MAX_JSON)
    if not isinstance(cfg, dict):
        raise Rejected(ADAPTER_CONFIG, "not a JSON object")
    if cfg.get("peft_type") != "LORA":
        raise Rejected(ADAPTER_CONFIG, f"peft_type is {cfg.get('peft_type')!r}, not 'LORA'")
    r = cfg.get("r")
    if type(r) is not int or r <= 0:
        raise Rejected(ADAPTER_CONFIG, f"r must be a positive integer (is {r!r})")
    alpha = cfg.get("lora_alpha")
    if type(alpha) not in (int, float) or not math.isfinite(alpha):
        raise Rejected(ADAPTER_CONFIG, f"lora_alpha must be a number (is {alpha!r})")
    targets = cfg.get("target_modules")
    if not (isinstance(targets, str) and targets) and not (
            isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets)):
        raise Rejected(ADAPTER_CONFIG, "target_modules must be a non-empty list of module names "
                                       f"or a regex string (is {targets!r})")
    base = cfg.get("base_model_name_or_path")
    if base is not None and not isinstance(base, str):
        raise Rejected(ADAPTER_CONFIG, f"base_model_name_or_path must be a string or null (is {base!r})")
    rank_pattern = cfg.get("rank_pattern") or {}
    if not isinstance(rank_pattern, dict):
        raise Rejected(ADAPTER_CONFIG, "rank_pattern must be an object")

    header = read_header(d, ADAPTER_WEIGHTS)
    _check_lora_pairs(header, r, bool(rank_pattern))
    details = {"r": r, "lora_alpha": alpha, "target_modules": targets,
               "base_model_name_or_path": base}
    return Kind.INFERENCE_LORA, details


def _check_lora_pairs(header: Header, r: int, per_module_ranks: bool) -> None:
    """Every lora_A has its lora_B (and back) with matching rank: A is [r, in], B is [out, r]."""
    tensors = header.tensors
    a_of_b = {b: a for a, b in LORA_PAIRS.items()}
    pairs = 0
    for key, info in tensors.items():
        segments = key.split(".")
        i, seg = next(((i, s) for i, s in enumerate(segments) if s in LORA_PAIRS or s in a_of_b),
                      (None, None))
        if seg is None:
            continue  # a full tensor (modules_to_save) or a DoRA magnitude vector
        other = LORA_PAIRS.get(seg) or a_of_b[seg]
        partner = ".".join(segments[:i] + [other] + segments[i + 1:])
        if partner not in tensors:
            raise Rejected(ADAPTER_WEIGHTS, f"{shown(key)} has no matching {other} ({shown(partner)})")
        if seg in a_of_b:
            continue  # checked from the lora_A side
        b = tensors[partner]
        if len(info.shape) < 2 or len(b.shape) < 2:
            raise Rejected(ADAPTER_WEIGHTS, f"{shown(key)} and its {other} must be at least 2-D "
                                            f"(are {list(info.shape)} and {list(b.shape)})")
        rank_a, rank_b = info.shape[0], b.shape[1]
        if rank_a != rank_b or rank_a == 0:
            raise Rejected(ADAPTER_WEIGHTS, f"rank mismatch: {shown(key)} is {list(info.shape)} "
                                            f"(r={rank_a}) but {shown(partner)} is {list(b.shape)} "
                                            f"(r={rank_b})")
        if rank_a != r and not per_module_ranks:
            raise Rejected(ADAPTER_WEIGHTS, f"{shown(key)} has rank {rank_a} but "
                                            f"{ADAPTER_CONFIG} says r={r}")
        pairs += 1
    if not pairs:
        raise Rejected(ADAPTER_WEIGHTS, "no LoRA weights (no lora_A/lora_B pairs)")


# --- Hugging Face full weights (INFERENCE_BASE / INFERENCE_ARC_V2) ----------------------------

ARC_MANIFEST = {"format": "arc_v2", "encoding": "xor", "checksum_format": "adler32"}
DELTA_FORMAT = "xor-v1"
ADLER_RE = re.compile(r"[0-9a-f]{8}")
ARC_HINT = 'save the weights with checkpoint_type="base" to get a promotable INFERENCE_BASE'


def check_hf(d: CheckpointDir) -> tuple[Kind, Details]:
    """config.json + model.safetensors (or the index and its shards); ARC_V2 when fully marked."""
    shards = _shard_map(d)
    if HF_CONFIG not in d.entries:
        raise Rejected(HF_CONFIG, "missing; Hugging Face weights need a config.json with model_type")
    cfg = d.read_json(HF_CONFIG, MAX_JSON)
    if not isinstance(cfg, dict):
        raise Rejected(HF_CONFIG, "not a JSON object")
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise Rejected(HF_CONFIG, f"model_type must be a non-empty string (is {model_type!r})")

    manifest = _read_manifest(d) if DELTA_MANIFEST in d.entries else None
    headers: dict[str, Header] = {}
    for shard, expected in shards.items():
        header = read_header(d, shard)
        if expected is not None:
            _check_shard_tensors(shard, header, expected)
        if not header.tensors:
            raise Rejected(shard, "holds no tensors")
        headers[shard] = header
    for shard, header in headers.items():
        for key in header.tensors:
            seg = lora_segment(key)
            if seg:
                raise Rejected(shard, f"tensor {shown(key)} is a LoRA weight ({seg}) but there is no "
                                      f"{ADAPTER_CONFIG}; LoRA adapters must be saved in PEFT layout",
                               "save the adapter with adapter_config.json + adapter_model.safetensors, "
                               'or fold it in with checkpoint_type="merged_base"')
    delta = _delta_markers(headers, manifest)
    details: Details = {"model_type": model_type,
                        "tensors": sum(len(h.tensors) for h in headers.values())}
    if delta:
        details["base_identity"] = manifest["base_identity"]
        return Kind.INFERENCE_ARC_V2, details
    return Kind.INFERENCE_BASE, details


def _shard_map(d: CheckpointDir) -> dict[str, set[str] | None]:
    """Which safetensors files hold the weights, and (sharded) which tensors each must hold."""
    present = sorted(n for n in d.entries if n.endswith(SAFETENSORS_SUFFIX))
    has_index = HF_INDEX in d.entries
    if has_index and HF_SINGLE in d.entries:
        raise Rejected(HF_INDEX, f"both {HF_SINGLE} and a shard index are present; a checkpoint "
                                 "holds single-file or sharded weights, not both")
    if not has_index:
        if HF_SINGLE not in d.entries:
            if present:
                raise Rejected(HF_INDEX, f"missing: shard files ({present[0]}) without a shard "
                                         f"index, and no {HF_SINGLE}")
            raise Rejected(HF_SINGLE, f"missing; Hugging Face weights are {HF_SINGLE} or "
                                      f"{HF_INDEX} with its shards")
        for name in present:
            if name != HF_SINGLE:
                raise Rejected(name, f"unexpected weights file beside {HF_SINGLE} (no shard index)")
        return {HF_SINGLE: None}

    index = d.read_json(HF_INDEX, MAX_INDEX_JSON)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise Rejected(HF_INDEX, "weight_map must be a non-empty object mapping tensor names to shard files")
    expected: dict[str, set[str]] = defaultdict(set)
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or not tensor:
            raise Rejected(HF_INDEX, f"weight_map entry {shown(tensor)} is not a shard file name")
        if "/" in shard or "\\" in shard or shard in ("", ".", ".."):
            raise Rejected(HF_INDEX, f"weight_map entry {shown(tensor)} points outside the checkpoint "
                                     f"directory ({shard!r})")
        if not shard.endswith(SAFETENSORS_SUFFIX):
            raise Rejected(HF_INDEX, f"weight_map entry {shown(tensor)} refers to {shard!r}, "
                                     "which is not a .safetensors file")
        expected[shard].add(tensor)
    for shard in sorted(expected):
        if shard not in d.entries:
            raise Rejected(shard, f"missing shard: {HF_INDEX} maps {len(expected[shard])} tensors to it")
    for name in present:
        if name not in expected:
            raise Rejected(name, f"not referenced by the weight_map of {HF_INDEX}")
    return dict(sorted(expected.items()))


def _check_shard_tensors(shard: str, header: Header, expected: set[str]) -> None:
    actual = set(header.tensors)
    extra = sorted(actual - expected)
    if extra:
        raise Rejected(shard, f"holds tensor {shown(extra[0])}, which the weight_map does not "
                              "assign to this shard")
    missing = sorted(expected - actual)
    if missing:
        raise Rejected(shard, f"lacks tensor {shown(missing[0])}, which the weight_map assigns to "
                              f"this shard ({len(missing)} missing)")


def _read_manifest(d: CheckpointDir) -> dict:
    m = d.read_json(DELTA_MANIFEST, MAX_JSON)
    if not isinstance(m, dict):
        raise Rejected(DELTA_MANIFEST, "not a JSON object")
    for key, value in ARC_MANIFEST.items():
        if m.get(key) != value:
            raise Rejected(DELTA_MANIFEST, f"{key} must be {value!r} (is {m.get(key)!r})")
    identity = m.get("base_identity")
    if not isinstance(identity, str) or not identity:
        raise Rejected(DELTA_MANIFEST, f"base_identity must name the base checkpoint (is {identity!r})")
    unknown = sorted(set(m) - set(ARC_MANIFEST) - {"base_identity"})
    if unknown:
        raise Rejected(DELTA_MANIFEST, f"unexpected field {unknown[0]!r} in the ARC_V2 manifest")
    return m


def _delta_markers(headers: dict[str, Header], manifest: dict | None) -> bool:
    """True for a complete ARC_V2 delta, False for plain weights; half-marked is Rejected."""
    for shard, header in headers.items():
        meta = header.metadata or {}
        fmt = meta.get("delta_format")
        checksum = meta.get("target_adler32")
        marked = fmt is not None or checksum is not None
        if manifest is None:
            if marked:
                raise Rejected(shard, "marked as an ARC_V2 delta (delta_format / target_adler32 in "
                                      f"__metadata__) but {DELTA_MANIFEST} is missing; a half-marked "
                                      "delta is neither a delta nor full weights")
            continue
        if not marked:
            raise Rejected(shard, f"{DELTA_MANIFEST} declares an ARC_V2 delta but this shard is not "
                                  "marked (no delta_format in __metadata__)")
        if fmt != DELTA_FORMAT:
            raise Rejected(shard, f"delta_format must be {DELTA_FORMAT!r} (is {fmt!r})")
        if not isinstance(checksum, str) or not ADLER_RE.fullmatch(checksum):
            raise Rejected(shard, f"target_adler32 must be 8 lower-case hex digits (is {checksum!r})")
    return manifest is not None
