"""Each bench script runs in its smallest configuration and prints well-formed output.

No timing thresholds: these tests only check that the scripts work and that what they print
(JSON with --json, tables otherwise, docs markdown from run_all) has the documented shape.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402
import run_all  # noqa: E402

OURS = sorted(run_all.TINY)


def run_script(name: str, *extra: str, timeout: float = 240) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(BENCH / f"{name}.py"), *extra]
    proc = subprocess.run(argv, cwd=REPO, env=_common.child_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


def check_result(result: dict, name: str) -> None:
    for key in ("bench", "title", "date", "quick", "command", "machine", "config", "results", "tables", "targets",
                "notes"):
        assert key in result, f"{name}: no {key!r} in the JSON"
    assert result["bench"] == name
    m = result["machine"]
    for key in ("cpu", "cores", "ram_gib", "python", "os"):
        assert m.get(key), f"{name}: machine.{key} missing"
    assert result["tables"], f"{name}: no tables"
    for t in result["tables"]:
        assert t["title"] and t["columns"] and t["rows"], t
        for row in t["rows"]:
            assert len(row) == len(t["columns"]), (t["title"], row)
            assert all(isinstance(c, str) for c in row), (t["title"], row)
    assert result["targets"], f"{name}: no targets"
    for tg in result["targets"]:
        assert set(tg) == {"name", "target", "value", "met"}
        assert tg["met"] in (True, False, None)
    text = _common.render_text(result)
    assert result["title"] in text and "machine:" in text


@pytest.mark.slow
@pytest.mark.parametrize("name", OURS)
def test_script_tiny_json(name):
    proc = run_script(name, "--json", *run_all.TINY[name])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    check_result(result, name)
    r = result["results"]
    if name == "import_throughput":
        (row,) = r["sizes"]
        for m in ("cp", "cp_sync", "path", "path_fsync", "http"):
            assert row[f"{m}_s"] > 0 and row[f"{m}_mib_s"] > 0
        assert row["server_peak_rss_mib"] >= row["server_idle_rss_mib"] > 0
    elif name == "controlplane_latency":
        assert set(r["rows"]) == {"3", "7"} and r["rows"]["7"]["rows_listed"] == 7
        assert r["promotion"] and all(v["errors"] == 0 for v in r["load"].values())
    elif name == "contract_speed":
        assert set(r["runs"]) == {"socket", "url"} and r["model_size"]
        for run in r["runs"].values():
            assert run["ok"] and run["machine_examples"] == 1 and run["steps"] == sum(
                v["count"] for v in run["rules"].values()) > 0
            assert run["steps_per_s"] > 0 and run["examples_per_s"] > 0 and run["wall_s"] > 0
    elif name == "deploy_speed":
        c = r["completions"]
        assert c["tokens"] == 8 and c["http_ms"] > 0 and c["cached_ms"] > 0 and c["full_ms"] > 0
        hl = r["hot_load"]["default"]
        assert hl["delta_ms"] > 0 and hl["numpy_ms"] > 0 and hl["weights_mib"] > 0
        assert set(r["memory"]["rss_mib"]) == {"0", "1", "2"}
    elif name == "dcp_multirank":
        assert sorted((row["ranks"], row["size"]) for row in r["rows"])[::2] == [(1, "default"), (2, "default")]
        for row in r["rows"]:
            assert row["save_s"] > 0 and row["load_s"] > 0 and row["safetensors_s"] > 0 and row["state_bytes"] > 0
            assert sum(f.endswith(".distcp") for f in row["files"]) == row["ranks"]
    else:
        assert r["subprocess"]["floor"]["wall_s"] > 0 and r["subprocess"]["serve_in_memory"]["wall_s"] > 0
        assert set(r["audit"]["heavy"]) >= {"torch", "numpy"}


@pytest.mark.slow
def test_import_throughput_tiny_text_table():
    proc = run_script("import_throughput", *run_all.TINY["import_throughput"], "--no-cli")
    out = proc.stdout
    assert "Import throughput" in out and "cp -r" in out and "targets" in out
    assert "fwemu import (CLI) MiB/s" not in out


@pytest.mark.slow
def test_run_all_writes_markdown(tmp_path):
    out, raw = tmp_path / "benchmarks.md", tmp_path / "raw.json"
    proc = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--tiny", "--only", "import_throughput",
                           "--out", str(out), "--raw", str(raw)], cwd=REPO, env=_common.child_env(),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = out.read_text()
    assert md.startswith("# fwemu benchmarks")
    for needle in ("## Machine", "## Targets", "## Commands", "CPU", "| size |", "bench/import_throughput.py"):
        assert needle in md, needle
    combined = json.loads(raw.read_text())
    (entry,) = combined["benches"]
    assert entry["rc"] == 0
    check_result(entry["result"], "import_throughput")


def test_generic_tables_render_foreign_json():
    """inspect_cost.py / trainer_step.py print their own JSON; run_all renders it without `tables`."""
    flat = {"device": "cpu", "step_s": 0.1234, "params": 804736, "nested": {"a": 1}}
    listed = {"reps": 3, "results": [{"size": 1024, "inspect_s": 0.001, "kind": "INFERENCE_BASE"},
                                     {"size": 2048, "inspect_s": 0.002, "kind": "INFERENCE_BASE", "extra": None}]}
    for obj in (flat, listed):
        tables = run_all.generic_tables(obj, "x")
        assert tables
        for t in tables:
            assert all(len(r) == len(t["columns"]) for r in t["rows"])
    entries = [{"name": "trainer_step", "command": "bench/trainer_step.py --json", "rc": 0, "wall_s": 1.0,
                "loadavg_before": 0.1, "loadavg_after": 0.2, "cpu_busy_before": None, "result": flat},
               {"name": "inspect_cost", "command": "bench/inspect_cost.py --json", "rc": 1, "wall_s": 1.0,
                "loadavg_before": 0.1, "loadavg_after": 0.2, "cpu_busy_before": None, "result": None,
                "error": "boom"}]

    class Args:
        quick = tiny = False

    md = run_all.render(entries, Args, "2026-01-01T00:00:00+00:00", _common.machine_info(), 2.0)
    assert "| step_s | 0.1234 |" in md and "**Failed:**" in md and "boom" in md


def test_common_helpers():
    assert _common.percentile([1, 2, 3, 4], 50) == 2.5
    assert _common.percentile([5], 99) == 5
    assert math.isnan(_common.percentile([], 50))
    assert _common.parse_size("64M") == 64 << 20 and _common.parse_size("2GiB") == 2 << 30
    assert _common.parse_size("1048576") == 1 << 20
    assert _common.human_size(512 << 20) == "512 MiB"
    s = _common.summary_ms([0.001, 0.002, 0.003])
    assert s["n"] == 3 and s["p50_ms"] == 2.0 and s["max_ms"] == 3.0
    info = _common.machine_info()
    assert info["cores"] >= 1 and info["python"].startswith(("CPython", "PyPy"))
