"""flowsolve's solver conformance suite (installed as ``flowsolve.conformance``).

The suite a solver author runs before publishing a base solver, tableau, transform or solver
family: exact tableau algebra, empirical order on closed-form problems and on an exact
Gaussian-mixture flow, consistency of the parametric solver (Theorem 2.2), Lipschitz and
RMSE bounds, boundary conditions of transforms, and sampler contracts (shape, dtype, device,
NFE, determinism, gradients). Inputs are drawn by Hypothesis (derandomized by default).

Two ways to run it::

    flowsolve conformance midpoint                       # or: my_pkg.solvers:MyTableau
    pytest --flowsolve-solver=my_pkg.solvers:MyTableau   # pytest plugin, one item per check

Example:
    >>> import flowsolve.conformance as conformance
    >>> conformance.main(["midpoint", "--quick"])  # doctest: +SKIP
    0

Names are imported lazily, so loading the pytest plugin costs nothing until it is used.
"""

import importlib

_EXPORTS = {
    "main": ".cli",
    "build_parser": ".cli",
    "execute": ".cli",
    "resolve": ".subject",
    "from_object": ".subject",
    "Subject": ".subject",
    "plan": ".plan",
    "run_checks": ".report",
    "Check": ".check",
    "CheckFailed": ".check",
    "Outcome": ".check",
    "Status": ".check",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
