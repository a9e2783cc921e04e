"""The ASGI middleware that applies a fault plan to live requests.

It sits outside the routers, so an injected fault looks to a client exactly like a failing
service: an error envelope, a slow answer, a connection cut mid-response, a process that dies
between a blob write and its metadata commit, or a trainer job that fails under it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import Any, Awaitable, Callable

from starlette.requests import Request

from fwemu.emulator import jobs
from fwemu.emulator.auth import api_key_of
from fwemu.emulator.errors import ApiError
from fwemu.emulator.faults.operations import CRASH_POINTS, classify
from fwemu.emulator.faults.plan import FaultPlan, Firing

log = logging.getLogger("fwemu.faults")

CRASH_EXIT_CODE = 86   # what a process killed by a crash rule exits with (tests tell it from other deaths)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def crash_now(firing: Firing, where: str) -> None:
    """Die at once, as a power cut would: no cleanup, no flush of anything but this one line."""
    sys.stderr.write(f"fwemu: injected crash ({where}; fault plan rule {firing.index}, call {firing.call})\n")
    sys.stderr.flush()
    os._exit(CRASH_EXIT_CODE)


def commit_hook(plan: FaultPlan) -> Callable[..., None]:
    """The Store's before-commit hook: a crash armed for this commit kills the process right here."""
    def before_commit(point: str, account: str, job_or_model: str) -> None:
        firing = plan.take_crash(point, account, job_or_model if point == "checkpoint" else None)
        if firing is not None:
            crash_now(firing, f"{point} {account}/{job_or_model} written, metadata not committed")
    return before_commit


def _envelope(firing: Firing) -> tuple[int, bytes]:
    rule = firing.rule
    err = ApiError(rule.envelope_status(), firing.message(), reason="INJECTED_FAULT", http_status=rule.status)
    return rule.status, json.dumps(err.body()).encode()


async def _send_json(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _send_cut(send: Send, status: int, headers: list, body: bytes) -> None:
    """Start a response, send at most half its body, and stop: the server then closes the connection."""
    headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
    declared = max(len(body), 1)
    headers.append((b"content-length", str(declared).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})


class _Captured:
    """Collects the app's response instead of sending it (for faults applied after the app ran)."""

    def __init__(self) -> None:
        self.status = 500
        self.headers: list = []
        self.body = bytearray()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status, self.headers = message["status"], list(message.get("headers") or [])
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")


class FaultMiddleware:
    def __init__(self, app, plan: FaultPlan, services) -> None:
        self.app = app
        self.plan = plan
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        call = classify(scope["method"], scope["path"])
        firing = self.plan.on_call(*call, owner=self._owner_calls(scope, call.account))
        if firing is None:
            return await self.app(scope, receive, send)
        log.info("fault plan rule %d fires on %s %s: %s", firing.index, scope["method"], scope["path"], firing.action)
        action, rule = firing.action, firing.rule
        if action == "delay":
            await asyncio.sleep(rule.seconds)
            return await self.app(scope, receive, send)
        if action == "crash":
            point = CRASH_POINTS.get(call.operation or "")
            if point is None:
                crash_now(firing, f"on {call.operation}")
            self.plan.arm_crash(point, call.account, call.job if point == "checkpoint" else None, firing)
            return await self.app(scope, receive, send)
        if action == "preempt":
            self._preempt(call.account, call.job)
            return await self.app(scope, receive, send)
        if rule.stage == "before":
            if action == "error":
                return await _send_json(send, *_envelope(firing))
            return await _send_cut(send, 200, [(b"content-type", b"application/json")], b'{"dropped": true}')
        captured = _Captured()
        await self.app(scope, receive, captured.send)
        if action == "error":
            return await _send_json(send, *_envelope(firing))
        return await _send_cut(send, captured.status, captured.headers, bytes(captured.body))

    def _owner_calls(self, scope: Scope, account: str | None) -> bool:
        key = api_key_of(Request(scope))
        return account is not None and key is not None and self.services.settings.api_keys.get(key) == account

    def _preempt(self, account: str | None, job_id: str | None) -> None:
        """The job's trainer is gone: FAILED, and a new generation so its sessions and models are dropped."""
        if not account or not job_id:
            return
        store = self.services.store
        job = store.get_job(account, job_id)
        if job is None or job.state == jobs.DELETED:
            return
        store.set_job_state(account, job_id, jobs.FAILED, bump_generation=True)
