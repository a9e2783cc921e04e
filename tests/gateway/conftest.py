"""Gateway fixtures. The stand-in model is shrunk with FWEMU_MODEL_SIZE for the duration of each
gateway test module only, so other packages' tests keep the trainer's default size."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.gateway.helpers import TINY, Gateway, gateway


@pytest.fixture(autouse=True, scope="module")
def tiny_model():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FWEMU_MODEL_SIZE", TINY)
        yield


@pytest.fixture
def gw() -> Iterator[Gateway]:
    """A wire-level driver on a fresh in-process app (FastAPI TestClient = httpx)."""
    with gateway() as g:
        yield g
