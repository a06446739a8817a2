"""Base solvers: explicit Runge--Kutta methods defined by their Butcher tableau.

A new method is a tableau constant plus a few lines; the stepping code lives once, in
:func:`flowsolve.core.rk_step.rk_step`.
"""

from __future__ import annotations

import warnings
from fractions import Fraction as F

import torch

from flowsolve.core.errors import FlowsolveTypeError, FlowsolveValueError
from flowsolve.core.field import VelocityField, call_field
from flowsolve.core.grid import NodeGrid
from flowsolve.core.rk_step import rk_step
from flowsolve.core.tableau import ButcherTableau
from flowsolve.methods.base import BaseMethod


class BaseSolver(BaseMethod):
    """An explicit Runge--Kutta base solver, driven by its Butcher tableau.

    Costs ``stages`` velocity evaluations (NFE) per step; an NFE budget must be a multiple
    of ``stages``. On its own it integrates on a uniform grid; combined with a
    :class:`~flowsolve.Transform` by :func:`~flowsolve.compose` it becomes a parametric solver.
    A subclass that sets ``tableau`` as a class attribute has it checked when it is defined.

    Args:
        tableau: the method; subclasses set it as a class attribute.

    Example:
        >>> import torch
        >>> x1 = Midpoint().sample(lambda t, x: -x, torch.ones(2, 3), nfe=20)
    """

    tableau: ButcherTableau
    conformance_checks = ("tableau", "order", "contracts", "parametric", "step-lipschitz")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "tableau" in cls.__dict__ and not isinstance(cls.__dict__["tableau"], ButcherTableau):
            raise FlowsolveTypeError(f"{cls.__qualname__}.tableau must be a ButcherTableau, "
                            f"got {type(cls.__dict__['tableau']).__name__}")

    def __init__(self, tableau: ButcherTableau | None = None):
        if tableau is not None:
            if not isinstance(tableau, ButcherTableau):
                raise FlowsolveTypeError(f"tableau must be a ButcherTableau, got {type(tableau).__name__}")
            self.tableau = tableau
        elif not _has_class_tableau(type(self)):
            raise FlowsolveTypeError("BaseSolver() needs a ButcherTableau; use e.g. BaseSolver(my_tableau) or Midpoint()")

    @property
    def name(self) -> str:
        return self.tableau.name

    @property
    def order(self) -> int:
        return self.tableau.order

    @property
    def stages(self) -> int:
        return self.tableau.stages

    def evaluations(self, n_steps: int) -> int:
        """Velocity evaluations (NFE) of ``n_steps`` steps."""
        return n_steps * self.stages

    def to_dict(self) -> dict:
        """The stored description: the tableau, plus any options a subclass adds (override
        together with :meth:`from_dict`)."""
        return self.tableau.to_dict()

    def spec_options(self) -> dict:
        return {key: value for key, value in self.to_dict().items() if key != "name"}

    @classmethod
    def from_spec(cls, name: str, options: dict) -> BaseSolver:
        return cls.from_dict({"name": name, **options})

    @classmethod
    def from_dict(cls, data: dict) -> BaseSolver:
        """The method :meth:`to_dict` described: this class if it has the stored tableau, else
        (a user's own tableau, or one a plugin has since changed) the stored tableau as a plain
        :class:`BaseSolver`, with a warning: the stored method is what was fitted."""
        tableau = ButcherTableau.from_dict(data)
        if cls is BaseSolver:
            return BaseSolver(tableau)
        if _has_class_tableau(cls) and cls.tableau == tableau:
            return cls()
        warnings.warn(f"the stored base solver {tableau.name!r} is not the registered {tableau.name!r} "
                      f"({cls.__name__}); loading the stored tableau as a plain BaseSolver", stacklevel=3)
        return BaseSolver(tableau)

    def node_grid(self, n_steps: int) -> NodeGrid:
        """The ``r``-nodes where a parametric solver of ``n_steps`` steps evaluates the field."""
        return NodeGrid.build(self.tableau, n_steps)

    def n_steps(self, nfe: int) -> int:
        """Steps that spend exactly ``nfe`` evaluations; ``ValueError`` if there is no such count."""
        if isinstance(nfe, bool) or not isinstance(nfe, int):
            raise FlowsolveTypeError(f"nfe must be an int, got {type(nfe).__name__} {nfe!r}")
        if nfe < self.stages or nfe % self.stages:
            valid = ", ".join(str(self.stages * k) for k in range(1, 6))
            raise FlowsolveValueError(
                f"nfe={nfe} does not split into whole steps of {self.name} ({self.stages} evaluations per step); "
                f"valid NFEs are the multiples of {self.stages}: {valid}, ..."
            )
        return nfe // self.stages

    def sample(self, u: VelocityField, x0: torch.Tensor, nfe: int, *, check_finite: bool = True) -> torch.Tensor:
        """Integrate ``dx/dt = u(t, x)`` from ``t = 0`` to ``1`` on a uniform grid using ``nfe`` evaluations.

        Args:
            u: velocity field ``u(t, x)``; ``t`` is passed as a 0-dim tensor.
            x0: ``(batch, ...)`` initial state; device and dtype of the computation.
            nfe: evaluation budget, a multiple of ``stages``.

        Returns:
            ``x(1)`` approximation, shaped like ``x0``.
        """
        n = self.n_steps(nfe)
        _, _, c = self.tableau.as_floats()
        h = 1.0 / n
        x = x0
        for i in range(n):
            start = i * h

            def stage(k, y, i=i, start=start):
                t = torch.tensor(start + c[k] * h, dtype=x0.dtype, device=x0.device)
                return call_field(u, t, y, where=f"in {self.name} step {i}, stage {k}", check_finite=check_finite)

            x = rk_step(self.tableau, stage, x, h)
        return x

    def __eq__(self, other) -> bool:
        return isinstance(other, BaseSolver) and other.tableau == self.tableau

    def __hash__(self) -> int:
        return hash(self.tableau)

    def __repr__(self) -> str:
        if type(self) is BaseSolver:
            return f"BaseSolver({self.tableau!r})"
        return f"{type(self).__name__}()"


def _has_class_tableau(cls) -> bool:
    """Whether ``cls`` (or a base class below BaseSolver) fixes its tableau as a class attribute."""
    return any("tableau" in klass.__dict__ for klass in cls.__mro__ if klass is not BaseSolver)


EULER = ButcherTableau("euler", a=[[0]], b=[1], c=[0], order=1)
MIDPOINT = ButcherTableau("midpoint", a=[[0, 0], [F(1, 2), 0]], b=[0, 1], c=[0, F(1, 2)], order=2)
HEUN = ButcherTableau("heun", a=[[0, 0], [1, 0]], b=[F(1, 2), F(1, 2)], c=[0, 1], order=2)
RK3_KUTTA = ButcherTableau(
    "rk3",
    a=[[0, 0, 0], [F(1, 2), 0, 0], [-1, 2, 0]],
    b=[F(1, 6), F(2, 3), F(1, 6)],
    c=[0, F(1, 2), 1],
    order=3,
)
RK4_CLASSIC = ButcherTableau(
    "rk4",
    a=[[0, 0, 0, 0], [F(1, 2), 0, 0, 0], [0, F(1, 2), 0, 0], [0, 0, 1, 0]],
    b=[F(1, 6), F(1, 3), F(1, 3), F(1, 6)],
    c=[0, F(1, 2), F(1, 2), 1],
    order=4,
)
RK4_THREE_EIGHTHS = ButcherTableau(
    "rk38",
    a=[[0, 0, 0, 0], [F(1, 3), 0, 0, 0], [F(-1, 3), 1, 0, 0], [1, -1, 1, 0]],
    b=[F(1, 8), F(3, 8), F(3, 8), F(1, 8)],
    c=[0, F(1, 3), F(2, 3), 1],
    order=4,
)


class Euler(BaseSolver):
    """Forward Euler: order 1, 1 evaluation per step."""

    tableau = EULER


class Midpoint(BaseSolver):
    """Explicit midpoint (RK2): order 2, 2 evaluations per step."""

    tableau = MIDPOINT


class Heun(BaseSolver):
    """Heun's method (explicit trapezoid): order 2, 2 evaluations per step."""

    tableau = HEUN


class RK3(BaseSolver):
    """Kutta's third-order method: order 3, 3 evaluations per step."""

    tableau = RK3_KUTTA


class RK4(BaseSolver):
    """The classic Runge--Kutta method: order 4, 4 evaluations per step."""

    tableau = RK4_CLASSIC


class RK38(BaseSolver):
    """Kutta's 3/8 rule (torchdiffeq's ``rk4``): order 4, 4 evaluations per step."""

    tableau = RK4_THREE_EIGHTHS


BUILTIN_BASE_SOLVERS: dict[str, type[BaseSolver]] = {
    cls.tableau.name: cls for cls in (Euler, Midpoint, Heun, RK3, RK4, RK38)
}
BASE_SOLVERS = BUILTIN_BASE_SOLVERS  # this module's entries in flowsolve.methods.builtin_methods()
