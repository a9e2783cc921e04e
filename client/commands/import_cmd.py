"""Put an existing checkpoint directory into a trainer job (an emulator admin route).

When the emulator listens on a loopback address, the command first asks it to copy the directory
itself (`{"sourcePath": ...}`): the server copies in the kernel, as `cp` does, once it has proven
the caller is a local process of its own user. Anywhere else, or when the server refuses, the
flat directory is streamed as a tar built on the fly, one file at a time, so a multi-GB
checkpoint never sits in memory. Either way the emulator classifies it from its bytes.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
import tarfile
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from fwemu.client.commands._common import add_connection_args, control_plane, human_errors
from fwemu.client.control_plane import CheckpointRow, ControlPlaneClient
from fwemu.client.errors import FwApiError
from fwemu.client.retry import NO_RETRY

log = logging.getLogger(__name__)

CHUNK = 1 << 20
BLOCK = tarfile.BLOCKSIZE


def flat_files(directory: Path) -> list[Path]:
    """The regular files of `directory`; anything else (sub-directories, links) is refused."""
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a directory")
    files = []
    for entry in sorted(directory.iterdir()):
        if entry.is_symlink() or not entry.is_file():
            raise ValueError(f"{entry}: only a flat directory of regular files can be imported")
        files.append(entry)
    if not files:
        raise ValueError(f"{directory} is empty")
    return files


def tar_stream(files: list[Path], chunk_size: int = CHUNK) -> Iterator[bytes]:
    """A POSIX (pax) tar of `files`, yielded as header / data / padding pieces."""
    for path in files:
        st = path.stat()
        info = tarfile.TarInfo(path.name)
        info.size, info.mtime, info.mode = st.st_size, int(st.st_mtime), 0o644
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        sent = 0
        with open(path, "rb") as f:
            while chunk := f.read(chunk_size):
                sent += len(chunk)
                yield chunk
        if sent != st.st_size:
            raise OSError(f"{path} changed size while being imported")
        if sent % BLOCK:
            yield b"\0" * (BLOCK - sent % BLOCK)
    yield b"\0" * (2 * BLOCK)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", help="flat checkpoint directory")
    parser.add_argument("--job", required=True, help="trainer job id")
    parser.add_argument("--name", required=True, help="checkpoint name to list it under")
    parser.add_argument("--base-model", default=None,
                        help="create the job (COMPLETED) with this base model if it does not exist")
    parser.add_argument("--stream", action="store_true",
                        help="always stream a tar, even to an emulator on this host")
    add_connection_args(parser)


def is_local_url(url: str) -> bool:
    """True for http(s)://localhost or a loopback address: the server may share our file system."""
    host = (urlsplit(url).hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def import_by_path(cp: ControlPlaneClient, url: str, params: dict, directory: Path) -> dict | None:
    """Ask the server to copy `directory` itself; None when it will not (remote, other user, older server)."""
    try:
        return cp.http.post_json(url, {"sourcePath": str(directory.resolve())}, params=params,
                                 retry=NO_RETRY, timeout_s=3600)
    except FwApiError as exc:
        tar_only = exc.status == 400 and "tar stream" in exc.message and "sourcePath" not in exc.message
        if exc.reason == "PATH_IMPORT_UNAVAILABLE" or tar_only:
            log.info("import by path refused (%s); streaming a tar instead", exc.message)
            return None
        raise


def import_directory(cp: ControlPlaneClient, directory: Path, job: str, name: str,
                     base_model: str | None = None, *, stream: bool = False) -> tuple[dict, str]:
    """Import a flat checkpoint directory into `job` as `name`: by path when possible, else as a tar.

    Returns the server's answer and how the bytes travelled: "copied by the server" or "streamed".
    """
    files = flat_files(directory)
    url = f"/_emulator/v1/accounts/{cp.account_id()}/rlorTrainerJobs/{job}/checkpoints:import"
    params = {"name": name, **({"baseModel": base_model} if base_model else {})}
    if not stream and is_local_url(cp.base_url):
        body = import_by_path(cp, url, params, directory)
        if body is not None:
            return body, "copied by the server"
    return cp.http.post_json(url, params=params, content=tar_stream(files),
                             headers={"Content-Type": "application/x-tar"}, retry=NO_RETRY,
                             timeout_s=3600), "streamed"


def run(args: argparse.Namespace) -> int:
    """A missing path or a file is a usage error (exit 2), as for `fwemu inspect`."""
    directory = Path(args.directory)
    if not os.path.lexists(directory) or not directory.is_dir():
        what = "does not exist" if not os.path.lexists(directory) else "is not a directory"
        print(f"fwemu import: error: {directory} {what}", file=sys.stderr)
        return 2
    return _run(args)


@human_errors
def _run(args: argparse.Namespace) -> int:
    files = flat_files(Path(args.directory))
    total = sum(f.stat().st_size for f in files)
    with control_plane(args) as cp:
        body, how = import_directory(cp, Path(args.directory), args.job, args.name, args.base_model,
                                     stream=args.stream)
    row = CheckpointRow.from_wire(body.get("checkpoint") or {})
    print(f"imported {len(files)} file(s), {total} bytes ({how}) -> {row.name}  "
          f"[{row.kind}, {'promotable' if row.promotable else 'not promotable'}]")
    return 0

