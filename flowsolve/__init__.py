"""flowsolve: bespoke (learned) ODE solvers for sampling pre-trained flow and diffusion models.

Public names are imported on first use (PEP 562), so ``import flowsolve`` (and the pytest
plugin of the conformance suite, loaded in every pytest run) does not pay for torch until needed.
"""

import importlib
import warnings

from flowsolve import _moved_modules
from flowsolve._version import __version__

_moved_modules.install()

_EXPORTS = {
    "adapters": ".models.adapters",
    "baselines": ".baselines",
    "distributed": ".training.distributed",
    "k_diffusion": ".k_diffusion",
    "losses": ".training.losses",
    "nonstationary": ".solvers.nonstationary",  # the README documents flowsolve.nonstationary.trace
    "registry": ".plugins.registry",
    "AdamsBashforth": ".methods.adams",
    "BaseMethod": ".methods.base",
    "Baseline": ".baselines",
    "Family": ".solvers.family_base",
    "SolverModule": ".solvers.module",
    "Adapter": ".models.adapters",
    "BaseSolver": ".methods.runge_kutta",
    "ButcherTableau": ".core.tableau",
    "ClassifierFreeGuidance": ".models.guidance",
    "ConditionDistribution": ".models.conditioning",
    "DiscreteVP": ".paths.discrete_vp",
    "GuidanceRange": ".solvers.guidance_range",
    "GuidanceRangeSolver": ".solvers.guidance_range",
    "GuidanceScales": ".models.conditioning",
    "Labels": ".models.conditioning",
    "Euler": ".methods.runge_kutta",
    "FlowsolveError": ".core.errors",
    "GaussianMixtureFlow": ".models.gaussian_mixture",
    "GroundTruth": ".training.ground_truth",
    "Heun": ".methods.runge_kutta",
    "LTE": ".training.losses",
    "Loss": ".training.losses",
    "Midpoint": ".methods.runge_kutta",
    "MultistepSolver": ".solvers.multistep",
    "NodeGrid": ".core.grid",
    "NodeValues": ".solvers.transforms",
    "NonStationary": ".solvers.nonstationary",
    "NonStationarySolver": ".solvers.nonstationary",
    "Nodes": ".solvers.parametric",
    "NonFiniteVelocityError": ".core.field",
    "PSNRLoss": ".training.losses",
    "ParametricSolver": ".solvers.parametric",
    "RK3": ".methods.runge_kutta",
    "RK38": ".methods.runge_kutta",
    "RK4": ".methods.runge_kutta",
    "RMSE": ".training.losses",
    "RMSEBound": ".training.losses",
    "Rescheduled": ".paths.rescheduling",
    "ScaleOnly": ".solvers.transforms",
    "ScaleTime": ".solvers.transforms",
    "ParametricFamily": ".solvers.family",
    "SolverFileError": ".persistence",
    "StoreMismatchError": ".training.store",
    "TimeOnly": ".solvers.transforms",
    "Trajectory": ".solvers.module",
    "GroundTruthStore": ".training.store",
    "Transform": ".solvers.transforms",
    "adapt": ".models.adapters",
    "batched_time": ".core.field",
    "compose": ".solvers.family",
    "evaluate": ".training.fit",
    "ground_truth": ".training.ground_truth",
    "hookimpl": ".plugins.hookspecs",
    "load": ".persistence",
    "reschedule": ".paths.rescheduling",
    "schedulers": ".paths.schedulers",
    "zoo": ".models.zoo",
}

# Exports that are modules themselves (the rest are names defined in the module named).
_MODULE_EXPORTS = {"adapters", "baselines", "distributed", "k_diffusion", "losses", "nonstationary", "registry", "schedulers", "zoo"}

__all__ = ["__version__", *sorted(_EXPORTS)]


# Names renamed in this release -> their new names; kept, with a DeprecationWarning, for one release.
_RENAMED = {"SolverFamily": "ParametricFamily", "TrajectoryStore": "GroundTruthStore"}


def __getattr__(name):
    if name in _RENAMED:
        warnings.warn(f"flowsolve.{name} is now flowsolve.{_RENAMED[name]}; the old name will be removed in the next "
                      "release", DeprecationWarning, stacklevel=2)
        return __getattr__(_RENAMED[name])
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name], __name__)
        value = module if name in _MODULE_EXPORTS else getattr(module, name)
        globals()[name] = value
        return value
    if f"{__name__}.{name}" in _moved_modules.MOVED:  # deprecated flat module name, e.g. flowsolve.fingerprint
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
