"""Runge--Kutta base solvers on a uniform time grid, the simplest baselines."""

from __future__ import annotations

import attrs

from flowsolve.baselines.base import Baseline
from flowsolve.methods.runge_kutta import RK4, BaseSolver, Euler, Heun, Midpoint


@attrs.frozen
class UniformGrid(Baseline):
    """A Runge--Kutta base solver on a uniform grid (``Euler``, ``Midpoint``, ``Heun``, ``RK4``)."""

    needs_scheduler = False

    base: BaseSolver

    @property
    def name(self) -> str:
        return self.base.name

    def sample(self, u, x0, nfe: int):
        """``(x1, nfe)``, or ``(None, 0)`` when ``nfe`` is not a whole number of steps."""
        if nfe % self.base.stages:
            return None, 0
        return self.base.sample(u, x0, nfe), nfe


BASELINES = {
    "euler": lambda: UniformGrid(Euler()),
    "midpoint": lambda: UniformGrid(Midpoint()),
    "heun": lambda: UniformGrid(Heun()),
    "rk4": lambda: UniformGrid(RK4()),
}
