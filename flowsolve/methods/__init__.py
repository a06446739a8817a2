"""Layer 2, base methods: explicit Runge--Kutta solvers (one tableau constant each) and
Adams--Bashforth multistep methods that step a velocity field on a uniform grid. Depends on
:mod:`flowsolve.core` only.

One module per kind of method, each with a ``BASE_SOLVERS`` table ``{name: factory}``; the
builtin plugin registers :func:`builtin_methods` (kind ``"base solver"``).
"""

from __future__ import annotations

from collections.abc import Callable

from flowsolve.methods import adams, runge_kutta
from flowsolve.methods.base import BaseMethod

# flowsolve's own base methods: a new one is a new module with a BASE_SOLVERS table and one entry here.
METHOD_MODULES = (runge_kutta, adams)


def builtin_methods() -> dict[str, Callable[[], BaseMethod]]:
    """flowsolve's own base methods ``{name: factory}``, as the builtin plugin registers them."""
    return {name: factory for module in METHOD_MODULES for name, factory in module.BASE_SOLVERS.items()}
