"""The inspector, the rules, arc_v2 and dcp_mapping are pure: using them never imports torch, fastapi or httpx.

Run in a fresh interpreter, since the test process itself has torch loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, sys
from fwemu.emulator.inspect import inspect_checkpoint, fingerprint, Kind, Verdict
from fwemu.emulator.inspect import cli  # the command module the fwemu dispatcher imports
from fwemu.emulator import rules
from fwemu.emulator.trainer import arc_v2
from fwemu.emulator.trainer import dcp_mapping  # the loader's name/shape matching
kinds = [str(inspect_checkpoint(p).kind) for p in sys.argv[1:]]
fingerprint(sys.argv[1])
rules.is_promotable(Kind.INFERENCE_BASE)
print(json.dumps({"kinds": kinds, "loaded": sorted(m for m in ("torch", "fastapi", "httpx")
                                                  if m in sys.modules)}))
"""


def test_inspecting_every_kind_loads_no_torch_fastapi_or_httpx(artifacts):
    paths = [str(artifacts[n]) for n in ("dcp", "dcp_2ranks", "hf_sharded", "peft_dora", "arc")]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *paths], capture_output=True, text=True,
                          check=True)
    result = json.loads(proc.stdout)
    assert result["kinds"] == ["TRAINING", "TRAINING", "INFERENCE_BASE", "INFERENCE_LORA",
                               "INFERENCE_ARC_V2"]
    assert result["loaded"] == []
