"""A solver family: a transform composed with a base solver; ``at(nfe)`` gives a solver."""

from __future__ import annotations

import attrs

from .base_solvers import BaseSolver
from .solver import ParametricSolver
from .transforms import Transform


def _check_transform(instance, attribute, value):
    if not isinstance(value, Transform):
        raise TypeError(
            f"transform must be a flowsolve.Transform instance (e.g. ScaleTime()), got {type(value).__name__} {value!r}"
        )


def _check_base(instance, attribute, value):
    if not isinstance(value, BaseSolver):
        raise TypeError(
            f"base must be a flowsolve.BaseSolver instance (e.g. Midpoint()), got {type(value).__name__} {value!r}"
        )


@attrs.frozen
class SolverFamily:
    """All parametric solvers ``transform x base`` (paper sec. 2.2), one per step count.

    Example:
        >>> import flowsolve
        >>> family = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint())
        >>> family.at(nfe=10).n_steps
        5
    """

    transform: Transform = attrs.field(validator=_check_transform)
    base: BaseSolver = attrs.field(validator=_check_base)

    def at(self, nfe: int) -> ParametricSolver:
        """The identity-initialised solver spending ``nfe`` evaluations (a multiple of ``base.stages``)."""
        return ParametricSolver(self.transform, self.base, self.base.n_steps(nfe))


def compose(transform: Transform, base: BaseSolver) -> SolverFamily:
    """Combine a :class:`Transform` and a :class:`BaseSolver` into a :class:`SolverFamily`.

    Example:
        >>> import flowsolve
        >>> solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Euler()).at(nfe=4)
        >>> solver.num_params  # 4n - 1
        15
    """
    return SolverFamily(transform, base)
