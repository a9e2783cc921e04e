"""The objects one emulator instance shares between its routers, held on `app.state.services`."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterator

from fastapi import Request

from fwemu.emulator.settings import Settings
from fwemu.emulator.store import Clock, Store


CLOCK_OFFSET_KEY = "clock_offset_us"


@dataclass
class Services:
    settings: Settings
    store: Store
    clock: Clock
    # filled by the gateway router on first use (keeps torch out of the control-plane path)
    extensions: dict[str, Any] = field(default_factory=dict)
    list_calls: Iterator[int] = field(default_factory=itertools.count)  # quirk list-failures alternation

    @classmethod
    def create(cls, settings: Settings) -> "Services":
        clock = Clock()
        store = Store(settings.data_dir, clock,
                      mixed_precision_stamps="mixed-precision-timestamps" in settings.quirks, fsync=settings.fsync)
        clock.offset_us = int(store.get_meta(CLOCK_OFFSET_KEY) or 0)  # time never runs backwards on a restart
        clock.not_before(store.latest_stamp())
        return cls(settings=settings, store=store, clock=clock)

    def advance_clock(self, seconds: float) -> None:
        self.clock.offset_us += int(seconds * 1_000_000)
        self.store.set_meta(CLOCK_OFFSET_KEY, str(self.clock.offset_us))

    def close(self) -> None:
        for ext in self.extensions.values():
            close = getattr(ext, "close", None)
            if close:
                close()
        self.store.close()


async def get_services(request: Request) -> Services:
    return request.app.state.services
