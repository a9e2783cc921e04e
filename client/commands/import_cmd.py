"""Put an existing checkpoint directory into a trainer job (an emulator admin route).

The flat directory is streamed as a tar built on the fly, one file at a time, so a multi-GB
checkpoint never sits in memory. The emulator classifies it from its bytes like any other row.
"""

from __future__ import annotations

import argparse
import tarfile
from pathlib import Path
from typing import Iterator

from client.commands._common import add_connection_args, control_plane, human_errors
from client.control_plane import CheckpointRow
from client.retry import NO_RETRY

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
    add_connection_args(parser)


@human_errors
def run(args: argparse.Namespace) -> int:
    files = flat_files(Path(args.directory))
    total = sum(f.stat().st_size for f in files)
    with control_plane(args) as cp:
        params = {"name": args.name}
        if args.base_model:
            params["baseModel"] = args.base_model
        body = cp.http.post_json(
            f"/_emulator/v1/accounts/{cp.account_id()}/rlorTrainerJobs/{args.job}/checkpoints:import",
            params=params, content=tar_stream(files), headers={"Content-Type": "application/x-tar"},
            retry=NO_RETRY, timeout_s=3600)
    row = CheckpointRow.from_wire(body.get("checkpoint") or {})
    print(f"imported {len(files)} file(s), {total} bytes -> {row.name}  "
          f"[{row.kind}, {'promotable' if row.promotable else 'not promotable'}]")
    return 0

