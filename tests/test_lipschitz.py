"""Per-step Lipschitz constants: lemmas D.2 / D.3 and the observed ratios they must bound."""

import pytest
import torch

import flowsolve
from flowsolve.conformance.problems import LinearSystem

from .solver_parameters import randomize_parameters
from .test_solver import BASES


@pytest.mark.parametrize("L_tau", [0.5, 1.0, 3.0])
def test_euler_constants_equal_lemma_d2(L_tau):
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Euler()).at(nfe=5)
    randomize_parameters(solver, seed=1, spread=0.5)
    _, t, dt, s, ds = solver.nodes()
    h, i = 1 / 5, torch.arange(5)
    expected = s[i] / s[i + 1] * (1 + h * (ds[i].abs() / s[i] + dt[i] * L_tau))
    torch.testing.assert_close(solver.step_lipschitz(L_tau).detach(), expected, rtol=1e-14, atol=0)


@pytest.mark.parametrize("L_tau", [0.5, 1.0, 3.0])
def test_midpoint_constants_equal_lemma_d3(L_tau):
    n = 4
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=2 * n)
    randomize_parameters(solver, seed=2, spread=0.5)
    _, t, dt, s, ds = solver.nodes()
    lu = ds.abs() / s + dt * L_tau
    h, i = 1 / n, torch.arange(n)
    expected = s[2 * i] / s[2 * i + 2] * (1 + h * lu[2 * i + 1] * (1 + h / 2 * lu[2 * i]))
    torch.testing.assert_close(solver.step_lipschitz(L_tau).detach(), expected, rtol=1e-14, atol=0)


@pytest.mark.parametrize("base", BASES, ids=repr)
@pytest.mark.parametrize("seed", range(4))
def test_constants_bound_observed_ratios_on_linear_fields(base, seed):
    problem = LinearSystem(dim=6, gain=2.0, seed=seed)
    field = problem.field("cpu")
    solver = flowsolve.compose(flowsolve.ScaleTime(), base).at(nfe=3 * base.stages)
    randomize_parameters(solver, seed=seed, spread=0.6)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 6, dtype=torch.float64, generator=generator)
    y = x + 1e-2 * torch.randn(64, 6, dtype=torch.float64, generator=generator)
    bounds = solver.step_lipschitz(L_tau=problem.lipschitz).detach()
    for i in range(solver.n_steps):
        gap = (solver.step(i, x, field) - solver.step(i, y, field)).norm(dim=1)
        ratio = (gap / (x - y).norm(dim=1)).max()
        assert ratio <= bounds[i] * (1 + 1e-12)
        assert ratio > 0.2 * bounds[i]  # the bound is not vacuous


def test_lipschitz_is_differentiable_and_rejects_negative_L_tau():
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=4)
    solver.step_lipschitz().prod().backward()
    # L_i depends on dt, s, ds, not on the node times themselves.
    assert {name for name, p in solver.params.items() if p.grad is not None} == {
        "time_derivative", "log_scale", "scale_derivative"}
    with pytest.raises(ValueError, match="L_tau"):
        solver.step_lipschitz(-1.0)
