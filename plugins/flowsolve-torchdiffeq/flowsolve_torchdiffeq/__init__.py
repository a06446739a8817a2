"""torchdiffeq's fixed-grid Runge--Kutta methods as flowsolve base solvers.

Registered through the ``flowsolve`` entry-point group as ``torchdiffeq-<method>`` for the
explicit one-step fixed-grid methods torchdiffeq offers (the prefix keeps them apart from
flowsolve's built-ins). The tableau of each is read from torchdiffeq's own arithmetic (see
:func:`read_tableau`), so a flowsolve solver built on it takes the same steps as
``torchdiffeq.odeint(..., method=method)`` on the same grid, to round-off.

Example:
    >>> import torch, torchdiffeq
    >>> heun3 = TorchdiffeqMethod("heun3")
    >>> x0 = torch.ones(2, 3, dtype=torch.float64)
    >>> ours = heun3.sample(lambda t, x: -x, x0, nfe=12)  # 4 steps of 3 stages
    >>> theirs = torchdiffeq.odeint(lambda t, x: -x, x0, torch.linspace(0, 1, 5, dtype=torch.float64),
    ...                             method="heun3")[-1]
    >>> bool((ours - theirs).abs().max() < 1e-14)
    True
"""

from __future__ import annotations

import functools
import warnings
from fractions import Fraction

import torch
import torchdiffeq

from flowsolve.core.tableau import ButcherTableau
from flowsolve.methods.runge_kutta import BaseSolver
from flowsolve.plugins.hookspecs import hookimpl

__all__ = ["METHODS", "PREFIX", "TorchdiffeqMethod", "flowsolve_base_solvers", "read_tableau"]

PREFIX = "torchdiffeq-"
# torchdiffeq's explicit one-step fixed-grid methods (its Adams methods are multistep: no tableau).
METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4")
_PROBE_WIDTH = 16  # more than any method's stage count
_DENOMINATORS = 10**4


def _solver_table() -> dict:
    """torchdiffeq's table of solver classes (each declares its ``order``); not public API."""
    try:
        from torchdiffeq._impl.odeint import SOLVERS
    except ImportError as error:
        raise ValueError(f"torchdiffeq {torchdiffeq.__version__} no longer has torchdiffeq._impl.odeint.SOLVERS, "
                         "where this plugin reads each method's declared order") from error
    return SOLVERS


def _declared_order(method: str) -> int:
    solvers = _solver_table()
    if method not in solvers:
        raise ValueError(f"torchdiffeq {torchdiffeq.__version__} has no method {method!r}; it has {sorted(solvers)}")
    return int(solvers[method].order)


def _exact(value: float) -> Fraction:
    """The simple fraction ``value`` is the float of (1/3 for 0.333...), or its exact binary value."""
    simple = Fraction(value).limit_denominator(_DENOMINATORS)
    if abs(float(simple) - value) <= 4 * abs(value) * 2.0**-52:
        return simple
    return Fraction(value)


@functools.lru_cache(maxsize=None)
def read_tableau(method: str) -> ButcherTableau:
    """The Butcher tableau of torchdiffeq's fixed-grid ``method``, read by running it.

    One step of size 1 from ``y0 = 0`` through :func:`torchdiffeq.odeint`, on a probe field
    whose ``k``-th evaluation returns the unit vector ``e_k``: the time of evaluation ``k`` is
    ``c_k``, the state it sees is ``sum_l a_kl e_l`` (row ``k`` of ``A``) and the step's
    result is ``sum_k b_k e_k``. Entries are rounded to the simple fraction their float
    stands for; flowsolve then checks the order conditions exactly against torchdiffeq's
    declared order.

    Raises:
        ValueError: ``method`` is not in :data:`METHODS` (a single probe step cannot tell a
            multistep method from a Runge--Kutta one), this torchdiffeq lacks it, or it does
            not step like an explicit Runge--Kutta method.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)} (torchdiffeq's one-step fixed-grid Runge--Kutta "
                         f"methods), got {method!r}")
    order = _declared_order(method)
    stages: list[tuple[float, torch.Tensor]] = []
    units = torch.eye(_PROBE_WIDTH, dtype=torch.float64)

    def probe(t, y):
        if len(stages) == _PROBE_WIDTH:
            raise ValueError(f"torchdiffeq's {method!r} evaluated the field more than {_PROBE_WIDTH} times in one step")
        stages.append((float(t), y.clone()))
        return units[len(stages) - 1].clone()

    y0 = torch.zeros(_PROBE_WIDTH, dtype=torch.float64)
    grid = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with torch.no_grad():
        y1 = torchdiffeq.odeint(probe, y0, grid, method=method)[-1]
    count = len(stages)
    if count == 0 or bool(y1[count:].any()) or any(bool(y[i:].any()) for i, (_, y) in enumerate(stages)):
        raise ValueError(f"torchdiffeq's {method!r} does not step like an explicit Runge--Kutta method")
    name = PREFIX + method
    return ButcherTableau(
        name,
        a=[[_exact(float(v)) for v in y[:count]] for _, y in stages],
        b=[_exact(float(v)) for v in y1[:count]],
        c=[_exact(t) for t, _ in stages],
        order=order,
    )


class TorchdiffeqMethod(BaseSolver):
    """torchdiffeq's fixed-grid ``method`` as a flowsolve base solver.

    Order and NFE per step are torchdiffeq's: ``euler`` 1/1, ``midpoint`` 2/2, ``heun2`` 2/2,
    ``heun3`` 3/3, ``rk4`` (the 3/8 rule) 4/4. Works on states of any shape ``(batch, ...)``.

    Args:
        method: a name in :data:`METHODS`.
    """

    def __init__(self, method: str):
        super().__init__(read_tableau(method))
        self.method = method

    def __repr__(self) -> str:
        return f"TorchdiffeqMethod({self.method!r})"


@hookimpl
def flowsolve_base_solvers():
    """``torchdiffeq-<method>`` for each of torchdiffeq's fixed-grid methods this torchdiffeq has.

    Cheap: a tableau is read when its factory is first called. Never raises, so that a
    torchdiffeq this plugin does not understand cannot break the registry for other plugins.
    """
    try:
        present = [method for method in METHODS if method in _solver_table()]
    except ValueError as error:
        warnings.warn(f"flowsolve-torchdiffeq offers no solvers: {error}", stacklevel=2)
        return {}
    return {PREFIX + method: functools.partial(TorchdiffeqMethod, method) for method in present}
