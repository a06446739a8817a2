"""Deliberately wrong solvers: the suite must report each failing, with the right diagnosis.

They show what a failure looks like and are what flowsolve's own tests run the suite against::

    flowsolve conformance flowsolve.conformance.fixtures:wrong_c_midpoint
    flowsolve conformance flowsolve.conformance.fixtures:rk4_wrong_weight
    flowsolve conformance flowsolve.conformance.fixtures:InitialScaleNotOne

Built with :meth:`flowsolve.ButcherTableau.unchecked`, since construction refuses them.
"""

from __future__ import annotations

from fractions import Fraction as F

from flowsolve.core.tableau import ButcherTableau
from flowsolve.methods.runge_kutta import RK4_CLASSIC, BaseSolver
from flowsolve.solvers.transforms import NodeValues, ScaleTime

# Midpoint whose second stage claims to sit at the end of the step (c = 1) while its A row
# steps only half way: first order on any time-dependent problem (exact-order on autonomous ones).
WRONG_C_MIDPOINT = ButcherTableau.unchecked(
    "midpoint-wrong-c", a=[[0, 0], [F(1, 2), 0]], b=[0, 1], c=[0, 1], order=2
)
wrong_c_midpoint = BaseSolver(WRONG_C_MIDPOINT)

# Classic RK4 with b_3 = 1/6 instead of 1/3: the weights sum to 5/6, so the method does not
# even converge (order 0).
RK4_WRONG_WEIGHT = ButcherTableau.unchecked(
    "rk4-wrong-weight", a=RK4_CLASSIC.a, b=[F(1, 6), F(1, 3), F(1, 6), F(1, 6)], c=RK4_CLASSIC.c, order=4
)
rk4_wrong_weight = BaseSolver(RK4_WRONG_WEIGHT)

WRONG_INITIAL_SCALE = 1.3


class InitialScaleNotOne(ScaleTime):
    """A scale-time transform whose scale is off by a constant factor, so ``s_0 = 1.3``, not 1.

    Breaks the boundary condition the sampler relies on (it starts from ``xbar = x0``), so the
    identity initialisation is no longer the base solver and the solver is inconsistent.
    """

    name = "initial-scale-not-one"

    def values(self, params, grid) -> NodeValues:
        values = super().values(params, grid)
        return values._replace(s=values.s * WRONG_INITIAL_SCALE, ds=values.ds * WRONG_INITIAL_SCALE)
