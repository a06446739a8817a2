"""flowsolve: bespoke (learned) ODE solvers for sampling pre-trained flow and diffusion models."""

from . import schedulers
from ._version import __version__
from .adapters import ClassifierFreeGuidance, adapt
from .base_solvers import RK3, RK4, RK38, BaseSolver, Euler, Heun, Midpoint
from .family import SolverFamily, compose
from .fit import evaluate
from .gaussian_mixture import GaussianMixtureFlow
from .ground_truth import GroundTruth, ground_truth
from .losses import LTE, RMSE, Loss, RMSEBound
from .grid import NodeGrid
from .hookspecs import hookimpl
from .persistence import SolverFileError, load
from .reschedule import Rescheduled, reschedule
from .solver import Nodes, ParametricSolver, Trajectory
from .store import StoreMismatchError, TrajectoryStore
from .tableau import ButcherTableau
from .transforms import NodeValues, ScaleOnly, ScaleTime, TimeOnly, Transform
from .velocity import NonFiniteVelocityError, batched_time

__all__ = [
    "__version__",
    "BaseSolver",
    "ButcherTableau",
    "ClassifierFreeGuidance",
    "Euler",
    "GaussianMixtureFlow",
    "GroundTruth",
    "LTE",
    "Loss",
    "Heun",
    "Midpoint",
    "NodeGrid",
    "NodeValues",
    "Nodes",
    "NonFiniteVelocityError",
    "ParametricSolver",
    "RK3",
    "RK38",
    "RK4",
    "RMSE",
    "RMSEBound",
    "Rescheduled",
    "ScaleOnly",
    "ScaleTime",
    "SolverFamily",
    "SolverFileError",
    "StoreMismatchError",
    "TimeOnly",
    "Trajectory",
    "TrajectoryStore",
    "Transform",
    "adapt",
    "batched_time",
    "compose",
    "evaluate",
    "ground_truth",
    "hookimpl",
    "load",
    "reschedule",
    "schedulers",
]
