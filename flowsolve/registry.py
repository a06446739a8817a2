"""The plugin registry: pluggy, fed by the ``flowsolve`` entry-point group.

Built-in solvers, transforms, losses and adapters are registered through the same entry
point a third-party package uses. A plugin that fails to load is reported by name and the
others keep working; ``FLOWSOLVE_DISABLE_PLUGINS=name1,name2`` skips named plugins.
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings
from typing import Callable

import attrs
import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "flowsolve"
DISABLE_VARIABLE = "FLOWSOLVE_DISABLE_PLUGINS"


class UnknownNameError(ValueError):
    """A name that no registered plugin provides."""


@attrs.frozen
class PluginRecord:
    """One discovered plugin: its entry-point name, where it came from, and its load error if any."""

    name: str
    source: str
    error: str | None = None
    disabled: bool = False


class Registry:
    """Discovered plugins and what they provide."""

    def __init__(self, entry_points=None):
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.records: list[PluginRecord] = []
        disabled = {n.strip() for n in os.environ.get(DISABLE_VARIABLE, "").split(",") if n.strip()}
        points = entry_points if entry_points is not None else importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        for point in sorted(points, key=lambda p: p.name):
            source = f"{point.value} ({_distribution(point)})"
            if point.name in disabled:
                self.records.append(PluginRecord(point.name, source, disabled=True))
                continue
            try:
                self.manager.register(point.load(), name=point.name)
            except Exception as error:  # a broken plugin must not break the others
                message = f"{type(error).__name__}: {error}"
                warnings.warn(f"flowsolve plugin {point.name!r} ({point.value}) failed to load: {message}", stacklevel=2)
                self.records.append(PluginRecord(point.name, source, error=message))
            else:
                self.records.append(PluginRecord(point.name, source))

    def _collect(self, hook_name: str, what: str) -> dict:
        merged: dict = {}
        hook = getattr(self.manager.hook, hook_name)
        for implementation in hook.get_hookimpls():
            provided = implementation.function() or {}
            for name, value in provided.items():
                if name in merged:
                    warnings.warn(f"{what} {name!r} from plugin {implementation.plugin_name!r} shadows an earlier one")
                merged[name] = value
        return merged

    def base_solvers(self) -> dict[str, Callable]:
        return self._collect("flowsolve_base_solvers", "base solver")

    def transforms(self) -> dict[str, type]:
        return self._collect("flowsolve_transforms", "transform")

    def losses(self) -> dict[str, type]:
        return self._collect("flowsolve_losses", "loss")

    def adapters(self) -> dict[str, Callable]:
        return self._collect("flowsolve_model_adapters", "model adapter")

    def solver_families(self) -> dict[str, Callable]:
        return self._collect("flowsolve_solver_families", "solver family")

    def models(self) -> dict[str, Callable]:
        return self._collect("flowsolve_models", "model")

    def detect_adapter(self, model):
        return self.manager.hook.flowsolve_detect_adapter(model=model)


def _distribution(point) -> str:
    dist = getattr(point, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"


_REGISTRY: Registry | None = None


def registry() -> Registry:
    """The process-wide registry (discovered on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry()
    return _REGISTRY


def reset() -> None:
    """Forget discovered plugins (re-discovered on next use), e.g. after installing one."""
    global _REGISTRY
    _REGISTRY = None


def lookup(kind: str, name: str):
    """The ``kind`` ("base solver", "transform", "loss", "model adapter", "model", "solver family")
    registered as ``name``."""
    table = {"base solver": registry().base_solvers, "transform": registry().transforms,
             "loss": registry().losses, "model adapter": registry().adapters, "model": registry().models,
             "solver family": registry().solver_families}[kind]()
    if name not in table:
        failed = [r.name for r in registry().records if r.error]
        hint = f"; plugins that failed to load: {failed}" if failed else ""
        raise UnknownNameError(f"unknown {kind} {name!r}; registered: {sorted(table)}{hint}")
    return table[name]


def transform_classes() -> dict[str, type]:
    """Transforms known by name (what solver files refer to)."""
    return registry().transforms()


def model(name: str):
    """The velocity field of the model registered as ``name`` (e.g. ``"gmm-fm-ot"``)."""
    return lookup("model", name)()


def base_solver(name: str):
    """A new instance of the base solver registered as ``name``."""
    return lookup("base solver", name)()
