"""Use any httpx transport from synchronous code, including `httpx.ASGITransport(app)`.

Our clients are synchronous (recipes and CLI commands are plain loops). httpx's ASGITransport is
async-only, so an async transport is wrapped in `SyncBridgeTransport`, which runs it on one
process-wide event loop in a daemon thread. One loop for every bridge matters: the emulator keeps
asyncio state (futures, long-poll waits, background trainer tasks) that must live on a single
loop, and a control-plane client and a gateway client built from two ASGITransports of the same app
would otherwise drive it from two loops. Sync transports (the default HTTPTransport, MockTransport)
are used as they are.
"""

from __future__ import annotations

import asyncio
import threading
from typing import AsyncIterator

import httpx

_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _bridge_loop() -> asyncio.AbstractEventLoop:
    """The shared event loop, started on first use; it lives as long as the process."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="fwemu-async-bridge", daemon=True).start()
            _loop = loop
        return _loop


class _AsyncBody(httpx.AsyncByteStream):
    """Feed a sync request body (bytes or a generator, e.g. a tar stream) to an async transport."""

    def __init__(self, stream: httpx.SyncByteStream | httpx.ByteStream):
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._stream:  # type: ignore[union-attr]
            yield chunk


class SyncBridgeTransport(httpx.BaseTransport):
    """A sync transport that forwards each request to an async one on the shared loop.

    The response body is read completely on the loop before it is handed back, so callers never
    touch the loop themselves. A request's read timeout (from httpx's timeout extension) bounds the
    wait; on expiry the in-flight coroutine is cancelled and httpx.ReadTimeout raised, exactly like
    the network transport would.
    """

    def __init__(self, transport: httpx.AsyncBaseTransport):
        self._transport = transport
        self._loop = _bridge_loop()

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        forwarded = httpx.Request(request.method, request.url, headers=request.headers,
                                  stream=_AsyncBody(request.stream), extensions=request.extensions)
        response = await self._transport.handle_async_request(forwarded)
        try:
            body = await response.aread()
        finally:
            await response.aclose()
        return httpx.Response(response.status_code, headers=response.headers, content=body,
                              extensions={k: v for k, v in response.extensions.items() if k != "network_stream"})

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        future = asyncio.run_coroutine_threadsafe(self._handle(request), self._loop)
        timeout = (request.extensions.get("timeout") or {}).get("read")
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            future.cancel()
            raise httpx.ReadTimeout(f"no response within {timeout}s", request=request) from None

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._transport.aclose(), self._loop).result(timeout=10)


def as_sync_transport(transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None) -> httpx.BaseTransport | None:
    """`transport` itself when it is sync (or None: httpx's default), else a SyncBridgeTransport."""
    if transport is None or isinstance(transport, httpx.BaseTransport):
        return transport
    if isinstance(transport, httpx.AsyncBaseTransport):
        return SyncBridgeTransport(transport)
    raise TypeError(f"not an httpx transport: {type(transport).__name__}")
