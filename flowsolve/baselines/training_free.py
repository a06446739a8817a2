"""Transitional: the baselines' old single module, kept only until its last importers
(``tests/test_transforms.py``, ``tests/test_nonstationary.py``) import from :mod:`flowsolve.baselines`;
then delete this file (the name was never released)."""

from flowsolve.baselines import (  # noqa: F401
    DDIM,
    GRID_SPACINGS,
    DPMSolverPP2M,
    EDMHeun,
    UniformGrid,
    builtin_baselines,
    predictions,
    sigma_range,
    solver_grid,
    times_at_noise,
    uniform_time_grid,
)
from flowsolve.baselines.grids import model_time_range  # noqa: F401
