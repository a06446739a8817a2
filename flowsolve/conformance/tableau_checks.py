"""Exact checks of a Butcher tableau: structure, and the order conditions up to the declared order.

A tableau built with :meth:`flowsolve.ButcherTableau.unchecked` skipped every validation, so
nothing is assumed here: shapes, explicitness, ``c`` = row sums of ``A``, and each rooted-tree
condition ``b . Phi(tree) = 1 / gamma(tree)`` are verified in exact rational arithmetic
(floats are taken at their exact binary value, with a ``1e-12`` allowance as in flowsolve).
"""

from __future__ import annotations

from fractions import Fraction

from flowsolve.conformance.check import Check, CheckFailed, Outcome
from flowsolve.core.tableau import rooted_trees
from flowsolve.methods.runge_kutta import BaseSolver

ALLOWANCE = Fraction(1, 10**12)


def tableau_checks(base: BaseSolver) -> list[Check]:
    return [
        Check("tableau[structure]", "shapes agree, A strictly lower triangular, rows of A sum to c, c in [0, 1]",
              lambda: _structure(base)),
        Check("tableau[order-conditions]", "every order condition holds exactly up to the declared order",
              lambda: _order_conditions(base)),
    ]


def _structure(base: BaseSolver) -> Outcome:
    tableau = base.tableau
    a, b, c = tableau.a, tableau.b, tableau.c
    stages = len(b)
    problems = []
    if stages == 0:
        raise CheckFailed("b is empty: a method needs at least one stage")
    if len(c) != stages or len(a) != stages or any(len(row) != stages for row in a):
        raise CheckFailed(f"shapes disagree: b has {stages} entries, c has {len(c)}, A is {len(a)} rows of "
                          f"{[len(row) for row in a]}; A must be {stages}x{stages}")
    for i, row in enumerate(a):
        upper = [j for j in range(i, stages) if row[j] != 0]
        if upper:
            problems.append(f"A[{i}][{upper[0]}] = {row[upper[0]]} is on or above the diagonal (must be 0: explicit)")
        if abs(sum(row) - c[i]) > ALLOWANCE:
            problems.append(f"row {i} of A sums to {sum(row)} but c[{i}] = {c[i]}; the stage time must be the row sum")
    problems += [f"c[{i}] = {ci} lies outside [0, 1]" for i, ci in enumerate(c) if not 0 <= ci <= 1]
    if isinstance(tableau.order, bool) or not isinstance(tableau.order, int) or tableau.order < 1:
        problems.append(f"declared order {tableau.order!r} must be an int >= 1")
    if problems:
        raise CheckFailed("; ".join(problems))
    return Outcome.passed(f"{stages} stage{'s' * (stages > 1)}, explicit, rows of A sum to c, c in [0, 1]")


def _order_conditions(base: BaseSolver) -> Outcome:
    tableau = base.tableau
    declared = tableau.order
    achieved = tableau.achieved_order(max_order=max(8, declared + 1))
    if achieved < declared:
        tree, got, wanted = _first_failure(tableau, achieved + 1)
        raise CheckFailed(
            f"order conditions hold only through order {achieved}, declared {declared}: the order-{achieved + 1} "
            f"condition for tree {tree!r} gives b.Phi = {got} (~{float(got):.6g}), needs {wanted}"
        )
    if achieved > declared:
        raise CheckFailed(
            f"order conditions hold through order {achieved} but the tableau declares {declared}; "
            f"declare order={achieved}"
        )
    return Outcome.passed(f"conditions hold exactly through order {achieved}, declared {declared}")


def _first_failure(tableau, order: int):
    for tree in rooted_trees(order):
        got, wanted = _condition(tableau, tree)
        if abs(got - wanted) > ALLOWANCE:
            return tree, got, wanted
    raise AssertionError(f"achieved_order() reported a failure at order {order} that no tree shows")


def _condition(tableau, tree) -> tuple[Fraction, Fraction]:
    """``(b . Phi(tree), 1 / gamma(tree))`` for a rooted tree (a tuple of subtrees)."""
    phi = _weights(tableau, tree)
    return sum((bi * p for bi, p in zip(tableau.b, phi)), Fraction(0)), Fraction(1, _density(tree))


def _weights(tableau, tree) -> list[Fraction]:
    stages = len(tableau.b)
    weights = [Fraction(1)] * stages
    for child in tree:
        inner = _weights(tableau, child)
        weights = [w * sum((tableau.a[i][j] * inner[j] for j in range(stages)), Fraction(0))
                   for i, w in enumerate(weights)]
    return weights


def _size(tree) -> int:
    return 1 + sum(_size(child) for child in tree)


def _density(tree) -> int:
    density = _size(tree)
    for child in tree:
        density *= _density(child)
    return density
