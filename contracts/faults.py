"""Client-side fault injection: an httpx transport that breaks exactly one chosen call.

These faults are driven from the wire, so they work against any target, the real service
included (a fwemu target also has a server-side fault API, `/_emulator/v1/faults`, which the
state machine uses where it is available): the next request whose path
matches is answered with a 503 envelope, delayed, dropped before it is sent, or dropped *after*
the server answered (the response is lost: the server did the work, the client does not know).
The last kind is the interesting one: a retried save must not write twice, a retried optimizer
step must not step twice, and a retried promote must not leave the client confused about what
exists.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from fwemu.client.transport import as_sync_transport

FAULT_KINDS = ("http503", "delay", "drop_before", "drop_after")


@dataclass
class ArmedFault:
    kind: str
    path: re.Pattern
    fired: int = 0
    seen: list | None = None


class FaultPlan:
    """One armed fault at a time, fired on the first matching request, then disarmed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: ArmedFault | None = None
        self.log: list[tuple[str, str, str]] = []  # (kind, method, path) of every fault fired

    def arm(self, kind: str, path_regex: str) -> ArmedFault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}")
        fault = ArmedFault(kind, re.compile(path_regex))
        with self._lock:
            self._armed = fault
        return fault

    def disarm(self) -> ArmedFault | None:
        with self._lock:
            fault, self._armed = self._armed, None
        return fault

    def take(self, request: httpx.Request) -> str | None:
        with self._lock:
            fault = self._armed
            if fault is None or not fault.path.search(request.url.path):
                return None
            self._armed = None
            fault.fired += 1
        self.log.append((fault.kind, request.method, request.url.path))
        return fault.kind


class FaultTransport(httpx.BaseTransport):
    """Wraps any httpx transport (sync, async or the default network one) and applies a FaultPlan."""

    def __init__(self, inner: Any, plan: FaultPlan):
        self._inner = as_sync_transport(inner) or httpx.HTTPTransport()
        self.plan = plan

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        kind = self.plan.take(request)
        if kind == "http503":
            return httpx.Response(503, json={"error": {"code": 14, "status": "UNAVAILABLE",
                                                       "message": "injected fault: service unavailable"}},
                                  request=request)
        if kind == "drop_before":
            raise httpx.ConnectError("injected fault: connection dropped before the request was sent",
                                     request=request)
        if kind == "delay":
            time.sleep(0.05)
        response = self._inner.handle_request(request)
        if kind == "drop_after":
            response.read()
            response.close()
            raise httpx.ReadError("injected fault: connection dropped after the server answered", request=request)
        return response

    def close(self) -> None:
        self._inner.close()
