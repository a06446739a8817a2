"""What the suite checks: a base solver, a transform, or a family, resolved from a name or import path."""

from __future__ import annotations

import importlib

import attrs

from flowsolve.core.errors import FlowsolveTypeError
from flowsolve.core.tableau import ButcherTableau
from flowsolve.methods.base import BaseMethod
from flowsolve.methods.runge_kutta import BaseSolver
from flowsolve.plugins import registry as _registry
from flowsolve.solvers.family import ParametricFamily
from flowsolve.solvers.family_base import Family
from flowsolve.solvers.transforms import Transform

ACCEPTED = ("a flowsolve.BaseSolver instance or class, a flowsolve.ButcherTableau, a flowsolve.Transform "
            "instance or class, a flowsolve.ParametricFamily (from flowsolve.compose), or a registered solver family "
            "such as flowsolve.NonStationary()")


@attrs.frozen
class Subject:
    """The solver under test.

    Attributes:
        spec: what the user named (``"midpoint"`` or ``"my_pkg.solvers:MyRK"``).
        origin: where it came from, for the report.
        base: the base solver under test, if any.
        transform: the transform under test, if any (a family has both).
    """

    spec: str
    origin: str
    base: BaseMethod | None = None
    transform: Transform | None = None
    family: Family | None = None  # a registered family other than transform x base (e.g. non-stationary)

    @property
    def kind(self) -> str:
        if self.family is not None:
            return "solver family"
        if self.base is not None and self.transform is not None:
            return "solver family"
        return "base solver" if self.base is not None else "transform"

    def describe(self) -> str:
        parts = [self.transform and f"transform {self.transform!r}", self.base and f"base {self.base!r}",
                 self.family is not None and f"family {self.family!r}"]
        return f"{self.kind} {self.spec!r} ({self.origin}): " + ", ".join(p for p in parts if p)


def resolve(spec: str) -> Subject:
    """Resolve a registered name or ``module:object`` to a :class:`Subject`.

    Raises:
        flowsolve.plugins.registry.UnknownNameError: ``spec`` is not a registered base solver or
            transform name (the message lists the registered ones).
        TypeError: the imported object is none of the accepted kinds.
        ImportError / AttributeError: ``module:object`` does not import.
    """
    if not isinstance(spec, str) or not spec:
        raise FlowsolveTypeError(f"a solver must be named by a non-empty string (a registered name or module:object), "
                        f"got {spec!r}")
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        obj = importlib.import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
        return from_object(obj, spec, origin=f"imported from {module_name}")
    bases, transforms = _registry.registry().base_solvers(), _registry.registry().transforms()
    families = _registry.registry().solver_families()
    if spec in families:
        return from_object(families[spec](), spec, origin="registered solver family")
    if spec in bases and spec in transforms:
        raise _registry.UnknownNameError(
            f"{spec!r} names both a base solver and a transform; name the one you mean as module:object"
        )
    if spec in bases:
        return from_object(bases[spec](), spec, origin="registered base solver")
    if spec in transforms:
        return from_object(transforms[spec], spec, origin="registered transform")
    for kind in ("solver family", "base solver", "transform"):
        clash = _registry.registry().refused(kind, spec)
        if clash is not None:
            raise _registry.NameClashError(clash)
    failed = [record.name for record in _registry.registry().records if record.error]
    hint = f"; plugins that failed to load: {failed}" if failed else ""
    raise _registry.UnknownNameError(
        f"unknown solver {spec!r}; registered base solvers: {sorted(bases)}; registered transforms: "
        f"{sorted(transforms)}; registered solver families: {sorted(families)}; or name an object as module:object ({ACCEPTED}){hint}"
    )


def from_object(obj, spec: str, origin: str = "given object") -> Subject:
    """The :class:`Subject` for an object (see :data:`ACCEPTED` for what it may be)."""
    if isinstance(obj, type) and issubclass(obj, (BaseMethod, Transform)):
        obj = obj()
    if isinstance(obj, ButcherTableau):
        obj = BaseSolver(obj)
    if isinstance(obj, BaseMethod):
        return Subject(spec, origin, base=obj)
    if isinstance(obj, Transform):
        return Subject(spec, origin, transform=obj)
    if isinstance(obj, ParametricFamily):
        return Subject(spec, origin, base=obj.base, transform=obj.transform)
    if isinstance(obj, Family):  # e.g. flowsolve.NonStationary()
        return Subject(spec, origin, base=obj.base, family=obj)
    raise FlowsolveTypeError(f"{spec!r} is a {type(obj).__name__} ({obj!r}); the conformance suite takes {ACCEPTED}")
