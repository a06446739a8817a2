"""Deprecated module names from before the layered layout (0.x flat modules), kept for one release.

``import flowsolve.schedulers`` (or ``from flowsolve.store import ...``) still works: the old
name resolves to the module at its new place, with a ``DeprecationWarning`` naming it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "flowsolve._rk": "flowsolve.core.rk_step",
    "flowsolve.tableau": "flowsolve.core.tableau",
    "flowsolve.grid": "flowsolve.core.grid",
    "flowsolve.velocity": "flowsolve.core.field",
    "flowsolve.atomic": "flowsolve.core.atomic",
    "flowsolve.fingerprint": "flowsolve.core.fingerprint",
    "flowsolve.base_solvers": "flowsolve.methods.runge_kutta",
    "flowsolve.transforms": "flowsolve.solvers.transforms",
    "flowsolve.solver": "flowsolve.solvers.parametric",
    "flowsolve.multistep": "flowsolve.solvers.multistep",
    "flowsolve.nonstationary": "flowsolve.solvers.nonstationary",
    "flowsolve.family": "flowsolve.solvers.family",
    "flowsolve.schedulers": "flowsolve.paths.schedulers",
    "flowsolve.schedules": "flowsolve.paths.time_grids",
    "flowsolve.rescheduling": "flowsolve.paths.rescheduling",
    "flowsolve.adapters": "flowsolve.models.adapters",
    "flowsolve.gaussian_mixture": "flowsolve.models.gaussian_mixture",
    "flowsolve.zoo": "flowsolve.models.zoo",
    "flowsolve.reference_paths": "flowsolve.training.ground_truth",
    "flowsolve.store": "flowsolve.training.store",
    "flowsolve.losses": "flowsolve.training.losses",
    "flowsolve.metrics": "flowsolve.training.metrics",
    "flowsolve.fit": "flowsolve.training.fit",
    "flowsolve.report": "flowsolve.training.evaluation",
    "flowsolve.distributed": "flowsolve.training.distributed",
    "flowsolve.progress": "flowsolve.training.progress",
    "flowsolve.hookspecs": "flowsolve.plugins.hookspecs",
    "flowsolve.registry": "flowsolve.plugins.registry",
    "flowsolve.builtin_plugin": "flowsolve.plugins.builtin",
}


def _new_name(fullname: str) -> str | None:
    """The new name of ``fullname`` or of a submodule under an old package name
    (``flowsolve.zoo.networks`` -> ``flowsolve.models.zoo.networks``), else ``None``."""
    if fullname in MOVED:
        return MOVED[fullname]
    for old, new in MOVED.items():
        if fullname.startswith(old + "."):
            return new + fullname[len(old):]
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module):
        # Already executed under its new name; the import system replaced its spec: give it back.
        module.__spec__ = self.own_spec


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Resolves an old module name to the module at its new place."""

    def find_spec(self, fullname, path=None, target=None):
        new = _new_name(fullname)
        if new is None:
            return None
        warnings.warn(f"{fullname} moved to {new}; the old name will be removed in the next release",
                      DeprecationWarning, stacklevel=2)
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install() -> None:
    """Let the old names resolve (idempotent; ``flowsolve/__init__.py`` calls it on import)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
