"""`fwemu serve` argument handling: every bad argument is one line and exit 2 before any banner."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from fwemu.emulator.server_process import REPO_ROOT, ServeProcess


def serve(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fwemu", "serve", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


def assert_usage_error(out: subprocess.CompletedProcess, *words: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "serving on" not in out.stderr and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fwemu serve: "), out.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_a_port_out_of_range_is_refused(port):
    assert_usage_error(serve("--in-memory", "--port", port), f"--port {port}", "1-65535")


def test_a_busy_port_is_refused_before_the_banner():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert_usage_error(serve("--in-memory", "--port", str(port)), f"127.0.0.1:{port}", "--port")


def test_a_data_dir_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "state"
    f.write_text("not a dir")
    assert_usage_error(serve("--data-dir", str(f)), str(f), "not a directory")
    assert f.read_text() == "not a dir"


@pytest.mark.parametrize("flag", ["--startup-delay", "--retention-days"])
def test_negative_durations_are_refused(flag):
    assert_usage_error(serve("--in-memory", flag, "-1"), flag)


def test_a_bad_key_mapping_is_refused():
    assert_usage_error(serve("--in-memory", "--api-key", "nokey"), "KEY=ACCOUNT")


def test_help_lists_the_break_switches():
    out = serve("--help")
    assert out.returncode == 0
    assert "--break" in out.stdout and "newest-first" in out.stdout and "TEST ONLY" in out.stdout


def test_the_banner_names_the_api_key_and_every_active_break_switch(tmp_path):
    log = tmp_path / "serve.log"
    server = ServeProcess(tmp_path / "state", ["--api-key", "k-123=team", "--break", "newest-first"],
                          log_path=log).start()
    try:
        text = log.read_text()
    finally:
        server.stop()
    assert f"serving on http://127.0.0.1:{server.port}" in text
    assert "API key k-123" in text and "account team" in text
    assert "break switch newest-first is ON" in text


@pytest.mark.parametrize("n", ["0", "-2"])
def test_trainer_ranks_below_one_are_refused(n):
    assert_usage_error(serve("--in-memory", "--trainer-ranks", n), f"--trainer-ranks {n}", "at least 1")


def test_trainer_ranks_flag_wins_over_the_environment(monkeypatch):
    import argparse

    from fwemu.emulator import serve as serve_mod

    monkeypatch.setenv("FWEMU_TRAINER_RANKS", "3")
    p = argparse.ArgumentParser()
    serve_mod.configure(p)
    assert serve_mod.settings_from_args(p.parse_args(["--in-memory"])).trainer_ranks == 3
    args = p.parse_args(["--in-memory", "--trainer-ranks", "2", "--trainer-precision", "fp32"])
    settings = serve_mod.settings_from_args(args)
    assert (settings.trainer_ranks, settings.trainer_precision) == (2, "fp32")


def test_the_banner_says_how_many_trainer_ranks(tmp_path):
    log = tmp_path / "serve.log"
    server = ServeProcess(tmp_path / "state", ["--trainer-ranks", "2"], log_path=log).start()
    try:
        text = log.read_text()
    finally:
        server.stop()
    assert "trainer: 2 rank(s) per model (FSDP2), fp32" in text
