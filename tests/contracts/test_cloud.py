"""The contract suite against the real Fireworks service. Opt-in and never in CI: these tests are
deselected unless FIREWORKS_API_KEY is set and --fw-target names the service, e.g.

    FIREWORKS_API_KEY=... pytest tests/contracts/test_cloud.py --fw-target https://api.fireworks.ai -m cloud

It costs real money: trainer jobs are created (and deleted at the end of each example)."""

from __future__ import annotations

import pytest


@pytest.mark.cloud
def test_real_service_keeps_the_checkpoint_contracts(fw_contracts, fw_target):
    report = fw_contracts(max_examples=2, steps=8,
                          properties=["chain", "promotion", "listing", "resume"])
    assert report.ok, report.table()
    assert report.results["K2"].status == "pass" and report.results["L1"].status == "pass", report.table()
