"""`fwemu contracts`: a table, exit 0 when everything holds, 1 on a failure, 2 on bad arguments."""

from __future__ import annotations

import pytest

from fwemu.emulator.cli import main


def test_contracts_with_a_break_switch_fails_and_names_the_invariant(capsys):
    rc = main(["contracts", "--break", "promote-any", "--only", "K3", "--max-examples", "2",
               "--no-shrink", "--seed", "3"])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "K3  promote-accepts-iff-promotable  FAIL" in out
    assert "F2  catches-broken-target" in out and "caught: promote-any -> K3" in out


def test_contracts_passes_on_the_clean_emulator(capsys, tmp_path):
    report = tmp_path / "report.json"
    rc = main(["contracts", "--only", "K4", "--max-examples", "2", "--json", str(report)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "K4  chain" in out and "pass" in out
    assert '"K4"' in report.read_text()


def test_contracts_refuses_a_break_switch_on_a_remote_target(capsys):
    assert main(["contracts", "--target", "http://127.0.0.1:9", "--break", "newest-first"]) == 2
    assert "only be set on the in-process target" in capsys.readouterr().err


def test_contracts_rejects_an_unknown_switch(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["contracts", "--break", "no-such-switch"])
    assert exc.value.code == 2


@pytest.mark.parametrize("argv, words", [
    (["--only", "Z9"], ["unknown invariant id(s) Z9", "known: F1"]),
    (["--only", "K1,zz"], ["ZZ"]),
    (["--only", ","], ["(none given)"]),
    (["--max-examples", "-1"], ["--max-examples -1 must be at least 1"]),
    (["--max-examples", "0"], ["--max-examples 0"]),
    (["--steps", "0"], ["--steps 0"]),
    (["--shrink-seconds", "-2"], ["--shrink-seconds"]),
    (["--target", "127.0.0.1:8700"], ["not an http:// or https:// URL"]),
])
def test_contracts_refuses_bad_arguments_up_front(capsys, argv, words):
    assert main(["contracts", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""                                   # nothing ran, no table
    line = captured.err.strip()
    assert line.startswith("fwemu contracts: ") and "\n" not in line, captured.err
    for w in words:
        assert w in line, (w, line)


def test_contracts_at_a_closed_port_says_nothing_answers(capsys):
    from fwemu.emulator.server_thread import free_port

    port = free_port()
    assert main(["contracts", "--target", f"http://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert f"nothing answers at http://127.0.0.1:{port}" in err and "fwemu serve" in err
    assert "is not a fwemu emulator" not in err
