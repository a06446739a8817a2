"""Layer 6, baselines: the training-free solvers a learned solver is compared against (uniform
Runge--Kutta grids, DDIM, DPM-Solver++(2M), EDM's Heun), at equal NFE."""

from flowsolve.baselines.training_free import (
    DDIM,
    GRID_SPACINGS,
    DPMSolverPP2M,
    EDMHeun,
    UniformGrid,
    builtin_baselines,
    predictions,
    sigma_range,
    solver_grid,
    uniform_time_grid,
)

__all__ = ["DDIM", "GRID_SPACINGS", "DPMSolverPP2M", "EDMHeun", "UniformGrid", "builtin_baselines", "predictions",
           "sigma_range", "solver_grid", "uniform_time_grid"]
