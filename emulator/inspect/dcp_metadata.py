"""A safe reader for PyTorch DCP `.metadata`, without torch.

PyTorch reads `.metadata` with plain `pickle.load`: a crafted upload runs code there, and
`torch.load(weights_only=True)` cannot read it. This module unpickles it with a standard-library
`pickle.Unpickler` whose `find_class` admits only the globals torch 2.13 actually writes into
`.metadata` (checked with `pickletools.dis` on a real save), each mapped to a local stand-in:

    torch.distributed.checkpoint.metadata   Metadata, StorageMeta, TensorStorageMetadata,
                                            BytesStorageMetadata, ChunkStorageMetadata,
                                            TensorProperties, MetadataIndex, _MEM_FORMAT_ENCODING
    torch.distributed.checkpoint.filesystem _StorageInfo
    torch                                   Size, and dtype names (float32, bfloat16, ...)
    torch.serialization                     _get_layout
    pathlib                                 PosixPath

Everything else fails closed (the global is never imported); `persistent_load` raises. The
stand-ins accept only the state fields the real classes have, and after unpickling every type
and bound is checked again (`validate`), so the rest of the inspector works on plain, checked
Python values.
"""

from __future__ import annotations

import io
import pickle
import posixpath
from dataclasses import dataclass

from .names import MAX_NDIM


class UnsafePickle(pickle.UnpicklingError):
    """The pickle asked for something DCP metadata never contains."""


# --- stand-ins ------------------------------------------------------------------------------
# Everything find_class hands out is shared by all loads in the process, so none of it may be
# changed by a pickle: BUILD on a class hits the metaclass's __setattr__, BUILD on a dtype,
# layout or constructor hits its __setstate__, and SETITEMS/APPEND find nothing to call.

class _Sealed(type):
    """Metaclass of the stand-in classes: the classes themselves cannot be modified."""

    def __setattr__(cls, name: str, value: object) -> None:
        raise UnsafePickle(f"attempt to modify {cls.__name__}.{name}")

    def __delattr__(cls, name: str) -> None:
        raise UnsafePickle(f"attempt to modify {cls.__name__}.{name}")


class _Immutable:
    """Base of the shared stand-in values (dtypes, the layout, constructors)."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise UnsafePickle(f"attempt to modify {type(self).__name__}.{name}")

    __delattr__ = __setattr__

    def __setstate__(self, state: object) -> None:
        raise UnsafePickle(f"attempt to set the state of a shared {type(self).__name__}")


class _Record(metaclass=_Sealed):
    """Base of the stand-ins: an object whose state may only set the listed fields."""

    _fields: tuple[str, ...] = ()

    def __setstate__(self, state: object) -> None:
        # Pickle's BUILD passes either a dict, or (dict | None, slot-dict) for slotted classes.
        if isinstance(state, tuple) and len(state) == 2 and state[0] is None:
            state = state[1]
        if not isinstance(state, dict):
            raise UnsafePickle(f"{type(self).__name__}: unexpected state of type {type(state).__name__}")
        for key, value in state.items():
            if key not in self._fields:
                raise UnsafePickle(f"{type(self).__name__}: unexpected field {key!r}")
            object.__setattr__(self, key, value)


class Metadata(_Record):
    _fields = ("state_dict_metadata", "planner_data", "storage_data", "storage_meta", "version")
    state_dict_metadata = None
    planner_data = None
    storage_data = None
    storage_meta = None
    version = None


class StorageMeta(_Record):
    _fields = ("checkpoint_id", "save_id", "load_id", "modules")
    checkpoint_id = None
    save_id = None
    load_id = None
    modules = None


class TensorStorageMetadata(_Record):
    _fields = ("properties", "size", "chunks")
    properties = None
    size = None
    chunks = None


class BytesStorageMetadata(_Record):
    _fields = ()


class ChunkStorageMetadata(_Record):
    _fields = ("offsets", "sizes")
    offsets = None
    sizes = None


class MetadataIndex(_Record):
    # Hashed by identity (object's default): a hostile pickle can use one as a dict key before
    # its state is set, and identity hashing cannot be steered by its content.
    _fields = ("fqn", "offset", "index")
    fqn = None
    offset = None
    index = None


class StorageInfo(_Record):
    """Stand-in for torch.distributed.checkpoint.filesystem._StorageInfo."""

    _fields = ("relative_path", "offset", "length", "transform_descriptors")
    relative_path = None
    offset = None
    length = None
    transform_descriptors = None


class TensorProperties(_Record):
    """torch pickles this as a 5-tuple (dtype, layout, requires_grad, memory format, pin_memory)."""

    _fields = ("dtype", "layout", "requires_grad", "memory_format", "pin_memory")
    dtype = None
    layout = None
    requires_grad = False
    memory_format = 0
    pin_memory = False

    def __setstate__(self, state: object) -> None:
        if isinstance(state, tuple):
            if len(state) != 5:
                raise UnsafePickle(f"TensorProperties: state tuple of length {len(state)}")
            state = dict(zip(self._fields, state))
        super().__setstate__(state)


class DType(_Immutable):
    """Stand-in for a torch dtype: its name and element size in bytes."""

    __slots__ = ("name", "itemsize")

    def __init__(self, name: str, itemsize: int):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "itemsize", itemsize)

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class Layout(_Immutable):
    __slots__ = ("name",)

    def __init__(self, name: str):
        object.__setattr__(self, "name", name)


class _Constructor(_Immutable):
    """A checked stand-in for a torch/pathlib callable that pickle REDUCEs."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        object.__setattr__(self, "fn", fn)

    def __call__(self, *args: object) -> object:
        return self.fn(*args)


DTYPES: dict[str, DType] = {n: DType(n, s) for n, s in {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1,
    "uint64": 8, "uint32": 4, "uint16": 2, "uint8": 1, "bool": 1,
    "complex128": 16, "complex64": 8, "complex32": 4,
    "float8_e4m3fn": 1, "float8_e5m2": 1, "float8_e4m3fnuz": 1, "float8_e5m2fnuz": 1,
    "float8_e8m0fnu": 1, "float4_e2m1fn_x2": 1,
}.items()}
STRIDED = Layout("torch.strided")


def _size(dims: object) -> tuple[int, ...]:
    """Stand-in for torch.Size(dims): a tuple of non-negative ints."""
    if not isinstance(dims, (tuple, list)) or len(dims) > MAX_NDIM or not all(
            type(x) is int and x >= 0 for x in dims):
        raise UnsafePickle("torch.Size with invalid dimensions")
    return tuple(dims)


def _get_layout(name: object) -> Layout:
    if name != "torch.strided":
        raise UnsafePickle(f"unsupported tensor layout {name!r}")
    return STRIDED


def _mem_format(value: object) -> int:
    """Stand-in for the _MEM_FORMAT_ENCODING enum: contiguous, channels_last, preserve."""
    if type(value) is not int or value not in (0, 1, 2):
        raise UnsafePickle(f"invalid memory format encoding {value!r}")
    return value


def _posix_path(*parts: object) -> str:
    """Stand-in for pathlib.PosixPath: the joined string; never touches the filesystem."""
    if not all(isinstance(p, str) for p in parts):
        raise UnsafePickle("PosixPath with non-string parts")
    return posixpath.join(*parts) if parts else "."


_DCP_MD = "torch.distributed.checkpoint.metadata"
ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    (_DCP_MD, "Metadata"): Metadata,
    (_DCP_MD, "StorageMeta"): StorageMeta,
    (_DCP_MD, "TensorStorageMetadata"): TensorStorageMetadata,
    (_DCP_MD, "BytesStorageMetadata"): BytesStorageMetadata,
    (_DCP_MD, "ChunkStorageMetadata"): ChunkStorageMetadata,
    (_DCP_MD, "TensorProperties"): TensorProperties,
    (_DCP_MD, "MetadataIndex"): MetadataIndex,
    (_DCP_MD, "_MEM_FORMAT_ENCODING"): _Constructor(_mem_format),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"): StorageInfo,
    ("torch", "Size"): _Constructor(_size),
    ("torch.serialization", "_get_layout"): _Constructor(_get_layout),
    ("pathlib", "PosixPath"): _Constructor(_posix_path),
    **{("torch", name): dtype for name, dtype in DTYPES.items()},
}


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only ALLOWED_GLOBALS, to stand-ins; nothing is ever imported."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise UnsafePickle(f"refers to {module}.{name}, which is not a DCP metadata class") from None

    def persistent_load(self, pid: object) -> object:
        raise UnsafePickle("uses a persistent id, which DCP metadata never does")


def unpickle(raw: bytes) -> object:
    """Unpickle `raw` with SafeUnpickler. Raises UnsafePickle or another exception on bad input."""
    return SafeUnpickler(io.BytesIO(raw)).load()


# --- checked plain values ---------------------------------------------------------------------

@dataclass(frozen=True)
class TensorEntry:
    dtype: DType
    size: tuple[int, ...]
    chunks: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]   # (offsets, sizes)


@dataclass(frozen=True)
class StorageEntry:
    fqn: str
    offset: tuple[int, ...] | None      # chunk offsets for a tensor, None for bytes
    relative_path: str
    file_offset: int
    length: int
    transformed: bool                   # transform_descriptors present (e.g. compression)


@dataclass(frozen=True)
class DcpMetadata:
    """The checked content of `.metadata`: flat key -> TensorEntry or None (bytes item)."""

    items: dict[str, TensorEntry | None]
    paths: dict[str, tuple[str | int, ...]]      # flat key -> path in the original nested dict
    storage: tuple[StorageEntry, ...]


class BadMetadata(ValueError):
    """The unpickled object is not well-formed DCP metadata; the message says where."""


def numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _dims(x: object, what: str) -> tuple[int, ...]:
    if not isinstance(x, tuple) or len(x) > MAX_NDIM or not all(type(v) is int and v >= 0 for v in x):
        raise BadMetadata(f"{what} is not a tuple of non-negative ints")
    return x


def validate(obj: object) -> DcpMetadata:
    """Check every type and bound of an unpickled Metadata; return plain checked values."""
    if type(obj) is not Metadata:
        raise BadMetadata(f"top-level object is a {type(obj).__name__}, not a DCP Metadata")
    sdm = obj.state_dict_metadata
    if type(sdm) is not dict or not sdm:
        raise BadMetadata("state_dict_metadata is missing or empty")
    items: dict[str, TensorEntry | None] = {}
    for key, md in sdm.items():
        if type(key) is not str or not key:
            raise BadMetadata("state_dict_metadata has a key that is not a non-empty string")
        items[key] = _tensor_entry(key, md)

    paths = _planner_paths(obj.planner_data, items)
    storage = _storage_entries(obj.storage_data, items)

    if obj.storage_meta is not None:
        sm = obj.storage_meta
        if type(sm) is not StorageMeta:
            raise BadMetadata("storage_meta is not a StorageMeta")
        for field_name in ("checkpoint_id", "save_id", "load_id"):
            if getattr(sm, field_name) is not None and type(getattr(sm, field_name)) is not str:
                raise BadMetadata(f"storage_meta.{field_name} is not a string")
        if sm.modules is not None and (type(sm.modules) is not list
                                       or not all(type(m) is str for m in sm.modules)):
            raise BadMetadata("storage_meta.modules is not a list of strings")
    if obj.version is not None and type(obj.version) is not str:
        raise BadMetadata("version is not a string")
    return DcpMetadata(items, paths, storage)


def _tensor_entry(key: str, md: object) -> TensorEntry | None:
    if type(md) is BytesStorageMetadata:
        return None
    if type(md) is not TensorStorageMetadata:
        raise BadMetadata(f"{key!r} has metadata of type {type(md).__name__}")
    props = md.properties
    if type(props) is not TensorProperties or type(props.dtype) is not DType:
        raise BadMetadata(f"{key!r} has no valid tensor properties")
    if props.layout is not STRIDED:
        raise BadMetadata(f"{key!r} has an unsupported layout")
    size = _dims(md.size, f"{key!r} size")
    if type(md.chunks) is not list:
        raise BadMetadata(f"{key!r} chunks is not a list")
    chunks = []
    covered = 0
    for chunk in md.chunks:
        if type(chunk) is not ChunkStorageMetadata:
            raise BadMetadata(f"{key!r} has a chunk of type {type(chunk).__name__}")
        offsets = _dims(chunk.offsets, f"{key!r} chunk offsets")
        sizes = _dims(chunk.sizes, f"{key!r} chunk sizes")
        if len(offsets) != len(size) or len(sizes) != len(size) or any(
                o + s > d for o, s, d in zip(offsets, sizes, size)):
            raise BadMetadata(f"{key!r} has a chunk outside the tensor's size {list(size)}")
        covered += numel(sizes)
        chunks.append((offsets, sizes))
    if covered != numel(size) and not (numel(size) == 0 and covered == 0):
        raise BadMetadata(f"{key!r} chunks cover {covered} elements of {numel(size)}")
    return TensorEntry(props.dtype, size, tuple(chunks))


def _planner_paths(planner_data: object, items: dict) -> dict[str, tuple[str | int, ...]]:
    """Flat key -> nested path. DCP writes planner_data; without it, split the flat key on dots."""
    if planner_data is None:
        return {k: tuple(k.split(".")) for k in items}
    if type(planner_data) is not dict or set(planner_data) != set(items):
        raise BadMetadata("planner_data does not list exactly the state_dict_metadata keys")
    paths = {}
    for key, path in planner_data.items():
        if (type(path) is not tuple or not path
                or not all(type(p) in (str, int) for p in path)
                or ".".join(str(p) for p in path) != key):
            raise BadMetadata(f"planner_data path for {key!r} does not match the key")
        paths[key] = path
    return paths


def _storage_entries(storage_data: object, items: dict) -> tuple[StorageEntry, ...]:
    if type(storage_data) is not dict or not storage_data:
        raise BadMetadata("storage_data is missing or empty")
    out = []
    for index, info in storage_data.items():
        if type(index) is not MetadataIndex or type(index.fqn) is not str:
            raise BadMetadata("storage_data has a key that is not a MetadataIndex")
        if index.fqn not in items:
            raise BadMetadata(f"storage entry for {index.fqn!r}, which state_dict_metadata does not list")
        offset = None if index.offset is None else _dims(index.offset, f"storage key offset of {index.fqn!r}")
        if index.index is not None and type(index.index) is not int:
            raise BadMetadata(f"storage key index of {index.fqn!r} is not an int")
        if type(info) is not StorageInfo:
            raise BadMetadata(f"storage entry for {index.fqn!r} is not a _StorageInfo")
        if (type(info.relative_path) is not str or type(info.offset) is not int
                or type(info.length) is not int or info.offset < 0 or info.length < 0):
            raise BadMetadata(f"storage entry for {index.fqn!r} has an invalid path, offset or length")
        td = info.transform_descriptors
        if td is not None and (type(td) not in (list, tuple) or not all(type(t) is str for t in td)):
            raise BadMetadata(f"storage entry for {index.fqn!r} has invalid transform descriptors")
        out.append(StorageEntry(index.fqn, offset, info.relative_path, info.offset, info.length, bool(td)))
    return tuple(out)
