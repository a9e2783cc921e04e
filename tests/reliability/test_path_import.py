"""checkpoints:import by local path: a kernel copy for a local same-user client, refused for anyone else.

The happy path and the peer checks run over real HTTP (uvicorn on loopback), because the proof
of who the caller is lives in the socket. Every refusal leaves nothing in the store.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from fwemu.emulator.admin import local_peer, path_import
from fwemu.emulator.admin import routes as admin_routes
from fwemu.emulator.inspect.examples import write_example
from fwemu.emulator.store import Rejected
from tests.reliability.conftest import (
    ACCT_A, BASE, KEY_A, envelope, http_client, in_process, listed, nothing_written, served, short, store_of,
)

URL = f"/_emulator/v1/accounts/{ACCT_A}/rlorTrainerJobs/imp/checkpoints:import"


def import_path(http, source, name: str = "c1", **params) -> httpx.Response:
    return http.post(URL, params={"name": name, "baseModel": BASE, **params}, json={"sourcePath": str(source)})


@pytest.fixture()
def base_dir(tmp_path) -> Path:
    return write_example("INFERENCE_BASE", tmp_path / "base")


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_a_local_same_user_client_gets_a_byte_identical_independent_copy(base_dir, sample_dirs):
    with served() as server, http_client(server.url) as http:
        for kind, source in sample_dirs.items():
            r = import_path(http, source, name=kind.lower().replace("_", "-"))
            assert r.status_code == 200, r.text
            assert r.json()["checkpoint"]["checkpointType"] == f"CHECKPOINT_TYPE_{kind}" and r.json()["files"] == len(files_of(source))
            copied = store_of(server).checkpoint_dir(ACCT_A, "imp", kind.lower().replace("_", "-"))
            assert files_of(copied) == files_of(source)
        r = import_path(http, base_dir, name="base")
        assert r.status_code == 200, r.text
        blob = store_of(server).checkpoint_dir(ACCT_A, "imp", "base")
        assert all(os.stat(blob / n).st_ino != os.stat(base_dir / n).st_ino for n in files_of(base_dir))
        before = files_of(blob)
        (base_dir / "model.safetensors").write_bytes(b"overwritten by the user afterwards")
        assert files_of(blob) == before                      # a copy, not a link to the user's file
        assert {short(row) for row in listed(http, "imp")} >= {"base", "inference-base"}
        envelope(import_path(http, sample_dirs["INFERENCE_BASE"], name="base"), 409, "ALREADY_EXISTS")


@pytest.mark.parametrize("case", ["relative", "missing", "file", "symlinked-dir", "link-inside", "subdir", "fifo",
                                  "pickle", "empty", "bad-name"])
def test_refusals_name_the_rule_and_store_nothing(tmp_path, base_dir, case):
    source = tmp_path / "src"
    shutil.copytree(base_dir, source)
    expect = {"relative": "absolute path", "missing": "does not exist", "file": "is not a directory",
              "symlinked-dir": "symbolic link", "link-inside": "symbolic link", "subdir": "a directory;",
              "fifo": "not a regular file", "pickle": "pickle", "empty": "is empty", "bad-name": "flat file names"}
    arg: str | Path = source
    if case == "relative":
        arg = "src"
    elif case == "missing":
        arg = tmp_path / "nope"
    elif case == "file":
        arg = source / "config.json"
    elif case == "symlinked-dir":
        arg = tmp_path / "link"
        arg.symlink_to(source)
    elif case == "link-inside":
        (source / "extra.json").symlink_to("/etc/passwd")
    elif case == "subdir":
        (source / "nested").mkdir()
    elif case == "fifo":
        os.mkfifo(source / "pipe")
    elif case == "pickle":
        (source / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    elif case == "empty":
        shutil.rmtree(source)
        source.mkdir()
    elif case == "bad-name":
        (source / "-rf").write_bytes(b"x")
    with served() as server, http_client(server.url) as http:
        message = envelope(import_path(http, arg), 400, "INVALID_ARGUMENT")
        assert expect[case] in message, message
        nothing_written(store_of(server))


@pytest.mark.parametrize("body", [b"[]", b'{"sourcePath": 7}', b'{"sourcePath": "/x", "more": 1}', b"{not json",
                                  b'{"path": "/x"}'])
def test_malformed_json_bodies_are_refused(body):
    with served() as server, http_client(server.url) as http:
        r = http.post(URL, params={"name": "c1", "baseModel": BASE}, content=body,
                      headers={"Content-Type": "application/json"})
        envelope(r, 400, "INVALID_ARGUMENT")
        nothing_written(store_of(server))


def test_caps_apply_before_a_byte_is_copied(base_dir):
    with served(max_import_files=2) as server, http_client(server.url) as http:
        assert "more than 2 files" in envelope(import_path(http, base_dir), 400)
        nothing_written(store_of(server))
    with served(max_import_bytes=100) as server, http_client(server.url) as http:
        assert "import cap of 100 bytes" in envelope(import_path(http, base_dir), 400)
        nothing_written(store_of(server))


def test_an_in_process_caller_has_no_socket_to_prove_who_it_is(base_dir):
    with in_process() as cp:
        r = import_path(cp, base_dir)
        envelope(r, 403, "PERMISSION_DENIED")
        assert r.json()["error"]["details"][0]["reason"] == "PATH_IMPORT_UNAVAILABLE"
        nothing_written(store_of(cp))


def test_a_server_started_without_path_import_refuses_it(base_dir):
    with served(allow_path_import=False) as server, http_client(server.url) as http:
        r = import_path(http, base_dir)
        assert "--no-path-import" in envelope(r, 403, "PERMISSION_DENIED")
        nothing_written(store_of(server))


AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _nobody_can_run_python() -> bool:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return False
    probe = subprocess.run([*AS_NOBODY, sys.executable, "-I", "-c", "pass"], capture_output=True, timeout=60)
    return probe.returncode == 0


@pytest.mark.skipif(not _nobody_can_run_python(),
                    reason="needs root, setpriv, and an interpreter the unprivileged user 65534 may run")
def test_another_local_user_is_refused(base_dir):
    base_dir.parent.chmod(0o755)
    with served() as server:
        code = ("import json, sys, urllib.error, urllib.parse, urllib.request\n"   # stdlib only: any user can run it
                "q = urllib.parse.urlencode({'name': 'c1', 'baseModel': sys.argv[3]})\n"
                "req = urllib.request.Request(sys.argv[1] + '?' + q, json.dumps({'sourcePath': sys.argv[2]}).encode(),"
                " {'X-Api-Key': sys.argv[4], 'Content-Type': 'application/json'})\n"
                "try:\n    urllib.request.urlopen(req)\nexcept urllib.error.HTTPError as e:\n"
                "    print(e.code, json.load(e)['error']['details'][0]['reason'])\n")
        out = subprocess.run([*AS_NOBODY, sys.executable, "-I", "-c", code, server.url + URL, str(base_dir), BASE, KEY_A],
                             capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": "/"})
        assert out.stdout.split() == ["403", "PATH_IMPORT_UNAVAILABLE"], out.stderr[-2000:]
        nothing_written(store_of(server))


def test_a_source_changed_during_the_copy_is_caught_by_the_second_inspection(base_dir, monkeypatch):
    """Preflight saw a valid directory; the user truncates a shard before the copy; the store refuses it."""
    real_copy = path_import.copy_files

    def truncate_then_copy(source, names, dest):
        with open(source / "model.safetensors", "r+b") as f:
            f.truncate(os.path.getsize(source / "model.safetensors") - 64)
        return real_copy(source, names, dest)

    monkeypatch.setattr(admin_routes, "copy_files", truncate_then_copy)
    with served() as server, http_client(server.url) as http:
        message = envelope(import_path(http, base_dir), 400, "INVALID_ARGUMENT")
        assert "truncated" in message, message
        nothing_written(store_of(server))


def test_copy_falls_back_when_copy_file_range_is_unsupported(tmp_path, base_dir, monkeypatch):
    def unsupported(*_args):
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", unsupported)
    names, total, verdict = path_import.preflight(base_dir, max_bytes=1 << 30, max_files=10)
    assert verdict.kind is not None
    (tmp_path / "dest").mkdir()
    assert path_import.copy_files(base_dir, names, tmp_path / "dest") == total
    assert files_of(tmp_path / "dest") == files_of(base_dir)
    monkeypatch.setattr(os, "sendfile", unsupported)
    (tmp_path / "dest2").mkdir()
    assert path_import.copy_files(base_dir, names, tmp_path / "dest2") == total
    assert files_of(tmp_path / "dest2") == files_of(base_dir)


def test_rejected_is_raised_before_any_copy(tmp_path, monkeypatch):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    monkeypatch.setattr(admin_routes, "copy_files", lambda *a: pytest.fail("copied a rejected directory"))
    with pytest.raises(Rejected):
        admin_routes._copy_local(None, ACCT_A, "imp", "c1", type("S", (), {"max_import_bytes": 1 << 20,
                                                                          "max_import_files": 10})(),
                                 tmp_path / "junk")


# ---------------------------------------------------------------- local_peer, against real sockets and tables
def _connected(family: int, listen_host: str, connect_host: str, **kw):
    import socket

    listener = socket.create_server((listen_host, 0), family=family, **kw)
    client = socket.create_connection((connect_host, listener.getsockname()[1]))
    accepted, peer = listener.accept()
    return listener, client, accepted, peer[:2], accepted.getsockname()[:2]


@pytest.mark.parametrize("netlink", [True, False], ids=["sock_diag", "proc-scan"])
@pytest.mark.parametrize("family, listen, connect, kw", [
    ("AF_INET", "127.0.0.1", "127.0.0.1", {}),
    ("AF_INET6", "::1", "::1", {}),
    ("AF_INET6", "::", "127.0.0.1", {"dualstack_ipv6": True}),       # a v4 client seen through a v6 server
], ids=["v4", "v6", "dual-stack"])
def test_peer_uid_finds_the_owner_of_a_real_loopback_connection(netlink, family, listen, connect, kw):
    import socket

    if family == "AF_INET6" and not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        listener, client, accepted, peer, server = _connected(getattr(socket, family), listen, connect, **kw)
    except OSError as exc:
        pytest.skip(f"cannot open this kind of loopback connection here: {exc}")
    try:
        assert local_peer.peer_uid(peer, server, netlink=netlink) == os.geteuid()
        assert local_peer.peer_uid((peer[0], 1), server, netlink=netlink) is None           # no such socket
        assert local_peer.peer_uid(("10.1.2.3", peer[1]), server, netlink=netlink) is None  # not loopback
        assert local_peer.peer_uid(None, server, netlink=netlink) is None
        client.close()                                   # the caller hung up: nothing to prove any more
        assert local_peer.peer_uid(peer, server, netlink=netlink) is None
    finally:
        for s in (client, accepted, listener):
            s.close()


def test_peer_uid_reads_ipv4_and_mapped_ipv6_table_rows(tmp_path):
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    v4 = tmp_path / "tcp"
    v4.write_text(header
                  + "   0: 0100007F:9C40 0100007F:1F90 06 00000000:00000000 00:00000000 00000000  1001 0 1\n"   # TIME_WAIT
                  + "   1: 0100007F:9C41 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1002 0 2\n")
    v6 = tmp_path / "tcp6"
    v6.write_text(header + "   0: 0000000000000000FFFF00000100007F:9C42 0000000000000000FFFF00000100007F:1F90 01 "
                           "00000000:00000000 00:00000000 00000000  1003 0 3\n"
                  + "   1: 00000000000000000000000001000000:9C43 00000000000000000000000001000000:1F90 01 "
                    "00000000:00000000 00:00000000 00000000  1004 0 4\n")
    tables = (v4, v6)
    server = ("127.0.0.1", 0x1F90)
    assert local_peer.peer_uid(("127.0.0.1", 0x9C40), server, tables, netlink=False) is None           # not ESTABLISHED
    assert local_peer.peer_uid(("127.0.0.1", 0x9C41), server, tables, netlink=False) == 1002
    assert local_peer.peer_uid(("::ffff:127.0.0.1", 0x9C42), server, tables, netlink=False) == 1003
    assert local_peer.peer_uid(("::1", 0x9C43), ("::1", 0x1F90), tables, netlink=False) == 1004
    assert local_peer.peer_uid(("127.0.0.1", 0x9C41), server, (tmp_path / "absent",), netlink=False) is None


def test_concurrent_path_imports_of_one_name_have_one_winner(base_dir):
    with served() as server:
        results = []

        def attempt():
            with http_client(server.url) as http:
                results.append(import_path(http, base_dir, name="same").status_code)

        threads = [threading.Thread(target=attempt) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [200, 409, 409, 409], results
        assert store_of(server).counts()["checkpoints"] == 1
