"""`fwemu inspect`: exit codes 0/1/2, the --json shape, human output, --example; no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fwemu.emulator.inspect.cli import main

JSON_KEYS = {"path", "kind", "resumable", "promotable", "reason"}


def run_cli(capsys, *argv):
    rc = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


@pytest.mark.parametrize("name,kind,resumable,promotable", [
    ("dcp", "TRAINING", True, False),
    ("dcp_lora", "TRAINING_LORA", True, False),
    ("hf", "INFERENCE_BASE", False, True),
    ("peft", "INFERENCE_LORA", False, True),
    ("arc", "INFERENCE_ARC_V2", False, False),
])
def test_json_for_each_kind(capsys, artifacts, name, kind, resumable, promotable):
    rc, out, _ = run_cli(capsys, artifacts[name], "--json")
    assert rc == 0
    obj = json.loads(out)
    assert out.count("\n") == 1 and set(obj) == JSON_KEYS
    reason = obj.pop("reason")
    assert obj == {"path": str(artifacts[name]), "kind": kind, "resumable": resumable, "promotable": promotable}
    if promotable:
        assert reason is None
    else:  # a valid but non-promotable kind says why, naming the kind
        assert f"CHECKPOINT_TYPE_{kind}" in reason and "cannot be promoted" in reason


def test_json_for_a_rejection(capsys, clone):
    d = clone("peft")
    (d / "adapter_model.bin").write_bytes(b"x")
    rc, out, _ = run_cli(capsys, d, "--json")
    assert rc == 1
    assert json.loads(out) == {"path": str(d), "kind": None, "resumable": False, "promotable": False,
                               "reason": "adapter_model.bin: pickle weight file; pickles run code "
                                         "when loaded, so they are never accepted"}


def test_human_output_for_arc_v2_says_what_to_do(capsys, artifacts):
    rc, out, _ = run_cli(capsys, artifacts["arc"])
    assert rc == 0
    assert "kind:        INFERENCE_ARC_V2 (CHECKPOINT_TYPE_INFERENCE_ARC_V2)" in out
    assert "resumable:   no" in out and "promotable:  no" in out
    assert 'save the weights with checkpoint_type="base"' in out


def test_human_output_for_a_rejection_gives_reason_and_hint(capsys, clone):
    d = clone("dcp")
    (d / ".metadata").write_bytes(b"\x80\x04ctorch\nload\n.")
    rc, out, _ = run_cli(capsys, d)
    assert rc == 1
    assert "kind:        rejected" in out
    assert "reason:      .metadata: refers to torch.load, which is not a DCP metadata class" in out
    assert "instead:     " in out


@pytest.mark.parametrize("as_json", [False, True])
def test_missing_path_and_file_are_usage_errors(capsys, tmp_path, as_json):
    f = tmp_path / "f"
    f.write_text("")
    for path, msg in ((tmp_path / "nope", "does not exist"), (f, "is not a directory")):
        rc, out, err = run_cli(capsys, path, *(["--json"] if as_json else []))
        assert rc == 2
        if as_json:
            obj = json.loads(out)
            assert set(obj) == JSON_KEYS and obj["kind"] is None and msg in obj["reason"]
        else:
            assert msg in err and out == ""


def test_an_empty_directory_is_not_told_to_fix_a_file(capsys, tmp_path):
    rc, out, _ = run_cli(capsys, tmp_path)
    assert rc == 1 and "reason:      .: empty directory" in out
    hint = next(line for line in out.splitlines() if line.startswith("instead:"))
    assert "file named" not in hint and "point at the directory the trainer wrote" in hint


def test_a_rejection_hint_names_the_offending_file(capsys, clone):
    d = clone("dcp")
    (d / "__0_0.distcp").unlink()
    rc, out, _ = run_cli(capsys, d)
    assert rc == 1
    reason = next(line for line in out.splitlines() if line.startswith("reason:"))
    hint = next(line for line in out.splitlines() if line.startswith("instead:"))
    assert "__0_0.distcp" in reason and ("__0_0.distcp" in hint or ".metadata" in hint), (reason, hint)


def test_import_and_inspect_agree_on_usage_errors(tmp_path, capsys):
    """Same path, same answer: exit 2 and the same words from both commands."""
    import argparse

    from fwemu.client.commands import import_cmd

    f = tmp_path / "f"
    f.write_text("")
    for path, msg in ((tmp_path / "nope", "does not exist"), (f, "is not a directory")):
        rc_inspect, _, err_inspect = run_cli(capsys, path)
        parser = argparse.ArgumentParser()
        import_cmd.configure(parser)
        rc_import = import_cmd.run(parser.parse_args(["--job", "j", "--name", "n", str(path)]))
        err_import = capsys.readouterr().err
        assert rc_inspect == rc_import == 2
        assert f"{path} {msg}" in err_inspect and f"{path} {msg}" in err_import


def test_no_arguments_is_a_usage_error(capsys):
    rc, _, err = run_cli(capsys)
    assert rc == 2 and "PATH is required" in err


def test_example_writes_a_checkpoint_of_that_kind(capsys, tmp_path):
    rc, out, _ = run_cli(capsys, "--example", "CHECKPOINT_TYPE_INFERENCE_LORA", tmp_path / "ex")
    assert rc == 0 and "fwemu inspect" in out
    rc, out, _ = run_cli(capsys, tmp_path / "ex", "--json")
    assert rc == 0 and json.loads(out)["kind"] == "INFERENCE_LORA"


def test_example_usage_errors(capsys, tmp_path, artifacts):
    rc, _, err = run_cli(capsys, "--example", "BOGUS", tmp_path / "x")
    assert rc == 2 and "unknown kind 'BOGUS'" in err
    rc, _, err = run_cli(capsys, "--example", "TRAINING", artifacts["hf"])
    assert rc == 2 and "must be a new or empty directory" in err


def test_as_a_process_no_traceback_and_exit_codes(artifacts, tmp_path):
    """The real entry module in a subprocess: exit statuses and stderr as a user sees them."""
    cmd = [sys.executable, "-m", "fwemu.emulator.inspect.cli"]
    ok = subprocess.run(cmd + [str(artifacts["hf"])], capture_output=True, text=True)
    bad = subprocess.run(cmd + [str(tmp_path), "--json"], capture_output=True, text=True)
    usage = subprocess.run(cmd + [str(tmp_path / "missing")], capture_output=True, text=True)
    flags = subprocess.run(cmd + ["--bogus"], capture_output=True, text=True)
    assert (ok.returncode, bad.returncode, usage.returncode, flags.returncode) == (0, 1, 2, 2)
    assert json.loads(bad.stdout)["reason"] == ".: empty directory; no checkpoint files"
    for p in (ok, bad, usage, flags):
        assert "Traceback" not in p.stdout + p.stderr
