"""Dashboard fixtures: the stand-in model shrunk (as in tests/gateway) and a log-in helper."""

from __future__ import annotations

import pytest

from tests.gateway.helpers import TINY


@pytest.fixture(autouse=True, scope="module")
def tiny_model():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FWEMU_MODEL_SIZE", TINY)
        yield


def login(http, key: str):
    """POST the log-in form as a browser does; returns the response (a 303 with the cookie on success)."""
    return http.post("/dashboard/login", content=f"api_key={key}",
                     headers={"Content-Type": "application/x-www-form-urlencoded"}, follow_redirects=False)
