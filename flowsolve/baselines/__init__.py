"""Layer 6, baselines: the training-free solvers a learned solver is compared against (uniform
Runge--Kutta grids, DDIM, DPM-Solver++(2M), EDM's Heun), at equal NFE.

One module per baseline, each with a ``BASELINES`` table ``{name: factory}``; the builtin
plugin (:mod:`flowsolve.plugins.builtin`) registers them (kind ``"baseline"``), and reports take
every registered baseline, plugins' included, from the registry.
"""

from __future__ import annotations

from collections.abc import Callable

from flowsolve.baselines.base import Baseline, predictions
from flowsolve.baselines.ddim import DDIM
from flowsolve.baselines.dpm_solver import DPMSolverPP2M
from flowsolve.baselines.edm import EDMHeun
from flowsolve.baselines.grids import (
    GRID_SPACINGS,
    sigma_range,
    solver_grid,
    times_at_noise,
    uniform_time_grid,
)
from flowsolve.baselines.uniform import UniformGrid


def builtin_baselines() -> dict[str, Callable[[], Baseline]]:
    """flowsolve's own baselines ``{name: factory}`` in report order, ``factory()`` a :class:`Baseline`
    named ``name``: the builtin plugin's table. Every registered baseline, plugins' included:
    ``flowsolve.registry.registry().baselines()`` (or ``lookup("baseline", name)``)."""
    # The builtin plugin, a layer above, keeps the one list; looked up when asked for.
    from flowsolve.plugins.builtin import flowsolve_baselines

    return flowsolve_baselines()


__all__ = ["DDIM", "GRID_SPACINGS", "Baseline", "DPMSolverPP2M", "EDMHeun", "UniformGrid",
           "builtin_baselines", "predictions", "sigma_range", "solver_grid", "times_at_noise", "uniform_time_grid"]
