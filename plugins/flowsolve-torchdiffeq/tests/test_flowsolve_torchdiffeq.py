"""The plugin against torchdiffeq itself: same tableaux, same steps on the same grid."""

from fractions import Fraction as F

import pytest
import torch
import torchdiffeq

import flowsolve
from flowsolve.plugins import registry

flowsolve_torchdiffeq = pytest.importorskip(
    "flowsolve_torchdiffeq", reason="install the plugin first: pip install -e plugins/flowsolve-torchdiffeq"
)
METHODS, PREFIX = flowsolve_torchdiffeq.METHODS, flowsolve_torchdiffeq.PREFIX
TorchdiffeqMethod, read_tableau = flowsolve_torchdiffeq.TorchdiffeqMethod, flowsolve_torchdiffeq.read_tableau

torch.set_num_threads(1)


def field(t, x):
    return torch.sin(3 * t) * x - 0.5 * torch.tanh(x) + t**2


def test_the_registry_discovers_every_method_through_the_entry_point():
    registry.reset()
    try:
        names = registry.registry().base_solvers()
        assert {PREFIX + m for m in METHODS} <= set(names)
        assert any(r.name == "torchdiffeq" and r.error is None for r in registry.registry().records)
        assert isinstance(registry.base_solver("torchdiffeq-heun3"), TorchdiffeqMethod)
    finally:
        registry.reset()


def test_the_hook_offers_prefixed_factories():
    solvers = flowsolve_torchdiffeq.flowsolve_base_solvers()
    assert sorted(solvers) == sorted(PREFIX + m for m in METHODS)
    assert solvers["torchdiffeq-rk4"]().name == "torchdiffeq-rk4"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n_steps", [1, 5])
def test_identity_solver_equals_torchdiffeq_on_the_same_grid(method, n_steps):
    base = TorchdiffeqMethod(method)
    x0 = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(n_steps))
    grid = torch.linspace(0, 1, n_steps + 1, dtype=torch.float64)
    expected = torchdiffeq.odeint(field, x0, grid, method=method)[-1]
    solver = flowsolve.compose(flowsolve.ScaleTime(), base).at(nfe=n_steps * base.stages)
    torch.testing.assert_close(solver.sample(field, x0), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(base.sample(field, x0, n_steps * base.stages), expected, rtol=0, atol=1e-12)


def test_heun3_tableau_is_read_exactly():
    tableau = read_tableau("heun3")
    assert tableau.c == (0, F(1, 3), F(2, 3))
    assert tableau.a == ((0, 0, 0), (F(1, 3), 0, 0), (0, F(2, 3), 0))
    assert tableau.b == (F(1, 4), 0, F(3, 4))
    assert tableau.order == tableau.achieved_order() == 3


def test_torchdiffeq_rk4_is_the_three_eighths_rule():
    tableau = read_tableau("rk4")
    assert (tableau.a, tableau.b, tableau.c) == (flowsolve.RK38.tableau.a, flowsolve.RK38.tableau.b,
                                                 flowsolve.RK38.tableau.c)


@pytest.mark.parametrize("method", METHODS)
def test_declared_order_is_torchdiffeqs_and_holds_exactly(method):
    from torchdiffeq._impl.odeint import SOLVERS

    tableau = read_tableau(method)
    assert tableau.order == SOLVERS[method].order == tableau.achieved_order()


@pytest.mark.parametrize("method", ["dopri5", "explicit_adams", "nonesuch"])
def test_other_methods_are_refused_with_the_valid_ones(method):
    # explicit_adams: its first step is Euler's, so a probe step alone would mistake it for a tableau.
    with pytest.raises(ValueError, match="must be one of.*heun3"):
        TorchdiffeqMethod(method)
