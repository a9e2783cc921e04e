"""Hostile uploads and bodies: each is a 4xx in the service's envelope, and nothing is written.

"Nothing written" is checked on the store itself: no checkpoint, model or operation row, and no
file under the blob, model or staging directories. Archives are crafted byte by byte where
tarfile would refuse to write them (bad sizes, checksums, names).
"""

from __future__ import annotations

import json
import tarfile

import pytest

from tests.reliability.conftest import (
    ACCT_A, BASE, create_job, envelope, import_tar, in_process, nothing_written, store_of,
)

CAP_BYTES, CAP_FILES = 4 << 20, 50       # small import caps so bombs trip them quickly
BLOCK = 512


def member(name: str, data: bytes = b"x", type_=tarfile.REGTYPE, **attrs) -> bytes:
    """One tar member (header + padded data) in ustar/pax form, as tarfile writes it."""
    info = tarfile.TarInfo(name)
    info.type, info.size = type_, len(data) if type_ in (tarfile.REGTYPE, tarfile.CONTTYPE) else 0
    for k, v in attrs.items():
        setattr(info, k, v)
    head = info.tobuf(format=tarfile.PAX_FORMAT)
    body = data if info.size else b""
    return head + body + b"\0" * (-len(body) % BLOCK)


def raw_header(name: bytes, size_field: bytes, typeflag: bytes = b"0", fix_checksum: bool = True) -> bytes:
    """A ustar header built by hand, so any field can hold what tarfile would never write."""
    h = bytearray(BLOCK)
    h[0:len(name)] = name[:100]
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = size_field.ljust(12, b"\0")[:12]
    h[136:148] = b"00000000000\0"
    h[156:157] = typeflag
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    if fix_checksum:
        h[148:156] = b" " * 8
        h[148:156] = f"{sum(h):06o}\0 ".encode()
    return bytes(h)


def end() -> bytes:
    return b"\0" * (2 * BLOCK)


def pax(records: dict[str, str]) -> bytes:
    """A pax extended header member carrying `records` for the next member."""
    body = b""
    for k, v in records.items():
        rec = f" {k}={v}\n".encode()
        n = len(rec) + len(str(len(rec)))
        n = len(rec) + len(str(n))
        body += str(n).encode() + rec
    return raw_header(b"./PaxHeaders/x", f"{len(body):011o}".encode(), b"x") + body + b"\0" * (-len(body) % BLOCK)


def hostile_archives(tars: dict[str, bytes], dirs) -> dict[str, bytes]:
    """Every malicious or broken archive we try; a valid checkpoint's files ride along, so only
    the hostile part can be the reason for the refusal."""
    good = b"".join(member(p.name, p.read_bytes()) for p in sorted(dirs["INFERENCE_BASE"].iterdir()))
    cfg = (dirs["INFERENCE_BASE"] / "config.json").read_bytes()
    huge_octal = raw_header(b"model.safetensors", b"77777777777\0")          # 8 GiB declared
    base256 = raw_header(b"model.safetensors", b"\x80" + (1 << 62).to_bytes(11, "big"))
    cases = {
        # traversal and non-flat names
        "parent-traversal": good + member("../escape.json", cfg) + end(),
        "absolute-path": good + member("/etc/fwemu-evil", cfg) + end(),
        "nested-path": good + member("sub/config.json", cfg) + end(),
        "dot-dot": good + member("..", b"") + end(),
        "backslash": good + member("..\\evil", cfg) + end(),
        "leading-dash": good + member("-rf", cfg) + end(),
        "control-char-name": good + member("evil\nname", cfg) + end(),
        "pax-path-traversal": good + pax({"path": "../../pax-escape"}) + member("innocent", cfg) + end(),
        "pax-long-name": good + pax({"path": "a" * 300}) + member("innocent", cfg) + end(),
        "non-utf8-name": good + raw_header(b"caf\xe9.json", b"00000000001") + b"x".ljust(BLOCK, b"\0") + end(),
        "directory-with-content": good + member("sub", type_=tarfile.DIRTYPE) + member("sub/x", cfg) + end(),
        # links, devices and other special members
        "symlink": good + member("link.json", type_=tarfile.SYMTYPE, linkname="/etc/passwd") + end(),
        "symlink-relative": good + member("up", type_=tarfile.SYMTYPE, linkname="..") + end(),
        "hard-link": good + member("hard.json", type_=tarfile.LNKTYPE, linkname="config.json") + end(),
        "char-device": good + member("null", type_=tarfile.CHRTYPE, devmajor=1, devminor=3) + end(),
        "block-device": good + member("sda", type_=tarfile.BLKTYPE, devmajor=8, devminor=0) + end(),
        "fifo": good + member("pipe", type_=tarfile.FIFOTYPE) + end(),
        "gnu-sparse": good + raw_header(b"sparse.bin", b"00000001000", b"S") + end(),
        "gnu-longname": good + raw_header(b"././@LongLink", b"00000000010", b"L") + b"evil/x\0".ljust(BLOCK, b"\0")
        + end(),
        # oversized headers and sizes
        "pax-header-too-large": good + raw_header(b"./PaxHeaders/x", f"{1 << 20:011o}".encode(), b"x")
        + b"\0" * (1 << 20) + end(),
        "pax-malformed": good + raw_header(b"./PaxHeaders/x", b"00000000010", b"x") + b"zz nonsense".ljust(
            BLOCK, b"\0") + member("innocent", cfg) + end(),
        "pax-huge-size": good + pax({"size": str(1 << 50)}) + member("innocent", cfg) + end(),
        "declared-8GiB": huge_octal + b"\0" * BLOCK + end(),
        "declared-base256-exabytes": base256 + end(),
        "non-numeric-size": raw_header(b"model.safetensors", b"12x45\0") + end(),
        "bad-checksum": raw_header(b"config.json", b"00000000001", fix_checksum=False) + b"{".ljust(BLOCK, b"\0")
        + end(),
        # truncation
        "truncated-mid-file": tars["INFERENCE_BASE"][: len(tars["INFERENCE_BASE"]) // 2],
        "truncated-mid-header": good[:BLOCK + 300],
        "empty-body": b"",
        "only-end-marker": end(),
        "data-after-end": good + end() + b"trailing garbage",
        # duplicates and bombs
        "duplicate-member": good + member("config.json", cfg) + end(),
        "duplicate-after-dot-slash": good + member("./config.json", cfg) + end(),
        "too-many-files": good + b"".join(member(f"README-{i}.md", b"") for i in range(CAP_FILES + 1)) + end(),
        "total-over-cap": b"".join(member(f"shard-{i}.safetensors", b"\0" * (CAP_BYTES // 3)) for i in range(4))
        + end(),
        "sparse-size-bomb": raw_header(b"model.safetensors", f"{CAP_BYTES + 1:011o}".encode()) + end(),
        # not a checkpoint at all, or not a tar
        "gzip-not-tar": b"\x1f\x8b\x08\x00" + b"\0" * 2000,
        "random-bytes": bytes(range(256)) * 8,
        "pickle-weights": good + member("pytorch_model.bin", b"\x80\x04\x95") + end(),
        "unknown-file-kind": member("notes.exe", b"MZ") + end(),
        "two-families": good + b"".join(member(p.name, p.read_bytes())
                                        for p in sorted(dirs["INFERENCE_LORA"].iterdir())) + end(),
    }
    return cases


@pytest.fixture(scope="module")
def archives(sample_tars, sample_dirs) -> dict[str, bytes]:
    return hostile_archives(sample_tars, sample_dirs)


def test_the_good_part_of_each_archive_is_accepted_alone(sample_dirs):
    """Control: the valid files the hostile archives carry import fine, so a refusal is about the bad part."""
    good = b"".join(member(p.name, p.read_bytes()) for p in sorted(sample_dirs["INFERENCE_BASE"].iterdir()))
    with in_process(max_import_bytes=CAP_BYTES, max_import_files=CAP_FILES) as cp:
        create_job(cp, "ctrl")
        r = import_tar(cp, "ctrl", "good", good + end())
        assert r.status_code == 200, r.text
        assert r.json()["checkpoint"]["checkpointType"] == "CHECKPOINT_TYPE_INFERENCE_BASE"


def test_every_hostile_archive_is_refused_and_nothing_is_written(archives):
    refused = {}
    with in_process(max_import_bytes=CAP_BYTES, max_import_files=CAP_FILES) as cp:
        create_job(cp, "target")
        store = store_of(cp)
        for case, body in archives.items():
            r = import_tar(cp, "target", f"ckpt-{len(refused)}", body)
            assert 400 <= r.status_code < 500, (case, r.status_code, r.text[:300])
            refused[case] = envelope(r, r.status_code)
            nothing_written(store)
        assert store.counts()["jobs"] == 1
    assert len(refused) == len(archives) >= 40
    assert "escape" in refused["parent-traversal"] and "link" in refused["symlink"]


@pytest.mark.parametrize("name", ["../up", "a/b", ".hidden", "-dash", "x" * 200, "name with space", "nul\0",
                                  "caf\u00e9", "\u202eevil", "step-1\u0000.json", "", "step-1\n", "..", "."])
def test_bad_checkpoint_names_are_refused(name, sample_tars):
    with in_process() as cp:
        create_job(cp, "names")
        r = import_tar(cp, "names", name, sample_tars["INFERENCE_BASE"])
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:200])
        envelope(r, r.status_code)
        nothing_written(store_of(cp))


def test_invalid_utf8_in_names_and_paths(sample_tars):
    """Percent-encoded bytes that are not UTF-8, in the query and in path segments."""
    with in_process() as cp:
        create_job(cp, "utf")
        base = f"/_emulator/v1/accounts/{ACCT_A}/rlorTrainerJobs"
        for url in (f"{base}/utf/checkpoints:import?name=%FF%FE", f"{base}/utf/checkpoints:import?name=ok%C3%28",
                    f"{base}/%FF%FE/checkpoints:import?name=x",
                    f"/v1/accounts/{ACCT_A}/rlorTrainerJobs/%C3%28", f"/v1/accounts/%FF/rlorTrainerJobs",
                    f"/training/v1/rlorTrainerJobs/{ACCT_A}/%FF/api/v1/healthz"):
            r = cp.post(url, content=sample_tars["INFERENCE_BASE"], headers={"Content-Type": "application/x-tar"}) \
                if "import" in url else cp.get(url)
            assert 400 <= r.status_code < 500, (url, r.status_code, r.text[:200])
            envelope(r, r.status_code)
        nothing_written(store_of(cp))
        assert store_of(cp).counts()["jobs"] == 1


@pytest.mark.parametrize("content_type", ["application/octet-stream", "text/plain", "multipart/form-data"])
def test_wrong_content_type_is_refused_before_reading(sample_tars, content_type):
    """Only a tar stream or a JSON sourcePath (tests/reliability/test_path_import.py) is an import body."""
    with in_process() as cp:
        create_job(cp, "ct")
        r = cp.post(f"/_emulator/v1/accounts/{ACCT_A}/rlorTrainerJobs/ct/checkpoints:import",
                    params={"name": "x"}, content=sample_tars["INFERENCE_BASE"],
                    headers={"Content-Type": content_type})
        message = envelope(r, 400, "INVALID_ARGUMENT")
        assert "tar stream" in message and "sourcePath" in message
        nothing_written(store_of(cp))


def test_invalid_json_bodies_are_400(sample_tars):
    """Malformed, non-UTF-8, lone-surrogate and absurdly nested JSON: 400 envelopes, no job, no row."""
    bodies = [
        b"{not json", b'{"trainingConfig": {"baseModel": "b\xff\xfe"}}',
        b'{"trainingConfig": {"baseModel": "b\\ud800"}}', b'{"trainingConfig": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b"\xef\xbb\xbf{}", b"[]", b"null", b'"string"', b'{"trainingConfig": {"baseModel": 7}}',
        json.dumps({"trainingConfig": {"baseModel": BASE, "loraRank": -1}}).encode(),
        json.dumps({"trainingConfig": {"baseModel": BASE, "loraRank": 10 ** 30}}).encode(),
        json.dumps({"trainingConfig": {"baseModel": "x" * 100_000}}).encode(),
    ]
    with in_process() as cp:
        for i, body in enumerate(bodies):
            r = cp.post(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs", params={"rlorTrainerJobId": f"j{i}"}, content=body,
                        headers={"Content-Type": "application/json"})
            envelope(r, 400, "INVALID_ARGUMENT")
        create_job(cp, "p")
        assert import_tar(cp, "p", "base", sample_tars["INFERENCE_BASE"]).status_code == 200
        for body in (b"{oops", b'{"output_model": "\xff"}', b'{"output_model": 1, "base_model": []}',
                     json.dumps({"output_model": "m" * 10_000, "base_model": BASE}).encode()):
            r = cp.post(f"/v1/accounts/{ACCT_A}/checkpoints/base:promote", content=body,
                        headers={"Content-Type": "application/json"})
            envelope(r, 400, "INVALID_ARGUMENT")
        store = store_of(cp)
        assert store.counts()["jobs"] == 1 and store.counts()["models"] == 0
        assert list(store.models_dir.rglob("*")) == []
