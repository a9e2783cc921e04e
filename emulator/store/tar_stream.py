"""Incremental extraction of an uploaded tar stream into a flat directory, in constant memory.

Why our own parser: `tarfile` needs a blocking file object, and buffering the upload to disk first
would copy every byte twice. This one is fed chunks as they arrive and writes file data straight
to the destination. It accepts only what a checkpoint directory can hold: regular files with flat
names (plus PAX headers for long names and large sizes); links, devices, directories with content,
traversal, duplicates and anything over the caps are refused before a byte of them is written.
"""

from __future__ import annotations

from pathlib import Path

BLOCK = 512


class TarRejected(ValueError):
    """The upload is not an acceptable checkpoint archive; the message names the entry and rule."""


def _octal(field: bytes, what: str) -> int:
    text = field.rstrip(b"\0 ").lstrip(b" ")
    if field[:1] and field[0] & 0x80:  # base-256 (GNU) size encoding
        return int.from_bytes(field[1:], "big")
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise TarRejected(f"tar header: {what} field is not a number") from None


def _checksum_ok(header: bytes) -> bool:
    stored = _octal(header[148:156], "checksum")
    computed = sum(header[:148]) + 8 * 32 + sum(header[156:])
    return stored == computed


def _parse_pax(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            raise TarRejected("tar pax header: malformed record")
        length = int(data[pos:space] or b"0")
        if length <= 0 or pos + length > len(data):
            raise TarRejected("tar pax header: bad record length")
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        out[key.decode("utf-8", "strict")] = value.decode("utf-8", "strict")
        pos += length
    return out


def safe_member_name(name: str) -> str:
    """Flat file names only: no directories, traversal, absolute paths, control characters."""
    name = name.removeprefix("./")
    if (not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("-")
            or any(ord(c) < 32 for c in name) or len(name.encode()) > 255):
        raise TarRejected(f"{name!r}: checkpoint archives may only hold flat file names")
    return name


class TarExtractor:
    """Feed bytes with `feed()`, then call `finish()`; files land in `dest` as they stream in."""

    def __init__(self, dest: Path, *, max_bytes: int, max_files: int, max_pax: int = 64 << 10):
        self.dest = dest
        self.max_bytes, self.max_files, self.max_pax = max_bytes, max_files, max_pax
        self.total = 0
        self.files: list[str] = []
        self._buf = bytearray()
        self._state = "header"
        self._remaining = 0   # bytes of the current member's data still to come
        self._padding = 0
        self._out = None
        self._pax: dict[str, str] = {}
        self._pax_data: bytearray | None = None
        self._ended = False
        self._pax_global = False
        self._file_bytes = 0

    # -------------------------------------------------------------- stream
    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.total > self.max_bytes + 2 * BLOCK * (self.max_files + 2) + (1 << 20):
            raise TarRejected(f"upload exceeds the import cap of {self.max_bytes} bytes")
        view = memoryview(chunk)
        while view:
            if self._state == "data":
                take = min(self._remaining, len(view))
                if self._pax_data is not None:
                    self._pax_data += view[:take]
                else:
                    self._out.write(view[:take])
                self._remaining -= take
                view = view[take:]
                if self._remaining == 0:
                    self._end_member()
            elif self._state == "pad":
                take = min(self._padding, len(view))
                self._padding -= take
                view = view[take:]
                if self._padding == 0:
                    self._state = "header"
            elif self._state == "header":
                need = BLOCK - len(self._buf)
                self._buf += view[:need]
                view = view[need:]
                if len(self._buf) == BLOCK:
                    header, self._buf = bytes(self._buf), bytearray()
                    self._header(header)
            else:  # "end": trailing zero blocks or nothing
                if any(view):
                    raise TarRejected("tar: data after the end-of-archive marker")
                view = view[len(view):]

    def finish(self) -> list[str]:
        if self._state == "data" or self._out is not None:
            raise TarRejected("tar: the upload ended in the middle of a file")
        if not self._ended:  # a stream cut between two members must not pass for a whole archive
            raise TarRejected("tar: the upload ended without an end-of-archive marker")
        if not self.files:
            raise TarRejected("tar: the archive holds no files")
        return self.files

    # -------------------------------------------------------------- members
    def _header(self, header: bytes) -> None:
        if not any(header):
            self._state, self._ended = "end", True
            return
        if not _checksum_ok(header):
            raise TarRejected("tar header: checksum mismatch (not a tar stream?)")
        typeflag = header[156:157]
        size = _octal(header[124:136], "size")
        raw_name = header[0:100].split(b"\0", 1)[0]
        prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
        try:
            name = (prefix + b"/" + raw_name if prefix else raw_name).decode("utf-8", "strict")
        except UnicodeDecodeError:
            raise TarRejected("tar header: file name is not UTF-8") from None
        if typeflag in (b"x", b"g"):
            if size > self.max_pax:
                raise TarRejected("tar pax header: too large")
            self._pax_global = typeflag == b"g"
            self._begin(size, pax=True)
            return
        name = self._pax.pop("path", name)
        size = int(self._pax.pop("size", size))
        self._pax.clear()
        if typeflag == b"5":
            if name.rstrip("/").removeprefix("./") not in ("", "."):
                raise TarRejected(f"{name!r}: checkpoint archives may not contain directories")
            self._begin(0)
            return
        if typeflag not in (b"0", b"\0", b"7"):
            kinds = {b"1": "a hard link", b"2": "a symbolic link", b"3": "a device", b"4": "a device",
                     b"6": "a FIFO"}
            raise TarRejected(f"{name!r}: {kinds.get(typeflag, 'an unsupported tar entry')} is not allowed")
        name = safe_member_name(name)
        if name in self.files:
            raise TarRejected(f"{name!r}: appears twice in the archive")
        if len(self.files) >= self.max_files:
            raise TarRejected(f"archive holds more than {self.max_files} files")
        self._file_bytes += size
        if self._file_bytes > self.max_bytes:
            raise TarRejected(f"{name!r}: the archive exceeds the import cap of {self.max_bytes} bytes")
        self.files.append(name)
        self._out = open(self.dest / name, "xb")
        self._begin(size)

    def _begin(self, size: int, pax: bool = False) -> None:
        self._remaining = size
        self._padding = (-size) % BLOCK
        self._pax_data = bytearray() if pax else None
        self._state = "data" if size else ("pad" if self._padding else "header")
        if size == 0:
            self._end_member()

    def _end_member(self) -> None:
        if self._pax_data is not None:
            records = _parse_pax(bytes(self._pax_data))
            if not self._pax_global:
                self._pax = records
            self._pax_data, self._pax_global = None, False
        if self._out is not None:
            self._out.close()  # fsynced once, with the whole directory, when it is published
            self._out = None
        self._state = "pad" if self._padding else "header"
