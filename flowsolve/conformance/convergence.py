"""Empirical order of convergence: errors over a ladder of step counts, log--log slope.

The ladder doubles the number of steps from :data:`FIRST_STEPS`. It always reaches
:data:`SETTLED_FROM` steps and then goes on until the local slopes ``log2(e(n) / e(2n))`` of the
last :data:`SETTLED_SLOPES` doublings agree within :data:`SETTLE`, until :data:`LAST_STEPS`, or
until the error falls below the problem's round-off floor (beyond it the error no longer
measures the method). Waiting for settled slopes matters: an error curve may fall faster on
coarse grids and settle to the order only later (Midpoint on a Gaussian mixture, whose
leading error coefficient is tiny), approach it from below (a correction term of opposite
sign), or dip where the error changes sign.

The order is the least-squares slope of ``-log(error)`` against ``log(steps)`` over the
:data:`FIT_RUNGS` finest rungs above the floor, taken after the last rung where refining did
not reduce the error (a sign change) when enough rungs follow it. With fewer than
:data:`FIT_RUNGS` rungs above the floor (a very accurate method) the ladder is extended
towards coarser grids.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs

FIRST_STEPS = 8
SETTLED_FROM = 64
LAST_STEPS = 1024
COARSEST_STEPS = 1
FIT_RUNGS = 3
SETTLED_SLOPES = 3
SETTLE = 0.15


@attrs.frozen
class Convergence:
    """Errors measured over a ladder of step counts and the fitted order.

    Attributes:
        steps: step counts tried, increasing.
        errors: max-abs error at each.
        floor: errors below it are round-off and not used.
        order: fitted slope; ``inf`` if the method is exact to round-off even on the coarsest
            grid, ``nan`` if an error is not finite.
    """

    steps: tuple[int, ...]
    errors: tuple[float, ...]
    floor: float
    order: float

    def describe(self) -> str:
        """``"errors 1.2e-02 @8, 3.0e-03 @16, ..."``: the ladder, for diagnoses."""
        return "errors " + ", ".join(f"{e:.1e} @{n}" for n, e in zip(self.steps, self.errors))


def fitted_order(error_at: Callable[[int], float], floor: float) -> Convergence:
    """Measure the order of a method from ``error_at(steps)`` (the global error with that many steps)."""
    measured: dict[int, float] = {}
    steps = FIRST_STEPS
    while steps <= LAST_STEPS:
        measured[steps] = error_at(steps)
        if not math.isfinite(measured[steps]) or measured[steps] < floor:
            break
        if steps >= SETTLED_FROM and _settled(measured):
            break
        steps *= 2
    steps = FIRST_STEPS // 2
    while len(_above(measured, floor)) < FIT_RUNGS and steps >= COARSEST_STEPS:
        measured[steps] = error_at(steps)
        steps //= 2
    ordered = sorted(measured)
    errors = tuple(measured[n] for n in ordered)
    usable = _after_sign_change(_above(measured, floor), measured)[-FIT_RUNGS:]
    if not all(math.isfinite(e) for e in errors):
        order = math.nan
    elif len(usable) >= 2:
        order = _slope([math.log(n) for n in usable], [-math.log(measured[n]) for n in usable])
    elif not usable:
        order = math.inf  # exact to round-off on every grid tried
    else:  # a single rung above the floor: its drop to the next rung bounds the order from below
        finer = ordered[ordered.index(usable[0]) + 1] if usable[0] != ordered[-1] else None
        order = math.log(measured[usable[0]] / floor) / math.log(finer / usable[0]) if finer else math.nan
    return Convergence(tuple(ordered), errors, floor, order)


def _settled(measured: dict[int, float]) -> bool:
    errors = [measured[n] for n in sorted(measured)[-SETTLED_SLOPES - 1:]]
    if len(errors) <= SETTLED_SLOPES or min(errors) <= 0:
        return False
    slopes = [math.log2(coarse / fine) for coarse, fine in zip(errors, errors[1:])]
    return max(slopes) - min(slopes) <= SETTLE


def _above(measured: dict[int, float], floor: float) -> list[int]:
    return sorted(n for n, e in measured.items() if math.isfinite(e) and e >= floor)


def _after_sign_change(rungs: list[int], measured: dict[int, float]) -> list[int]:
    """The rungs after the last one where refining did not reduce the error (the error changed
    sign there), if at least :data:`FIT_RUNGS` remain; else all (a method that does not
    converge never reduces its error)."""
    start = 0
    for k in range(1, len(rungs)):
        if measured[rungs[k]] >= measured[rungs[k - 1]]:
            start = k
    return rungs[start:] if len(rungs) - start >= FIT_RUNGS else rungs


def _slope(x: list[float], y: list[float]) -> float:
    mean_x, mean_y = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mean_x) * (b - mean_y) for a, b in zip(x, y)) / sum((a - mean_x) ** 2 for a in x)
