"""Adams--Bashforth multistep base methods: one velocity evaluation per step.

On a field ``f(r, x)`` with uniform steps ``h = 1/n`` in ``r``:

    x_{i+1} = x_i + h sum_j beta_j f(r_{i-j}, x_{i-j}),

AB2 ``beta = (3/2, -1/2)``, AB3 ``beta = (23/12, -4/3, 5/12)``. A parametric solver applies it to
the transformed field ``ubar`` (eq. 16); the field is only needed at the step points ``r_i``, so
a transform has Euler's node values (``4n - 1`` scale-time parameters).

Start-up rule (keeps the global order ``k``; a start-up step may have local error ``O(h^k)``):
AB2 takes an Euler first step (``n`` NFE); AB3 takes a Heun first step (its second stage at
``r_1``) and an AB2 second step (``n + 1`` NFE).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from fractions import Fraction as F

import attrs
import torch

from flowsolve.core.errors import FlowsolveTypeError, FlowsolveValueError
from flowsolve.core.field import VelocityField, call_field
from flowsolve.core.grid import NodeGrid
from flowsolve.methods.base import BaseMethod
from flowsolve.methods.runge_kutta import EULER

ADAMS_BASHFORTH_COEFFICIENTS = {1: [F(1)], 2: [F(3, 2), F(-1, 2)], 3: [F(23, 12), F(-4, 3), F(5, 12)]}
_ADAMS_BASHFORTH = ADAMS_BASHFORTH_COEFFICIENTS  # the former private name (the conformance suite read it)


class AdamsBashforth(BaseMethod):
    """Adams--Bashforth of order 1 (= Euler), 2 or 3 with the start-up rule of :mod:`flowsolve.methods.adams`.

    Example:
        >>> import torch, flowsolve
        >>> ab2 = flowsolve.AdamsBashforth(2)
        >>> x1 = ab2.sample(lambda t, x: -x, torch.ones(2, 3), nfe=10)  # 10 steps, 10 evaluations
        >>> flowsolve.compose(flowsolve.ScaleTime(), ab2).at(nfe=10).num_params  # 4n - 1
        39
    """

    conformance_checks = ("multistep-order", "order", "contracts", "parametric")

    def __init__(self, order: int = 2):
        if order not in ADAMS_BASHFORTH_COEFFICIENTS:
            raise FlowsolveValueError(f"Adams-Bashforth order must be 1, 2 or 3, got {order!r}")
        self.ab_order = order

    @property
    def name(self) -> str:
        return f"ab{self.ab_order}"

    @property
    def order(self) -> int:
        return self.ab_order

    @property
    def stages(self) -> int:
        """Evaluations per step (after the start-up)."""
        return 1

    @property
    def history(self) -> int:
        return self.ab_order - 1

    @property
    def coefficients(self) -> list[F]:
        """``beta_j``, exact, ``j`` steps back."""
        return list(ADAMS_BASHFORTH_COEFFICIENTS[self.ab_order])

    @property
    def startup_evaluations(self) -> int:
        """Evaluations beyond one per step spent by the start-up rule (AB3's Heun first step)."""
        return 1 if self.ab_order == 3 else 0

    def evaluations(self, n_steps: int) -> int:
        return n_steps + (self.startup_evaluations if n_steps >= 1 else 0)

    def n_steps(self, nfe: int) -> int:
        if isinstance(nfe, bool) or not isinstance(nfe, int):
            raise FlowsolveTypeError(f"nfe must be an int, got {type(nfe).__name__} {nfe!r}")
        least = 1 + self.startup_evaluations
        if nfe < least:
            raise FlowsolveValueError(f"{self.name} needs nfe >= {least} (one evaluation per step"
                             + (", plus one for its Heun start-up step)" if self.startup_evaluations else ")"))
        return nfe - self.startup_evaluations

    def step_coefficients(self, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``beta`` per step, ``(n, order)`` (column ``j`` weighs the slope ``j`` steps back), and
        ``(n,)`` weights of the Heun start-up stage (AB3's first step only)."""
        k = self.ab_order
        beta = torch.zeros(n_steps, k, dtype=torch.float64)
        heun = torch.zeros(n_steps, dtype=torch.float64)
        for i in range(n_steps):
            if k == 3 and i == 0:
                beta[i, 0], heun[i] = 0.5, 0.5
                continue
            used = ADAMS_BASHFORTH_COEFFICIENTS[min(k, i + 1)]
            beta[i, : len(used)] = torch.tensor([float(b) for b in used], dtype=torch.float64)
        return beta, heun

    def node_grid(self, n_steps: int) -> NodeGrid:
        grid = NodeGrid.build(EULER, n_steps)  # evaluations at the step points only, as Euler's
        if self.startup_evaluations and n_steps == 1:  # the Heun stage evaluates at r_1 = 1: learn t, s there too
            return attrs.evolve(grid, eval_index=torch.arange(grid.size))
        return grid

    def sample(self, u: VelocityField, x0: torch.Tensor, nfe: int, *, check_finite: bool = True) -> torch.Tensor:
        """Integrate on a uniform grid in ``t`` with ``nfe`` evaluations (no autograd graph is kept)."""
        n = self.n_steps(nfe)
        times = self.node_grid(n).r.to(device=x0.device, dtype=x0.dtype)

        def slope(node, x, step):
            return call_field(u, times[node], x, where=f"in step {step}", check_finite=check_finite)

        with torch.no_grad():
            return adams_bashforth_rollout(self, n, slope, x0)

    def spec_options(self) -> dict:
        return {"multistep": "adams-bashforth", "order": self.ab_order}

    @classmethod
    def from_spec(cls, name: str, options: dict) -> AdamsBashforth:
        return cls(options["order"])

    def to_dict(self) -> dict:
        """The description format version 2 stored (kept for existing callers)."""
        return {"name": self.name, **self.spec_options()}

    def __eq__(self, other) -> bool:
        return isinstance(other, AdamsBashforth) and other.ab_order == self.ab_order

    def __hash__(self) -> int:
        return hash(("adams-bashforth", self.ab_order))

    def __repr__(self) -> str:
        return f"AdamsBashforth({self.ab_order})"


Slope = Callable[[int, torch.Tensor, int], torch.Tensor]


def adams_bashforth_rollout(method: AdamsBashforth, n_steps: int, slope: Slope, x0: torch.Tensor,
                            on_step: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """The ``n_steps`` steps of ``method`` from ``x0``; ``slope(node, x, step)`` is the field at step
    point ``node`` on state ``x``, and ``on_step(i, x)`` sees the state after step ``i``."""
    beta, heun = (v.tolist() for v in method.step_coefficients(n_steps))  # constants: no device syncs
    h, x, slopes = 1.0 / n_steps, x0, []
    for i in range(n_steps):
        slopes.append(slope(i, x, i))
        increment = sum(b * slopes[i - j] for j, b in enumerate(beta[i]) if b != 0.0)
        if heun[i] != 0.0:
            increment = increment + heun[i] * slope(i + 1, x + h * slopes[i], i)
        x = x + h * increment
        if on_step is not None:
            on_step(i, x)
    return x


BASE_SOLVERS: dict[str, Callable[[], BaseMethod]] = {
    f"ab{order}": functools.partial(AdamsBashforth, order) for order in (2, 3)
}
