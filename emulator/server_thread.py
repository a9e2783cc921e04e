"""Run an emulator app on a real loopback socket inside this process (tests, `fwemu demo`, contracts).

Real HTTP through uvicorn, without a subprocess: the same code path a user's `fwemu serve` takes,
started in about a tenth of a second.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from fwemu.emulator.settings import Settings


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerThread:
    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None):
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        self.app = app
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level="error", access_log=False,
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"fwemu-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"emulator did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextmanager
def running_server(settings: Settings | None = None, app=None) -> Iterator[ServerThread]:
    """Yield a started ServerThread (`.url`, `.app`); stops it on exit."""
    if app is None:
        from fwemu.emulator.app import create_app

        app = create_app(settings or Settings())
    server = ServerThread(app).start()
    try:
        yield server
    finally:
        server.stop()
