"""The parametric solver against independent computations: base solvers, torchdiffeq, eq. 17/19-20."""

import pytest
import torch
import torchdiffeq

import flowsolve
from flowsolve.conformance.problems import CosineGrowth, LinearSystem, Logistic
from flowsolve.core.field import batched_time

from .solver_parameters import randomize_parameters

BASES = [flowsolve.Euler(), flowsolve.Midpoint(), flowsolve.Heun(), flowsolve.RK3(), flowsolve.RK4(), flowsolve.RK38()]
TRANSFORMS = [flowsolve.ScaleTime(), flowsolve.TimeOnly(), flowsolve.ScaleOnly()]


def nonlinear_field(t, x):
    return torch.sin(3 * t) * x - 0.5 * torch.tanh(x) + t**2


@pytest.mark.parametrize("transform", TRANSFORMS, ids=repr)
@pytest.mark.parametrize("base", BASES, ids=repr)
def test_identity_solver_is_the_base_solver_on_a_uniform_grid(transform, base):
    x0 = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    nfe = 3 * base.stages
    solver = flowsolve.compose(transform, base).at(nfe=nfe)
    torch.testing.assert_close(solver.sample(nonlinear_field, x0), base.sample(nonlinear_field, x0, nfe), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "base, method", [(flowsolve.Euler(), "euler"), (flowsolve.Midpoint(), "midpoint"), (flowsolve.RK38(), "rk4")]
)
def test_identity_solver_equals_torchdiffeq_fixed_grid(base, method):
    n_steps = 7
    x0 = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grid = torch.linspace(0, 1, n_steps + 1, dtype=torch.float64)
    expected = torchdiffeq.odeint(nonlinear_field, x0, grid, method=method)[-1]
    solver = flowsolve.compose(flowsolve.ScaleTime(), base).at(nfe=n_steps * base.stages)
    torch.testing.assert_close(solver.sample(nonlinear_field, x0), expected, rtol=0, atol=1e-12)


def test_classic_rk4_equals_torchdiffeq_classic_step():
    from torchdiffeq._impl.rk_common import rk4_step_func

    n_steps, x = 6, torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.RK4()).at(nfe=4 * n_steps)
    expected = x
    for i in range(n_steps):
        t0, dt = torch.tensor(i / n_steps, dtype=torch.float64), torch.tensor(1 / n_steps, dtype=torch.float64)
        expected = expected + rk4_step_func(lambda t, y, perturb=None: nonlinear_field(t, y), t0, dt, t0 + dt, expected)
    torch.testing.assert_close(solver.sample(nonlinear_field, x), expected, rtol=0, atol=1e-12)


def _scalars(values, j):
    return tuple(v[j] for v in values)


@pytest.mark.parametrize("seed", range(3))
def test_euler_step_equals_eq17(seed):
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Euler()).at(nfe=6)
    randomize_parameters(solver, seed)
    _, t, dt, s, ds = solver.nodes()
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    h = 1 / 6
    for i in range(6):
        expected = (s[i] + h * ds[i]) / s[i + 1] * x + h * dt[i] * s[i] / s[i + 1] * nonlinear_field(t[i], x)
        torch.testing.assert_close(solver.step(i, x, nonlinear_field), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("seed", range(3))
def test_midpoint_step_equals_eq19_20(seed):
    n = 4
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=2 * n)
    randomize_parameters(solver, seed)
    _, t, dt, s, ds = solver.nodes()
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    h = 1 / n
    for i in range(n):
        j, half, nxt = 2 * i, 2 * i + 1, 2 * i + 2  # grid nodes r_i, r_{i+1/2}, r_{i+1}
        z = (s[j] + h / 2 * ds[j]) * x + h / 2 * s[j] * dt[j] * nonlinear_field(t[j], x)
        expected = s[j] / s[nxt] * x + h / s[nxt] * (
            ds[half] / s[half] * z + dt[half] * s[half] * nonlinear_field(t[half], z / s[half])
        )
        torch.testing.assert_close(solver.step(i, x, nonlinear_field), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("transform", TRANSFORMS, ids=repr)
@pytest.mark.parametrize("base", BASES, ids=repr)
def test_algorithm4_equals_algorithm2(transform, base):
    solver = flowsolve.compose(transform, base).at(nfe=4 * base.stages)
    randomize_parameters(solver, seed=7)
    x0 = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x = x0
    for i in range(solver.n_steps):
        x = solver.step(i, x, nonlinear_field)
    trajectory = solver.sample(nonlinear_field, x0, return_intermediates=True)
    torch.testing.assert_close(trajectory.x[-1], x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(solver.sample(nonlinear_field, x0), x, rtol=1e-12, atol=1e-12)
    # Intermediate states are Algorithm 2's states too.
    x = x0
    for i in range(solver.n_steps):
        torch.testing.assert_close(trajectory.x[i], x, rtol=1e-12, atol=1e-12)
        x = solver.step(i, x, nonlinear_field)
    torch.testing.assert_close(trajectory.t, solver.nodes().t[solver.grid.start_index])


@pytest.mark.parametrize("batched", [True, False], ids=["batched-time-field", "scalar-time-field"])
def test_per_sample_step_indices_equal_single_steps(batched):
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=8)
    randomize_parameters(solver, seed=11)
    x = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    steps = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])

    def per_sample(t, y):
        return torch.sin(3 * t).reshape(-1, 1) * y - 0.5 * torch.tanh(y) + t.reshape(-1, 1) ** 2

    field = batched_time(per_sample) if batched else nonlinear_field
    together = solver.step(steps, x, field)
    one_by_one = torch.cat([solver.step(int(i), x[j : j + 1], nonlinear_field) for j, i in enumerate(steps)])
    torch.testing.assert_close(together, one_by_one, rtol=1e-13, atol=1e-13)


def smooth_time(r):
    return torch.expm1(1.5 * r) / torch.expm1(torch.tensor(1.5, dtype=r.dtype))


def smooth_scale(r):
    return 1 + 0.4 * torch.sin(2 * r) * r


def test_set_transform_reproduces_the_continuous_transform_at_the_nodes():
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=8)
    solver.set_transform(smooth_time, smooth_scale)
    r, t, dt, s, ds = solver.nodes()
    torch.testing.assert_close(t, smooth_time(r))
    torch.testing.assert_close(dt[:-1], 1.5 * torch.exp(1.5 * r[:-1]) / torch.expm1(torch.tensor(1.5, dtype=r.dtype)))
    torch.testing.assert_close(s, smooth_scale(r))
    torch.testing.assert_close(ds[:-1], 0.4 * (2 * torch.cos(2 * r[:-1]) * r[:-1] + torch.sin(2 * r[:-1])))


@pytest.mark.parametrize(
    "problem", [LinearSystem(dim=3, gain=1.0, seed=0), Logistic(rate=1.0, seed=5), CosineGrowth((1.0, 1.25, 1.5), seed=5)],
    ids=lambda p: p.name,
)
@pytest.mark.parametrize("base", BASES, ids=repr)
def test_discretised_smooth_transform_keeps_the_base_order(problem, base):
    """Theorem 2.2: under any smooth transform the solver converges at the base solver's order."""
    instance = problem.build("cpu")  # closed-form x(1), shared with the conformance suite
    steps = torch.tensor([8, 16, 32, 64], dtype=torch.float64)
    errors = []
    for n in steps.int().tolist():
        solver = flowsolve.compose(flowsolve.ScaleTime(), base).at(nfe=n * base.stages)
        solver.set_transform(smooth_time, smooth_scale)
        errors.append(float((solver.sample(instance.field, instance.x0) - instance.x1).abs().max()))
    slope = -torch.linalg.lstsq(torch.stack([steps.log(), torch.ones(4, dtype=torch.float64)], 1),
                                torch.tensor(errors, dtype=torch.float64).log()[:, None]).solution[0, 0]
    # At least the base order (some problem/method pairs converge faster than their order).
    assert float(slope) > base.order - 0.3, (errors, float(slope))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_follow_the_input(dtype, device):
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=6)
    randomize_parameters(solver, seed=2)
    x0 = torch.randn(3, 4, dtype=dtype, device=device)
    out = solver.sample(lambda t, x: -x * t, x0)
    assert out.dtype == dtype and out.device == x0.device
    reference = solver.sample(lambda t, x: -x * t, x0.double().cpu())
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out.double().cpu(), reference, rtol=tolerance, atol=tolerance)


def test_sample_costs_exactly_nfe_evaluations():
    calls = []

    def counting(t, x):
        calls.append(float(t))
        return -x

    for base in BASES:
        calls.clear()
        solver = flowsolve.compose(flowsolve.ScaleTime(), base).at(nfe=2 * base.stages)
        solver.sample(counting, torch.randn(2, 2))
        assert len(calls) == solver.nfe


def test_gradients_reach_every_parameter():
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=6)
    randomize_parameters(solver, seed=3)
    x0 = torch.randn(4, 3, dtype=torch.float64)
    solver.sample(nonlinear_field, x0, differentiable=True).square().mean().backward()
    for name, p in solver.params.items():
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
