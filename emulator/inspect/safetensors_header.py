"""A strict safetensors header sniffer (read 8 + N bytes, never the tensor data), and its inverse.

Layout: 8-byte little-endian N, N bytes of UTF-8 JSON, then the data section. The safetensors
library accepts duplicate keys and a leading space, which its own spec forbids; this sniffer
is stricter, because the control plane decides a kind from this header and must not be fooled
by a header two readers would read differently:

- N is capped (100 MB, the library's own limit) and 8 + N must fit in the file;
- the JSON starts with `{` (trailing space padding is allowed, as the spec says) and has no
  duplicate keys at any level;
- each tensor entry is exactly `{dtype, shape, data_offsets}` with a known dtype, a shape of
  non-negative ints, and `shape x dtype size == end - begin`;
- the offsets, sorted, cover the data section contiguously from 0 with no gap or overlap, and
  the file ends exactly where the last tensor ends (so a truncated file is caught here);
- `__metadata__`, if present, maps str to str.

`encode_header` writes a header the way the safetensors library does (compact JSON,
`__metadata__` first, tensors in offset order, space-padded to a multiple of 8), so files written
by hand (ARC_V2 deltas, sparse benchmark files) are byte-identical to the library's.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Callable

from .names import MAX_NDIM, MAX_SAFETENSORS_HEADER, shown
from .reader import CheckpointDir, Rejected, loads_strict

# dtype -> size in bits (sub-byte dtypes exist: a tensor's total bits must be a whole byte count)
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8,
    "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
}
TENSOR_FIELDS = frozenset({"dtype", "shape", "data_offsets"})


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Header:
    """A validated header: tensors by name, the `__metadata__` map, and where the data starts."""

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] | None
    data_start: int          # 8 + N
    file_size: int


def _is_int(x: object) -> bool:
    return type(x) is int  # bool is an int subclass and is not a valid shape or offset


def read_header(d: CheckpointDir, name: str) -> Header:
    """Read and validate the header of `name` in `d`; Rejected with a precise rule otherwise."""
    return header_of(name, d.size(name), lambda offset, length: d.read(name, offset, length))


def header_of(name: str, size: int, read: Callable[[int, int], bytes]) -> Header:
    """Validate the header of a `size`-byte safetensors file whose bytes `read(offset, length)`
    returns (a checkpoint directory's bounded reads, or a memory map); Rejected otherwise."""
    if size < 8:
        raise Rejected(name, f"truncated: {size} bytes, shorter than the 8-byte safetensors header length")
    (n,) = struct.unpack("<Q", read(0, 8))
    if n > MAX_SAFETENSORS_HEADER:
        raise Rejected(name, f"safetensors header length {n} exceeds the {MAX_SAFETENSORS_HEADER}-byte cap")
    if 8 + n > size:
        raise Rejected(name, f"safetensors header length {n} runs past the end of the file ({size} bytes)")
    return parse_header(read(8, n), size, name)


def parse_header(raw: bytes, file_size: int, name: str) -> Header:
    """Validate the N header bytes `raw` of a file of `file_size` bytes (see the module docstring)."""
    if not raw.startswith(b"{"):
        raise Rejected(name, "safetensors header does not start with '{'")
    obj = loads_strict(raw, name, what="safetensors header")
    if not isinstance(obj, dict):
        raise Rejected(name, "safetensors header is not a JSON object")
    data_start = 8 + len(raw)
    data_len = file_size - data_start
    metadata = None
    tensors: dict[str, TensorInfo] = {}
    for key, value in obj.items():
        if key == "__metadata__":
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise Rejected(name, "__metadata__ must map strings to strings")
            metadata = value
            continue
        tensors[key] = _tensor(key, value, name)
    _check_coverage(tensors, data_len, file_size, data_start, name)
    return Header(tensors, metadata, data_start, file_size)


def _tensor(key: str, value: object, name: str) -> TensorInfo:
    t = shown(key)
    if not key:
        raise Rejected(name, "empty tensor name in the safetensors header")
    if not isinstance(value, dict) or set(value) != TENSOR_FIELDS:
        fields = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise Rejected(name, f"tensor {t} must have exactly dtype, shape, data_offsets (has {fields})")
    dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    if dtype not in DTYPE_BITS:
        raise Rejected(name, f"tensor {t} has unknown dtype {dtype!r}")
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(_is_int(s) and s >= 0 for s in shape)):
        raise Rejected(name, f"tensor {t} has an invalid shape {shape!r} (non-negative ints expected)")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
        raise Rejected(name, f"tensor {t} has invalid data_offsets {offsets!r} (two ints expected)")
    begin, end = offsets
    if begin < 0 or end < begin:
        raise Rejected(name, f"tensor {t} has invalid data_offsets [{begin}, {end}]")
    numel = 1
    for s in shape:
        numel *= s
    bits = numel * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != end - begin:
        raise Rejected(name, f"tensor {t}: shape {shape} of {dtype} is {bits / 8:g} bytes but "
                             f"data_offsets span {end - begin}")
    return TensorInfo(dtype, tuple(shape), begin, end)


def _check_coverage(tensors: dict[str, TensorInfo], data_len: int, file_size: int,
                    data_start: int, name: str) -> None:
    """Sorted offsets must tile [0, data_len) exactly: no gap, no overlap, no tail, no truncation."""
    pos = 0
    prev = None
    for key, info in sorted(tensors.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if info.begin > pos:
            raise Rejected(name, f"gap in the data section: bytes {pos}..{info.begin} before tensor "
                                 f"{shown(key)} belong to no tensor")
        if info.begin < pos:
            raise Rejected(name, f"tensors {shown(prev)} and {shown(key)} overlap in the data section")
        pos = info.end
        prev = key
    if pos > data_len:
        raise Rejected(name, f"truncated: the header describes {pos} bytes of tensor data but the "
                             f"file holds {max(data_len, 0)} ({file_size} bytes in all)")
    if pos < data_len:
        raise Rejected(name, f"{data_len - pos} trailing bytes after the last tensor's data")


def encode_header(tensors: dict[str, tuple[str, list[int], int, int]],
                  metadata: dict[str, str] | None = None, *, pad_to: int = 8) -> bytes:
    """The 8 + N header bytes for `tensors` (name -> (dtype, shape, begin, end)).

    Same bytes as the safetensors library writes: compact JSON with `__metadata__` first and
    tensors in offset order, padded with spaces to a multiple of `pad_to` (the library uses 8;
    a larger `pad_to` gives headers of equal length for checkpoints that differ only in sizes).
    """
    obj: dict[str, object] = {}
    if metadata:
        obj["__metadata__"] = dict(metadata)
    for key, (dtype, shape, begin, end) in sorted(tensors.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        obj[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    body += b" " * (-len(body) % pad_to)
    return struct.pack("<Q", len(body)) + body
