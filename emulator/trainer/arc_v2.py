"""ARC_V2 deltas: full weights stored as XOR against earlier full weights of the same job.

The base is the previous snapshot of the chain: an INFERENCE_BASE, or the weights an earlier
delta encodes (the trainer keeps those, a deployment reconstructs them), named by `base_identity`.

The real byte format is not public; ours is specified in docs/checkpoints.md. A delta directory
looks like the target's Hugging Face directory (same config.json, index, shard names, tensor
names, dtypes, shapes and data offsets) plus:

- `delta.json`: {"format": "arc_v2", "encoding": "xor", "checksum_format": "adler32",
  "base_identity": <name of the base checkpoint>};
- in every shard's `__metadata__`: "delta_format": "xor-v1" and "target_adler32": the 8-hex
  adler32 of the reconstructed shard's data section (the target's own metadata is kept beside);
- each tensor's bytes = target raw bytes XOR base raw bytes.

XOR of raw bytes is lossless for every dtype (bf16 and fp8 included), so the data section is
read and written as bytes, never through numpy dtypes. numpy is only the XOR engine. Tensors are
streamed in bounded chunks, so memory does not grow with the model. No torch here: the trainer
calls these, and so can anything that only has the files.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
from collections import OrderedDict, deque
from pathlib import Path

import numpy as np

try:  # zlib-ng: the same adler32 (same values), SIMD with run-time CPU dispatch, about 5x zlib's
    from zlib_ng.zlib_ng import adler32
except ImportError:  # pragma: no cover - a dependency; zlib is the fallback, not an error
    from zlib import adler32

from fwemu.emulator.inspect import Kind, inspect_checkpoint
from fwemu.emulator.inspect.families import ARC_MANIFEST, DELTA_FORMAT
from fwemu.emulator.inspect.names import DELTA_MANIFEST, HF_CONFIG, SAFETENSORS_SUFFIX
from fwemu.emulator.inspect.reader import CheckpointDir, Rejected
from fwemu.emulator.inspect.safetensors_header import Header, encode_header, read_header

CHUNK = 8 * 1024 * 1024
MARKERS = ("delta_format", "target_adler32")


def make_delta(base_dir: str | os.PathLike, target_dir: str | os.PathLike,
               out_dir: str | os.PathLike, base_identity: str) -> None:
    """Write into `out_dir` the ARC_V2 delta of HF weights `target_dir` against `base_dir`.

    Both must be INFERENCE_BASE directories with the same config.json and the same tensors
    (names, shard assignment, dtypes, shapes). `out_dir` must be missing or empty. Raises
    ValueError when the inputs do not fit together.
    """
    if not isinstance(base_identity, str) or not base_identity:
        raise ValueError("base_identity must name the base checkpoint")
    base, target = _Weights(base_dir, "base"), _Weights(target_dir, "target")
    if base.config != target.config:
        raise ValueError("base and target config.json differ; a delta needs the same model")
    base.check_same_tensors(target)
    out = _empty_dir(out_dir)

    for name in target.other_files:
        shutil.copyfile(target.root / name, out / name)
    for shard, header in target.headers.items():
        meta = dict(header.metadata or {})
        clash = [m for m in MARKERS if m in meta]
        if clash:
            raise ValueError(f"target shard {shard} already carries delta marker {clash[0]!r}")
        meta.update(delta_format=DELTA_FORMAT, target_adler32="00000000")  # fixed width: patched below
        adler = 1
        with open(out / shard, "wb") as f:
            f.write(encode_header(_layout(header), meta))
            for tensor in _in_offset_order(header):
                for t_chunk, b_chunk in zip(target.chunks(tensor), base.chunks(tensor)):
                    adler = adler32(t_chunk, adler)
                    f.write(_xor(t_chunk, b_chunk))
            meta["target_adler32"] = f"{adler:08x}"
            f.seek(0)
            f.write(encode_header(_layout(header), meta))
    manifest = {**ARC_MANIFEST, "base_identity": base_identity}
    (out / DELTA_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

    verdict = inspect_checkpoint(out)
    if verdict.kind is not Kind.INFERENCE_ARC_V2:  # our own output must classify as what it is
        raise RuntimeError(f"make_delta wrote something that is not ARC_V2: {verdict.reason}")


def apply_delta(base_dir: str | os.PathLike, delta_dir: str | os.PathLike,
                out_dir: str | os.PathLike) -> None:
    """Reconstruct into `out_dir` the target weights of `delta_dir` applied to `base_dir`.

    The result is the target directory bit for bit (weights, headers, config and extras).
    Each shard's adler32 is checked against its `target_adler32`; a mismatch (wrong base,
    corrupted delta) raises ValueError and leaves no reconstructed shard behind.
    """
    delta = _Weights.of(delta_dir, "delta")  # first: a directory that is no delta is named as such
    base = _Weights.of(base_dir, "base")
    if base.config != delta.config:
        raise ValueError("base and delta config.json differ; this delta is not against this base")
    base.check_same_tensors(delta)
    out = _empty_dir(out_dir)

    for name in delta.other_files:
        if name != DELTA_MANIFEST:
            shutil.copyfile(delta.root / name, out / name)
    for shard, header in delta.headers.items():
        meta = dict(header.metadata or {})
        expected = meta.pop("target_adler32")
        meta.pop("delta_format")
        partial = out / (shard + ".partial")
        with open(partial, "wb") as f:
            f.write(encode_header(_layout(header), meta or None))
            if base.same_offsets(delta, shard):
                adler = _xor_section(base, delta, shard, f)
            else:
                adler = _xor_tensors(base, delta, header, f)
        if f"{adler:08x}" != expected:
            partial.unlink()
            raise ValueError(f"{shard}: adler32 of the reconstructed data is {adler:08x}, the delta "
                             f"says {expected}; wrong base or corrupted delta")
        partial.rename(out / shard)


def _xor_section(base: "_Weights", delta: "_Weights", shard: str, f) -> int:
    """XOR the two data sections (same layout) in CHUNK pieces read straight into numpy buffers,
    writing each piece. Past one piece, the checksum of each runs on a worker thread meanwhile
    (adler32 releases the GIL); a buffer is refilled only once its previous piece is summed."""
    hb, hd = base.headers[shard], delta.headers[shard]
    n = hd.file_size - hd.data_start
    if n > CHUNK:  # fresh buffers: numpy asks for huge pages at this size (measured faster than reuse)
        scratch, *ring = buffers = [np.empty(CHUNK, np.uint8) for _ in range(3)]
    else:
        scratch, piece_buffer = buffers = _buffers.take(n)
        ring = [piece_buffer]
    adler, pending = 1, deque()  # (future adler32 of a piece, its length), oldest first
    with open(base.root / shard, "rb") as fb, open(delta.root / shard, "rb") as fd:
        fb.seek(hb.data_start)
        fd.seek(hd.data_start)
        for i, start in enumerate(range(0, n, CHUNK)):
            if len(pending) == len(ring):
                adler = _fold(adler, *pending.popleft())
            size = min(CHUNK, n - start)
            piece = ring[i % len(ring)][:size]
            if fb.readinto(memoryview(piece)) != size or fd.readinto(memoryview(scratch)[:size]) != size:
                raise ValueError(f"{shard}: truncated while reading its data section")
            np.bitwise_xor(piece, scratch[:size], out=piece)
            if len(ring) > 1:
                pending.append((_checksummer().submit(adler32, piece), size))
            else:
                adler = adler32(piece, adler)
            f.write(piece)
    while pending:
        adler = _fold(adler, *pending.popleft())
    if n <= CHUNK:
        _buffers.give(buffers)
    return adler


class _BufferPool:
    """The two buffers of the last one-piece data section XORed, for the next one. A fresh buffer
    of this size costs a page fault per 4 KiB page on first touch: about 1,500 faults and 2.5 ms
    for the 3 MiB default model, more than its XOR (bench/deploy_speed.py). One pair is kept (at
    most 2 x CHUNK bytes); a concurrent apply allocates its own."""

    def __init__(self):
        self._lock = threading.Lock()
        self._free: list[np.ndarray] | None = None

    def take(self, size: int) -> list[np.ndarray]:
        """Two buffers of `size` bytes (views of larger pooled ones when they fit)."""
        with self._lock:
            free, self._free = self._free, None
        if free is None or free[0].size < size:
            free = [np.empty(size, np.uint8) for _ in range(2)]
        return [b[:size] for b in free]

    def give(self, buffers: list[np.ndarray]) -> None:
        whole = [b.base if b.base is not None else b for b in buffers]
        with self._lock:
            if self._free is None or self._free[0].size < whole[0].size:
                self._free = whole


_buffers = _BufferPool()


def _fold(adler: int, piece_sum, size: int) -> int:
    return adler32_combine(adler, piece_sum.result(), size)


_pool = None


def _checksummer():
    """One worker thread, so the checksum overlaps reading, XOR and writing."""
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor
        _pool = ThreadPoolExecutor(1, thread_name_prefix="arc-v2-adler32")
    return _pool


def adler32_combine(a1: int, a2: int, len2: int) -> int:
    """adler32(A + B) from adler32(A), adler32(B) and len(B) (zlib's adler32_combine)."""
    mod = 65521
    rem = len2 % mod
    s1 = ((a1 & 0xFFFF) + (a2 & 0xFFFF) + mod - 1) % mod
    s2 = (rem * (a1 & 0xFFFF) + (a1 >> 16) + (a2 >> 16) + mod - rem) % mod
    return s1 | (s2 << 16)


def _xor_tensors(base: "_Weights", delta: "_Weights", header: Header, f) -> int:
    """Tensor by tensor, for a base whose shard lays the same tensors out at other offsets."""
    adler = 1
    for tensor in _in_offset_order(header):
        for d_chunk, b_chunk in zip(delta.chunks(tensor), base.chunks(tensor)):
            t_chunk = _xor(d_chunk, b_chunk)
            adler = adler32(t_chunk, adler)
            f.write(t_chunk)
    return adler


# --- helpers -------------------------------------------------------------------------------------

def _identity(root: Path) -> tuple:
    """What a directory's files are now: (name, device, inode, mode, size, mtime_ns) of each entry.

    Stricter than the store's row fingerprint (which has no inode): a file rewritten, replaced,
    added or removed changes it, so a verdict cached under it is one about these very bytes.
    A hard-linked copy (a deployment's version directory) has the identity of its source."""
    out = []
    with os.scandir(root) as it:
        for e in it:
            st = e.stat(follow_symlinks=False)
            out.append((e.name, st.st_dev, st.st_ino, stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))


class _Weights:
    """An HF weights directory: config, each shard's validated header, and raw tensor reads."""

    _cache: "OrderedDict[tuple, _Weights]" = OrderedDict()
    _cache_lock = threading.Lock()
    CACHE_SIZE = 16

    @classmethod
    def of(cls, root: str | os.PathLike, role: str) -> "_Weights":
        """The inspected directory, re-inspected unless its files' identity is one already judged
        (then only the path differs: a hard-linked copy, or the same directory again)."""
        root = Path(root)
        try:
            key = (role, _identity(root))
        except OSError as exc:
            raise ValueError(f"{role} {root} cannot be listed: {exc}") from None
        with cls._cache_lock:
            hit = cls._cache.get(key)
            if hit is not None:
                cls._cache.move_to_end(key)
        if hit is not None:
            return hit.at(root)
        w = cls(root, role)
        if _identity(root) == key[1]:  # unchanged while it was read: safe to remember
            with cls._cache_lock:
                cls._cache[key] = w
                while len(cls._cache) > cls.CACHE_SIZE:
                    cls._cache.popitem(last=False)
        return w

    def at(self, root: Path) -> "_Weights":
        if root == self.root:
            return self
        other = object.__new__(_Weights)
        other.__dict__.update(self.__dict__, root=root)
        return other

    def same_offsets(self, other: "_Weights", shard: str) -> bool:
        """Whether `shard` lays out every tensor at the same offsets in both (so the data
        sections can be combined whole). check_same_tensors must have passed."""
        a, b = self.headers[shard], other.headers[shard]
        return (a.file_size - a.data_start == b.file_size - b.data_start
                and all((t.begin, t.end) == (b.tensors[k].begin, b.tensors[k].end) for k, t in a.tensors.items()))

    def __init__(self, root: str | os.PathLike, role: str):
        self.root = Path(root)
        verdict = inspect_checkpoint(self.root)
        allowed = (Kind.INFERENCE_ARC_V2,) if role == "delta" else (Kind.INFERENCE_BASE,)
        if verdict.kind not in allowed:
            what = "an ARC_V2 delta" if role == "delta" else allowed[0].value
            raise ValueError(f"{role} {self.root} is not {what}: {verdict.reason or verdict.kind.value}")
        try:
            d = CheckpointDir(self.root)
            self.headers: dict[str, Header] = {
                name: read_header(d, name) for name in sorted(d.entries)
                if name.endswith(SAFETENSORS_SUFFIX)}
        except Rejected as r:  # changed since it was inspected
            raise ValueError(f"{role} {self.root}: {r.reason}") from None
        self.config = json.loads((self.root / HF_CONFIG).read_text())
        self.other_files = sorted(n for n in d.entries if n not in self.headers)
        self.where = {t: (shard, h) for shard, h in self.headers.items() for t in h.tensors}

    def check_same_tensors(self, other: "_Weights") -> None:
        for t in sorted(set(self.where) ^ set(other.where)):
            raise ValueError(f"tensor {t!r} is in only one of the two checkpoints")
        for t, (shard, h) in self.where.items():
            o_shard, o_h = other.where[t]
            a, b = h.tensors[t], o_h.tensors[t]
            if shard != o_shard:
                raise ValueError(f"tensor {t!r} is in shard {shard} of one checkpoint, {o_shard} of the other")
            if (a.dtype, a.shape) != (b.dtype, b.shape):
                raise ValueError(f"tensor {t!r} is {a.dtype}{list(a.shape)} in one checkpoint and "
                                 f"{b.dtype}{list(b.shape)} in the other")

    def chunks(self, tensor: str):
        """The raw bytes of `tensor`, in chunks of at most CHUNK bytes (same cut points for all)."""
        shard, h = self.where[tensor]
        info = h.tensors[tensor]
        with open(self.root / shard, "rb") as f:
            f.seek(h.data_start + info.begin)
            left = info.end - info.begin
            while left:
                data = f.read(min(left, CHUNK))
                if not data:
                    raise ValueError(f"{shard}: truncated while reading tensor {tensor!r}")
                left -= len(data)
                yield data


def _layout(header: Header) -> dict[str, tuple[str, list[int], int, int]]:
    return {k: (v.dtype, list(v.shape), v.begin, v.end) for k, v in header.tensors.items()}


def _in_offset_order(header: Header) -> list[str]:
    return sorted(header.tensors, key=lambda k: (header.tensors[k].begin, header.tensors[k].end))


def _xor(a: bytes, b: bytes) -> bytes:
    if len(a) != len(b):
        raise ValueError("tensor byte lengths differ")
    return np.bitwise_xor(np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8)).tobytes()


def _empty_dir(path: str | os.PathLike) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise ValueError(f"{out} is not empty")
    return out
