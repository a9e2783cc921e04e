"""A one-line progress display on stderr (no tqdm dependency).

On a terminal the line is redrawn in place; elsewhere (CI logs, captured output) a line is
printed at most every `every_s` seconds and at the end, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressLine:
    def __init__(self, total: int, *, label: str = "train", stream: TextIO | None = None,
                 every_s: float = 5.0, enabled: bool = True):
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.enabled = enabled
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._started = time.monotonic()
        self._last_print = 0.0
        self._steps_done = 0

    def render(self, step: int, loss: float | None, note: str = "") -> str:
        width = 20
        filled = min(width, int(width * step / self.total))
        rate = self._steps_done / max(time.monotonic() - self._started, 1e-9)
        loss_text = f"loss {loss:.4f}" if loss is not None else "loss -"
        extra = f"  {note}" if note else ""
        return f"{self.label} [{'#' * filled}{'.' * (width - filled)}] step {step}/{self.total}  {loss_text}  {rate:.1f} step/s{extra}"

    def update(self, step: int, loss: float | None, note: str = "") -> None:
        self._steps_done += 1
        if not self.enabled:
            return
        now = time.monotonic()
        line = self.render(step, loss, note)
        if self._tty:
            self.stream.write("\r\x1b[2K" + line)
            self.stream.flush()
        elif note or step >= self.total or now - self._last_print >= self.every_s:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_print = now

    def close(self) -> None:
        if self.enabled and self._tty:
            self.stream.write("\n")
            self.stream.flush()
