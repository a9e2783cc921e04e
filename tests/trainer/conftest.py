"""Trainer test configuration."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_size_override(monkeypatch):
    # Tests pass sizes explicitly; a developer's FWEMU_MODEL_SIZE must not change defaults under test.
    monkeypatch.delenv("FWEMU_MODEL_SIZE", raising=False)
