"""The identity initialisation for any explicit tableau, not only those with evenly spaced nodes.

Identity means ``t_r = r``, ``dt = 1``, ``s_r = 1``, ``ds = 0`` at every grid node, so the solver
is the base solver on a uniform grid. Tableaux are drawn with nodes ``c`` that are unevenly
spaced, unordered, repeated or at the step ends (``c = 0``, ``c = 1``).
"""

import math
from fractions import Fraction

import hypothesis.strategies as st
import torch
from hypothesis import given

import flowsolve

TRANSFORMS = [flowsolve.ScaleTime(), flowsolve.TimeOnly(), flowsolve.ScaleOnly()]
RALSTON = flowsolve.ButcherTableau("ralston", a=[[0, 0], ["2/3", 0]], b=["1/4", "3/4"], c=[0, "2/3"], order=2)

# Nodes: exact fractions, decimals (floats with no short binary form), and the special values
# where grid nodes coincide with step points or with each other.
rational_nodes = st.fractions(min_value=0, max_value=1, max_denominator=24)
decimal_nodes = st.integers(0, 10**4).map(lambda k: Fraction(k / 10**4))
special_nodes = st.sampled_from([Fraction(0), Fraction(1), Fraction(1, 2), Fraction(1, 4), Fraction(2, 3)])
nodes = st.one_of(special_nodes, rational_nodes, decimal_nodes)
entries = st.fractions(min_value=-2, max_value=2, max_denominator=6)


@st.composite
def tableaux(draw, node=nodes):
    """A valid explicit tableau (order 1): ``c_0 = 0``, other ``c`` drawn, rows of ``A`` summing to ``c``."""
    stages = draw(st.integers(1, 4), label="stages")
    c = [Fraction(0)] + [draw(node, label=f"c[{k}]") for k in range(1, stages)]
    a = [[Fraction(0)] * stages for _ in range(stages)]
    for k in range(1, stages):
        for j in range(k - 1):
            a[k][j] = draw(entries, label=f"a[{k}][{j}]")
        a[k][k - 1] = c[k] - sum(a[k][: k - 1])
    b = [draw(entries, label=f"b[{k}]") for k in range(stages - 1)]
    b.append(1 - sum(b))
    return flowsolve.ButcherTableau("drawn", a=a, b=b, c=c, order=1)


@st.composite
def unchecked_tableaux(draw):
    """Explicit tableaux whose ``c`` is unrelated to ``A`` (``c_0 != 0`` too): the grid follows ``c`` alone."""
    stages = draw(st.integers(1, 4), label="stages")
    c = [draw(nodes, label=f"c[{k}]") for k in range(stages)]
    a = [[draw(entries) if j < k else 0 for j in range(stages)] for k in range(stages)]
    b = [draw(entries) for _ in range(stages - 1)]
    b.append(1 - sum(b))
    return flowsolve.ButcherTableau.unchecked("unchecked", a=a, b=b, c=c, order=1)


def field(t, x):
    """Nonlinear and time-dependent, so that a wrong stage time shows."""
    return torch.sin(3 * t) * x - 0.5 * torch.tanh(x) + t**2 - x


def is_exactly_representable(tableau) -> bool:
    """Nodes are short fractions (not decimals' long binary fractions): identity holds bit for bit."""
    return all(Fraction(ck).denominator <= 24 for ck in tableau.c)


def assert_identity_nodes(solver, exact: bool):
    r, t, dt, s, ds = solver.nodes()
    if exact:
        assert torch.equal(t, r), (t - r).abs().max()
    else:
        torch.testing.assert_close(t, r, rtol=0, atol=1e-12)
    assert bool((dt == 1).all()) and bool((s == 1).all()) and bool((ds == 0).all())


def assert_is_the_base_solver(solver, base, seed=0):
    x0 = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    expected = base.sample(field, x0, solver.nfe)
    torch.testing.assert_close(solver.sample(field, x0), expected, rtol=0, atol=1e-12)


@given(tableau=tableaux(), transform=st.sampled_from(TRANSFORMS), n_steps=st.integers(1, 7))
def test_identity_nodes_are_r_and_one_for_any_tableau(tableau, transform, n_steps):
    solver = flowsolve.compose(transform, flowsolve.BaseSolver(tableau)).at(nfe=n_steps * tableau.stages)
    assert_identity_nodes(solver, exact=is_exactly_representable(tableau))


@given(tableau=tableaux(), transform=st.sampled_from(TRANSFORMS), n_steps=st.integers(1, 7))
def test_identity_solver_is_the_base_solver_for_any_tableau(tableau, transform, n_steps):
    base = flowsolve.BaseSolver(tableau)
    assert_is_the_base_solver(flowsolve.compose(transform, base).at(nfe=n_steps * tableau.stages), base)


@given(tableau=unchecked_tableaux(), transform=st.sampled_from(TRANSFORMS), n_steps=st.integers(1, 5))
def test_identity_follows_c_even_when_rows_of_a_do_not_sum_to_it(tableau, transform, n_steps):
    base = flowsolve.BaseSolver(tableau)
    solver = flowsolve.compose(transform, base).at(nfe=n_steps * tableau.stages)
    assert_identity_nodes(solver, exact=is_exactly_representable(tableau))
    assert_is_the_base_solver(solver, base)


@given(tableau=tableaux(), transform=st.sampled_from(TRANSFORMS),
       n_from=st.integers(1, 6), n_to=st.integers(1, 6))
def test_starting_from_an_identity_solver_at_another_nfe_keeps_the_identity(tableau, transform, n_from, n_to):
    base = flowsolve.BaseSolver(tableau)
    family = flowsolve.compose(transform, base)
    solver = family.at(nfe=n_to * tableau.stages)
    solver.initialise_from(family.at(nfe=n_from * tableau.stages))
    assert_identity_nodes(solver, exact=False)
    assert_is_the_base_solver(solver, base)


# -- Ralston (c = [0, 2/3]): the regression --------------------------------------------------------
def test_identity_ralston_is_ralston_at_nfe_8():
    base = flowsolve.BaseSolver(RALSTON)
    x0 = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = base.sample(field, x0, 8)
    for transform in TRANSFORMS:
        solver = flowsolve.compose(transform, base).at(nfe=8)
        assert solver.nodes().r.tolist()[:4] == [0.0, 1 / 6, 1 / 4, 5 / 12]  # 0, 2/3 h, h, ... (h = 1/4)
        assert_identity_nodes(solver, exact=True)
        difference = (solver.sample(field, x0) - expected).abs().max().item()
        assert difference < 1e-12, (transform, difference)


def test_identity_ralston_keeps_second_order():
    # dx/dt = -x + t, x(0) = 1: x(1) = 2 / e. Time-dependent, so wrong stage times lose an order.
    x0 = torch.ones(1, 1, dtype=torch.float64)
    for transform in TRANSFORMS:
        family = flowsolve.compose(transform, flowsolve.BaseSolver(RALSTON))
        errors = [abs(family.at(nfe=2 * n).sample(lambda t, x: -x + t, x0).item() - 2 / math.e) for n in (16, 32, 64)]
        orders = [math.log2(coarse / fine) for coarse, fine in zip(errors, errors[1:])]
        assert all(abs(order - 2) < 0.1 for order in orders), (transform, orders)


def test_identity_ralston_raw_increments_follow_the_node_spacing():
    # Nodes of a Ralston step sit at 0, 2/3 h, h: gaps 2:1, and a sensible raw scale (mean in [1, 2)).
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.BaseSolver(RALSTON)).at(nfe=8)
    increments = solver.params["time_increments"].detach()
    assert increments.tolist() == [2.0, 1.0] * 4


# -- the conformance suite names the culprit --------------------------------------------------------
class EvenIncrements(flowsolve.ScaleTime):
    """Equal time increments per grid interval: the identity only on evenly spaced grids."""

    name = "even-increments"

    def init_parameters(self, grid):
        params = super().init_parameters(grid)
        params["time_increments"] = torch.ones_like(params["time_increments"])
        return params


def test_conformance_identity_passes_for_ralston_and_blames_a_broken_family_identity():
    from flowsolve.conformance.check import Status
    from flowsolve.conformance.parametric_checks import identity_check
    from flowsolve.conformance.profiles import QUICK

    ralston = flowsolve.BaseSolver(RALSTON)
    for transform in TRANSFORMS:
        outcome = identity_check(transform, ralston, QUICK, "cpu", examples=2).run()
        assert outcome.status is Status.PASS, outcome.figure
    outcome = identity_check(EvenIncrements(), ralston, QUICK, "cpu", examples=2).run()
    assert outcome.status is Status.FAIL and "differs from ralston by" in outcome.figure
    assert "identity initialisation of even-increments is broken, not ralston's tableau" in outcome.figure
    assert "c = [0, 2/3]" in outcome.figure and "|t_r - r| up to" in outcome.figure
