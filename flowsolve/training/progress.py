"""A small terminal progress bar (stderr), quiet when not attached to a terminal."""

from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress(total, "fit") as bar: bar.update(rmse=0.1)`` prints ``fit [####  ] 3/8 rmse=0.1 2.1s``.

    Args:
        total: number of units.
        description: label in front of the bar.
        enabled: draw at all; default when stderr is a terminal.
    """

    def __init__(self, total: int, description: str, enabled: bool | None = None, stream=None, start: int = 0):
        self.total, self.description, self.done = total, description, start
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.perf_counter()
        self.figures: dict[str, float] = {}
        self._last_draw = 0.0

    def update(self, advance: int = 1, **figures) -> None:
        self.done += advance
        self.figures.update(figures)
        now = time.perf_counter()
        if self.enabled and (now - self._last_draw > 0.1 or self.done >= self.total):
            self._draw(now)

    def _draw(self, now: float) -> None:
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        figures = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.figures.items())
        line = f"\r{self.description} [{'#' * filled}{' ' * (width - filled)}] {self.done}/{self.total} {figures} {now - self.started:.1f}s"
        self.stream.write(line)
        self.stream.flush()
        self._last_draw = now

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
