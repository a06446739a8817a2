"""Empirical order of a base solver on problems with a known answer (float64).

Criterion, on every drawn instance of every problem: the fitted order (see
:mod:`~flowsolve.conformance.convergence`) must be at least ``declared - ORDER_TOLERANCE``.
There is no upper bound there: some problem/method pairs converge faster than the method's
order (RK3 on ``dx/dt = cos(t) x`` fits ~4.5; a method with a wrong ``c`` keeps its order on
autonomous problems). On the *generic* problems (nonlinear and time-dependent) a method shows
its true order, so there the declared order must also be sharp: at least one drawn instance
must fit below ``declared + ORDER_TOLERANCE``. With the exact order conditions this catches
an over- and an under-declared order alike.

``ORDER_TOLERANCE = 0.4`` leaves room for slow transitions into the asymptotic regime: over
about 2,500 random draws of the built-in methods the lowest fit was 0.25 below the order
(RK4 on a Gaussian mixture whose error approaches ``h^4`` from below), most stay within 0.1;
a method one order short fits about ``declared - 1`` and fails by a wide margin (Midpoint
with a wrong ``c`` fits 0.95--1.05).
"""

from __future__ import annotations

import math

import torch

from flowsolve.conformance.check import Check, CheckFailed, Outcome
from flowsolve.conformance.convergence import fitted_order
from flowsolve.conformance.problems import ORDER_PROBLEMS
from flowsolve.conformance.profiles import Effort, check_property
from flowsolve.methods.base import BaseMethod

ORDER_TOLERANCE = 0.4
ORDER_EXAMPLES = 3


def max_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    return float((x - reference).abs().max())


def order_checks(base: BaseMethod, effort: Effort, device) -> list[Check]:
    return [_order_check(base, kind, strategy, effort, device) for kind, strategy in ORDER_PROBLEMS]


def _order_check(base: BaseMethod, kind, strategy, effort: Effort, device) -> Check:
    # A function of its own so that the closure binds this problem's kind and strategy.
    return Check(f"order[{kind.name}]", f"fitted order on {kind.name} problems vs the declared order",
                 lambda: _order(base, kind, strategy(), effort, device))


def _order(base: BaseMethod, kind, strategy, effort: Effort, device) -> Outcome:
    declared = base.order

    def trial(problem):
        instance = problem.build(device)
        convergence = fitted_order(
            lambda steps: max_error(base.sample(instance.field, instance.x0, base.evaluations(steps)), instance.x1),
            problem.floor,
        )
        if not convergence.order >= declared - ORDER_TOLERANCE:
            raise CheckFailed(
                f"fitted order {format_order(convergence.order)} vs declared {declared} "
                f"(needs >= {declared - ORDER_TOLERANCE:.2f}) "
                f"on {problem!r}; {convergence.describe()}"
            )
        return convergence.order

    orders = check_property(strategy, trial, examples=ORDER_EXAMPLES, effort=effort)
    if kind.generic and min(orders) > declared + ORDER_TOLERANCE:
        raise CheckFailed(
            f"fitted order {format_order(min(orders))} or more on every drawn {kind.name} problem "
            f"vs declared {declared}: "
            "the method converges faster than it declares; declare its true order"
        )
    return Outcome.passed(f"fitted order {format_orders(orders, f'vs declared {declared}')}")


def format_order(order: float) -> str:
    """Two decimals; ``"0.00"`` rather than ``"-0.00"``, ``"inf"`` when exact to round-off."""
    return "inf" if math.isinf(order) else f"{order:.2f}".replace("-0.00", "0.00")


def format_orders(orders: list[float], versus: str) -> str:
    """``"1.98 vs declared 2 (lowest of 3 draws; highest 2.03)"``: the lowest is what the verdict rests on."""
    low, high = min(orders), max(orders)
    if math.isinf(low):
        return f"inf {versus} (exact to round-off on every grid)"
    if len(orders) == 1:
        return f"{format_order(low)} {versus}"
    return f"{format_order(low)} {versus} (lowest of {len(orders)} draws; highest {format_order(high)})"
