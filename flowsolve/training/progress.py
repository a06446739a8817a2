"""Progress bars (tqdm, on stderr) with the remaining-time estimate, quiet when not asked for."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


class Progress:
    """``with Progress(total, "fit") as bar: bar.update(rmse=0.1)``: a tqdm bar showing the count,
    the rate, the elapsed and the estimated remaining time, and the latest ``figures``.

    Args:
        total: number of units.
        description: label in front of the bar.
        enabled: draw at all; default when stderr is a terminal.
        start: units already done (a resumed fit).
    """

    def __init__(self, total: int, description: str, enabled: bool | None = None, stream=None, start: int = 0):
        stream = stream or sys.stderr
        self.enabled = stream.isatty() if enabled is None else enabled
        self.figures: dict[str, float] = {}
        self._bar = tqdm(total=total, desc=description, initial=start, file=stream, disable=not self.enabled,
                         dynamic_ncols=True, leave=True)

    @property
    def done(self) -> int:
        return int(self._bar.n)

    def update(self, advance: int = 1, **figures) -> None:
        if figures:
            self.figures.update(figures)
            self._bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in self.figures.items()},
                                  refresh=False)
        self._bar.update(advance)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self._bar.close()
