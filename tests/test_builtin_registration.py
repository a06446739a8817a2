"""A new built-in base method or baseline is one module plus one registration line: every module
of flowsolve/methods/ and flowsolve/baselines/ that defines a table is listed, and the builtin
plugin registers exactly what the listed tables hold."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import flowsolve.baselines
import flowsolve.methods
from flowsolve.plugins.registry import registry


def _modules_with(package, table: str) -> set[str]:
    names = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if hasattr(module, table):
            names.add(module.__name__)
    return names


@pytest.mark.parametrize("package, table, listed, kind", [
    (flowsolve.methods, "BASE_SOLVERS", flowsolve.methods.METHOD_MODULES, "base solver"),
    (flowsolve.baselines, "BASELINES", flowsolve.baselines.BASELINE_MODULES, "baseline"),
])
def test_every_table_is_listed_once_and_registered(package, table, listed, kind):
    assert _modules_with(package, table) == {module.__name__ for module in listed}
    names = [name for module in listed for name in getattr(module, table)]
    assert len(names) == len(set(names)), f"a {kind} name is defined twice: {sorted(names)}"
    assert set(names) <= set(registry().table(kind))
