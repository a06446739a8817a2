"""flowsolve: bespoke (learned) ODE solvers for sampling pre-trained flow and diffusion models.

Public names are imported on first use (PEP 562), so ``import flowsolve`` (and the pytest
plugin of the conformance suite, loaded in every pytest run) does not pay for torch until needed.
"""

import importlib

from ._version import __version__

_EXPORTS = {
    "adapters": ".adapters",
    "baselines": ".baselines",
    "distributed": ".distributed",
    "losses": ".losses",
    "nonstationary": ".nonstationary",  # the README documents flowsolve.nonstationary.trace
    "registry": ".registry",
    "AdamsBashforth": ".multistep",
    "BaseSolver": ".base_solvers",
    "ButcherTableau": ".tableau",
    "ClassifierFreeGuidance": ".adapters",
    "Euler": ".base_solvers",
    "GaussianMixtureFlow": ".gaussian_mixture",
    "GroundTruth": ".reference_paths",
    "Heun": ".base_solvers",
    "LTE": ".losses",
    "Loss": ".losses",
    "Midpoint": ".base_solvers",
    "MultistepSolver": ".multistep",
    "NodeGrid": ".grid",
    "NodeValues": ".transforms",
    "NonStationary": ".nonstationary",
    "NonStationarySolver": ".nonstationary",
    "Nodes": ".solver",
    "NonFiniteVelocityError": ".velocity",
    "PSNRLoss": ".losses",
    "ParametricSolver": ".solver",
    "RK3": ".base_solvers",
    "RK38": ".base_solvers",
    "RK4": ".base_solvers",
    "RMSE": ".losses",
    "RMSEBound": ".losses",
    "Rescheduled": ".rescheduling",
    "ScaleOnly": ".transforms",
    "ScaleTime": ".transforms",
    "SolverFamily": ".family",
    "SolverFileError": ".persistence",
    "StoreMismatchError": ".store",
    "TimeOnly": ".transforms",
    "Trajectory": ".solver",
    "TrajectoryStore": ".store",
    "Transform": ".transforms",
    "adapt": ".adapters",
    "batched_time": ".velocity",
    "compose": ".family",
    "evaluate": ".fit",
    "ground_truth": ".reference_paths",
    "hookimpl": ".hookspecs",
    "load": ".persistence",
    "reschedule": ".rescheduling",
    "schedulers": ".schedulers",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name], __name__)
        value = module if _EXPORTS[name] == f".{name}" else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
