"""Property: corrupting any file of any valid checkpoint never yields an exception or another kind.

A flipped bit, a truncation or an overwritten run of bytes either gets the directory rejected or
leaves its kind unchanged (e.g. a flip inside tensor data, which the inspector does not read).
It must never make the inspector raise, fall into its internal-error path, or call the
directory a different kind.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from fwemu.emulator.inspect import inspect_checkpoint
from fwemu.emulator.inspect.classify import INTERNAL_ERROR

from .conftest import EXPECTED

NAMES = sorted(EXPECTED)


def corrupt(path: Path, data: st.DataObject) -> str:
    raw = bytearray(path.read_bytes())
    size = len(raw)
    op = data.draw(st.sampled_from(["flip", "truncate", "overwrite"]), label="op")
    if size == 0:
        return op
    # Half the time aim at the first 4 KiB, where headers, configs and pickles live.
    pos = data.draw(st.one_of(st.integers(0, min(size, 4096) - 1), st.integers(0, size - 1)), label="pos")
    if op == "flip":
        raw[pos] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    elif op == "truncate":
        del raw[pos:]
    else:
        chunk = data.draw(st.binary(min_size=1, max_size=16), label="bytes")
        raw[pos:pos + len(chunk)] = chunk
    path.write_bytes(bytes(raw))
    return op


@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_corruption_is_rejected_or_changes_nothing(artifacts, data):
    name = data.draw(st.sampled_from(NAMES), label="artifact")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp, name)
        shutil.copytree(artifacts[name], d)
        files = sorted(p.name for p in d.iterdir())
        victim = data.draw(st.sampled_from(files), label="file")
        corrupt(d / victim, data)
        v = inspect_checkpoint(d)
    assert v.kind in (None, EXPECTED[name]), f"{name}: corrupting {victim} gave {v.kind}"
    if v.kind is None:
        assert v.reason and INTERNAL_ERROR not in v.reason, v.reason
        assert v.file and ": " in v.reason  # names a file (maybe one a header refers to) and a rule


@settings(max_examples=150, deadline=None, database=None)
@given(raw=st.binary(max_size=512))
def test_arbitrary_metadata_bytes_are_rejected_cleanly(artifacts, raw):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp, "dcp")
        shutil.copytree(artifacts["dcp"], d)
        (d / ".metadata").write_bytes(b"\x80\x04" + raw)
        v = inspect_checkpoint(d)
    assert v.kind is None and v.reason.startswith(".metadata: ")
    assert INTERNAL_ERROR not in v.reason
