from fractions import Fraction as F

import pytest

import flowsolve
from flowsolve.core.tableau import rooted_trees
from flowsolve.methods.runge_kutta import BUILTIN_BASE_SOLVERS


def test_rooted_tree_counts_match_oeis_a000081():
    assert [len(rooted_trees(p)) for p in range(1, 7)] == [1, 1, 2, 4, 9, 20]


@pytest.mark.parametrize("name", sorted(BUILTIN_BASE_SOLVERS))
def test_builtin_tableaux_have_exactly_their_declared_order(name):
    tableau = BUILTIN_BASE_SOLVERS[name].tableau
    assert tableau.achieved_order() == tableau.order


@pytest.mark.parametrize(
    "cls, order, stages", [(flowsolve.Euler, 1, 1), (flowsolve.Midpoint, 2, 2), (flowsolve.Heun, 2, 2),
                           (flowsolve.RK3, 3, 3), (flowsolve.RK4, 4, 4), (flowsolve.RK38, 4, 4)]
)
def test_builtin_orders(cls, order, stages):
    assert (cls().order, cls().stages) == (order, stages)


def test_overclaimed_order_is_refused_with_diagnosis():
    with pytest.raises(ValueError, match=r"declares order 3 .*actual order is 2"):
        flowsolve.ButcherTableau("fake", a=[[0, 0], [F(1, 2), 0]], b=[0, 1], c=[0, F(1, 2)], order=3)


def test_rk4_claiming_order_five_is_refused():
    with pytest.raises(ValueError, match="order-5 condition"):
        flowsolve.ButcherTableau("rk4-as-5", a=flowsolve.RK4.tableau.a, b=flowsolve.RK4.tableau.b,
                                 c=flowsolve.RK4.tableau.c, order=5)


def test_rk4_with_one_wrong_weight_is_refused():
    with pytest.raises(ValueError, match="declares order 4"):
        flowsolve.ButcherTableau("rk4-typo", a=flowsolve.RK4.tableau.a, b=[F(1, 6), F(1, 3), F(1, 6), F(1, 3)],
                                 c=flowsolve.RK4.tableau.c, order=4)


def test_implicit_tableau_is_refused():
    with pytest.raises(ValueError, match="only explicit methods"):
        flowsolve.ButcherTableau("implicit-euler", a=[[1]], b=[1], c=[1], order=1)


def test_row_sums_must_equal_c():
    with pytest.raises(ValueError, match=r"row 1 of A sums to 1/2 but c\[1\] = 1"):
        flowsolve.ButcherTableau("bad-c", a=[[0, 0], [F(1, 2), 0]], b=[0, 1], c=[0, 1], order=1)


def test_weights_must_sum_to_one():
    with pytest.raises(ValueError, match="order-1 condition"):
        flowsolve.ButcherTableau("bad-b", a=[[0]], b=[F(1, 2)], c=[0], order=1)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shapes disagree"):
        flowsolve.ButcherTableau("bad-shape", a=[[0, 0], [1, 0]], b=[1], c=[0, 1], order=1)


def test_float_entries_are_accepted_within_round_off():
    third = 1 / 3
    tableau = flowsolve.ButcherTableau(
        "rk3-floats", a=[[0, 0, 0], [0.5, 0, 0], [-1, 2, 0]], b=[1 / 6, 2 * third, 1 / 6], c=[0, 0.5, 1], order=3
    )
    assert tableau.achieved_order() == 3


def test_custom_tableau_round_trips_through_dict():
    tableau = flowsolve.RK38.tableau
    assert flowsolve.ButcherTableau.from_dict(tableau.to_dict()) == tableau
