"""Layer 6, baselines: the training-free solvers a learned solver is compared against (uniform
Runge--Kutta grids, DDIM, DPM-Solver++(2M) and (3M), UniPC, iPNDM, EDM's Heun), at equal NFE.
The multistep ones come on a log-SNR grid (the plain name) and an EDM one (``"<name> edm"``), so
reports can take each method on its best grid.

One module per baseline, each with a ``BASELINES`` table ``{name: factory}``; the builtin
plugin (:mod:`flowsolve.plugins.builtin`) registers them (kind ``"baseline"``), and reports take
every registered baseline, plugins' included, from the registry.
"""

from __future__ import annotations

from collections.abc import Callable

from flowsolve.baselines import (
    ddim,
    dpm_solver,
    dpm_solver_3m,
    edm,
    ipndm,
    uniform,
    unipc,
)
from flowsolve.baselines.base import Baseline, predictions
from flowsolve.baselines.ddim import DDIM
from flowsolve.baselines.dpm_solver import DPMSolverPP2M
from flowsolve.baselines.dpm_solver_3m import DPMSolverPP3M
from flowsolve.baselines.edm import EDMHeun
from flowsolve.baselines.ipndm import IPNDM
from flowsolve.baselines.uniform import UniformGrid
from flowsolve.baselines.unipc import UniPC
from flowsolve.paths.noise_grids import (
    GRID_SPACINGS,
    sigma_range,
    solver_grid,
    times_at_noise,
    uniform_time_grid,
)

# flowsolve's own baselines, in the order reports list them: one module each, holding the baseline
# and its ``BASELINES`` table ``{name: factory}``. A new baseline is a new module and one entry here.
BASELINE_MODULES = (uniform, edm, dpm_solver, ddim, dpm_solver_3m, unipc, ipndm)


def builtin_baselines() -> dict[str, Callable[[], Baseline]]:
    """flowsolve's own baselines ``{name: factory}`` in report order, ``factory()`` a :class:`Baseline`
    named ``name`` (the builtin plugin registers this table). Every registered baseline, plugins'
    included: ``flowsolve.registry.registry().baselines()`` (or ``lookup("baseline", name)``)."""
    return {name: factory for module in BASELINE_MODULES for name, factory in module.BASELINES.items()}


__all__ = [
    "DDIM",
    "GRID_SPACINGS",
    "IPNDM",
    "Baseline",
    "DPMSolverPP2M",
    "DPMSolverPP3M",
    "EDMHeun",
    "UniPC",
    "UniformGrid",
    "builtin_baselines",
    "predictions",
    "sigma_range",
    "solver_grid",
    "times_at_noise",
    "uniform_time_grid",
]
