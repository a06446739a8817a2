"""Explicit Butcher tableaux, validated exactly (rational arithmetic)."""

from __future__ import annotations

import functools
from fractions import Fraction
from typing import Sequence

import attrs

from flowsolve.core.errors import FlowsolveTypeError, FlowsolveValueError

# Residual allowed in an order condition when an entry was given as a float
# (1/3 as 0.333...). Rational entries meet the conditions with residual 0.
_TOLERANCE = Fraction(1, 10**12)


def _to_fraction(value) -> Fraction:
    if isinstance(value, bool):
        raise FlowsolveTypeError(f"tableau entries must be numbers, got {value!r}")
    if isinstance(value, (int, Fraction, str)):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(value)
    raise FlowsolveTypeError(f"tableau entries must be int, float, Fraction or 'p/q' strings, got {type(value).__name__} {value!r}")


def _vector(values: Sequence) -> tuple[Fraction, ...]:
    return tuple(_to_fraction(v) for v in values)


def _matrix(rows: Sequence[Sequence]) -> tuple[tuple[Fraction, ...], ...]:
    return tuple(_vector(row) for row in rows)


@functools.lru_cache(maxsize=None)
def rooted_trees(order: int) -> tuple[tuple, ...]:
    """All rooted trees with ``order`` nodes; a tree is the sorted tuple of its subtrees."""
    if order == 1:
        return ((),)
    trees = set()
    # A tree of `order` nodes is a root plus a multiset of subtrees totalling order - 1 nodes.
    for children in _forests(order - 1, order - 1):
        trees.add(tuple(sorted(children)))
    return tuple(sorted(trees))


def _forests(nodes: int, max_part: int):
    if nodes == 0:
        yield ()
        return
    for first in range(min(nodes, max_part), 0, -1):
        for tree in rooted_trees(first):
            for rest in _forests(nodes - first, first):
                yield (tree,) + rest


def _tree_size(tree: tuple) -> int:
    return 1 + sum(_tree_size(child) for child in tree)


def _tree_density(tree: tuple) -> int:
    """gamma(t): the condition for tree t is  b . Phi(t) = 1 / gamma(t)."""
    density = _tree_size(tree)
    for child in tree:
        density *= _tree_density(child)
    return density


@attrs.frozen(eq=True, repr=False)
class ButcherTableau:
    """An explicit Runge--Kutta method ``(A, b, c)`` with a declared order.

    Validated on construction: ``A`` strictly lower triangular (explicit), rows of ``A`` sum to
    ``c``, and every order condition up to ``order`` holds (exactly for rational entries).

    Args:
        name: short identifier, e.g. ``"midpoint"``.
        a: ``s x s`` stage matrix (lists of numbers; ``Fraction`` or ``"p/q"`` strings keep it exact).
        b: ``s`` weights.
        c: ``s`` nodes, in ``[0, 1]``.
        order: the order the method claims; refused if the conditions do not hold.

    Example:
        >>> from fractions import Fraction as F
        >>> ButcherTableau("midpoint", a=[[0, 0], [F(1, 2), 0]], b=[0, 1], c=[0, F(1, 2)], order=2).stages
        2
    """

    name: str = attrs.field(validator=attrs.validators.instance_of(str))
    a: tuple[tuple[Fraction, ...], ...] = attrs.field(converter=_matrix)
    b: tuple[Fraction, ...] = attrs.field(converter=_vector)
    c: tuple[Fraction, ...] = attrs.field(converter=_vector)
    order: int = attrs.field(validator=attrs.validators.instance_of(int))

    def __attrs_post_init__(self):
        stages = len(self.b)
        if stages == 0:
            raise FlowsolveValueError(f"tableau {self.name!r}: b is empty; a method needs at least one stage")
        if len(self.c) != stages or len(self.a) != stages or any(len(row) != stages for row in self.a):
            raise FlowsolveValueError(
                f"tableau {self.name!r}: shapes disagree: b has {stages} entries, c has {len(self.c)}, "
                f"A is {len(self.a)}x{[len(r) for r in self.a]}; A must be {stages}x{stages}"
            )
        for i, row in enumerate(self.a):
            if any(row[j] != 0 for j in range(i, stages)):
                raise FlowsolveValueError(
                    f"tableau {self.name!r}: A[{i}] = {[str(v) for v in row]} has a non-zero entry on or above "
                    "the diagonal; only explicit methods (strictly lower-triangular A) are supported"
                )
            if abs(sum(row) - self.c[i]) > _TOLERANCE:
                raise FlowsolveValueError(
                    f"tableau {self.name!r}: row {i} of A sums to {sum(row)} but c[{i}] = {self.c[i]}; "
                    "each row of A must sum to its node c"
                )
        for i, ci in enumerate(self.c):
            if not 0 <= ci <= 1:
                raise FlowsolveValueError(f"tableau {self.name!r}: c[{i}] = {ci} lies outside [0, 1]")
        if self.order < 1:
            raise FlowsolveValueError(f"tableau {self.name!r}: order must be >= 1, got {self.order}")
        for p in range(1, self.order + 1):
            for tree in rooted_trees(p):
                got, wanted = self._condition(tree)
                if abs(got - wanted) > _TOLERANCE:
                    raise FlowsolveValueError(
                        f"tableau {self.name!r} declares order {self.order} but fails an order-{p} condition "
                        f"(tree {tree!r}): b.Phi = {got} (~{float(got):.6g}), needs {wanted}; "
                        f"its actual order is {self.achieved_order()}"
                    )

    @classmethod
    def unchecked(cls, name, a, b, c, order) -> "ButcherTableau":
        """Build a tableau without validation.

        Only for conformance fixtures: the suite must catch on its own the wrong solvers that
        construction would refuse (a midpoint with a wrong ``c``, an RK4 with a wrong weight).
        """
        tableau = object.__new__(cls)
        for field, value in (("name", name), ("a", _matrix(a)), ("b", _vector(b)), ("c", _vector(c)), ("order", order)):
            object.__setattr__(tableau, field, value)
        return tableau

    @property
    def stages(self) -> int:
        return len(self.b)

    def _elementary_weights(self, tree: tuple) -> tuple[Fraction, ...]:
        weights = [Fraction(1)] * self.stages
        for child in tree:
            inner = self._elementary_weights(child)
            a_times = [sum(self.a[i][j] * inner[j] for j in range(self.stages)) for i in range(self.stages)]
            weights = [w * v for w, v in zip(weights, a_times)]
        return tuple(weights)

    def _condition(self, tree: tuple) -> tuple[Fraction, Fraction]:
        phi = self._elementary_weights(tree)
        return sum((bi * p for bi, p in zip(self.b, phi)), Fraction(0)), Fraction(1, _tree_density(tree))

    def achieved_order(self, max_order: int = 8) -> int:
        """The largest ``p <= max_order`` for which all conditions up to order ``p`` hold."""
        for p in range(1, max_order + 1):
            for tree in rooted_trees(p):
                got, wanted = self._condition(tree)
                if abs(got - wanted) > _TOLERANCE:
                    return p - 1
        return max_order

    def as_floats(self) -> tuple[list[list[float]], list[float], list[float]]:
        """``(A, b, c)`` as Python floats, for the stepping code."""
        return ([[float(v) for v in row] for row in self.a], [float(v) for v in self.b], [float(v) for v in self.c])

    def to_dict(self) -> dict:
        """JSON-safe, exact (entries as ``"p/q"`` strings)."""
        return {
            "name": self.name,
            "a": [[str(v) for v in row] for row in self.a],
            "b": [str(v) for v in self.b],
            "c": [str(v) for v in self.c],
            "order": self.order,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ButcherTableau":
        return cls(name=data["name"], a=data["a"], b=data["b"], c=data["c"], order=data["order"])

    def __repr__(self) -> str:
        return f"ButcherTableau({self.name!r}, stages={self.stages}, order={self.order})"
