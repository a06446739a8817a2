"""Transform invariants for any parameter values (property tests) and the paper's parameter counts."""

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given

import flowsolve
from flowsolve.paths import schedulers

from .test_solver import BASES, TRANSFORMS

finite = st.floats(min_value=-20.0, max_value=20.0, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize("transform", TRANSFORMS, ids=repr)
@pytest.mark.parametrize("base", [flowsolve.Euler(), flowsolve.Midpoint(), flowsolve.RK4()], ids=repr)
@given(data=st.data(), n_steps=st.integers(1, 12))
def test_boundary_conditions_and_monotonicity_hold_for_any_parameters(transform, base, data, n_steps):
    solver = flowsolve.compose(transform, base).at(nfe=n_steps * base.stages)
    with torch.no_grad():
        for p in solver.params.values():
            p.copy_(torch.tensor(data.draw(st.lists(finite, min_size=p.numel(), max_size=p.numel())), dtype=p.dtype))
    _, t, dt, s, ds = solver.nodes()
    assert t[0].item() == 0.0 and t[-1].item() == 1.0
    assert bool((t.diff() > 0).all())
    assert bool((dt > 0).all())
    assert s[0].item() == 1.0 and bool((s > 0).all())
    assert bool(torch.isfinite(ds).all())


@pytest.mark.parametrize("n", [1, 2, 5, 10])
def test_paper_parameter_counts(n):
    def count(transform, base):
        return flowsolve.compose(transform, base).at(nfe=n * base.stages).num_params

    assert count(flowsolve.ScaleTime(), flowsolve.Midpoint()) == 8 * n - 1
    assert count(flowsolve.ScaleTime(), flowsolve.Euler()) == 4 * n - 1
    assert count(flowsolve.TimeOnly(), flowsolve.Midpoint()) == 4 * n - 1
    assert count(flowsolve.ScaleOnly(), flowsolve.Midpoint()) == 4 * n


@pytest.mark.parametrize("base", BASES, ids=repr)
def test_grid_holds_every_stage_node(base):
    grid = flowsolve.NodeGrid.build(base.tableau, 3)
    _, _, c = base.tableau.as_floats()
    for i in range(3):
        for k, ck in enumerate(c):
            assert abs(grid.r[grid.stage_index[i, k]].item() - (i + ck) / 3) < 1e-15
    assert grid.r[grid.start_index].tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1], abs=1e-15)


def test_identity_initialisation():
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.RK3()).at(nfe=9)
    r, t, dt, s, ds = solver.nodes()
    torch.testing.assert_close(t, r, rtol=0, atol=1e-15)
    assert bool((dt == 1).all()) and bool((s == 1).all()) and bool((ds == 0).all())


@pytest.mark.parametrize("base", BASES + [flowsolve.AdamsBashforth(2)], ids=repr)
def test_identity_raw_time_increments_are_ones_on_evenly_spaced_grids(base):
    # The built-in tableaux space their nodes evenly: raw identity parameters stay exactly 1,
    # as in solver files saved before the increments followed the node spacing.
    params = flowsolve.ScaleTime().init_parameters(base.node_grid(4))
    assert bool((params["time_increments"] == 1).all()) and bool((params["time_derivative"] == 1).all())


def test_set_node_values_rejects_what_the_transform_cannot_express():
    solver = flowsolve.compose(flowsolve.TimeOnly(), flowsolve.Midpoint()).at(nfe=4)
    values = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=4).nodes()
    scaled = flowsolve.NodeValues(values.t, values.dt, values.s * 1.5, values.ds)
    scaled.s[0] = 1.0
    with pytest.raises(ValueError, match="fixes s = 1"):
        solver.set_node_values(scaled)


@pytest.mark.parametrize("scheduler", [schedulers.VP(), schedulers.Cosine(), schedulers.FMOT()], ids=lambda s: s.name)
def test_ddim_scaling_makes_scale_time_euler_exactly_ddim(scheduler):
    from flowsolve.baselines import DDIM, predictions

    flow = flowsolve.GaussianMixtureFlow.random(3, 2, seed=4, scheduler=scheduler)
    x0 = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    uniform = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Euler()).at(nfe=6)
    uniform.initialise("uniform+ddim", flow)
    torch.testing.assert_close(uniform.sample(flow, x0), DDIM().sample(flow, x0, 6)[0], rtol=1e-10, atol=1e-10)
    # On the log-SNR grid: DDIM steps between that grid's times, written out.
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Euler()).at(nfe=6)
    solver.initialise("log-snr+ddim", flow)
    times, x = solver.nodes().t, x0
    for start, end in zip(times[:-1], times[1:]):
        data, noise = predictions(flow, scheduler, start, x)
        x = scheduler.alpha(end) * data + scheduler.sigma(end) * noise
    torch.testing.assert_close(solver.sample(flow, x0), x, rtol=1e-10, atol=1e-10)
    assert float(solver.nodes().s[0]) == 1.0


def test_ddim_scaling_needs_a_transform_that_learns_scale():
    flow = flowsolve.GaussianMixtureFlow.random(3, 2, seed=4, scheduler=schedulers.VP())
    with pytest.raises(ValueError, match="sets the scale; TimeOnly"):
        flowsolve.compose(flowsolve.TimeOnly(), flowsolve.Midpoint()).at(nfe=4).initialise("log-snr+ddim", flow)
    with pytest.raises(ValueError, match="only scaling is '\\+ddim'"):
        flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=4).initialise("log-snr+dpm", flow)


def test_ddim_scaling_on_adams_bashforth_1_is_ddim_and_needs_time():
    from flowsolve.baselines import DDIM

    flow = flowsolve.GaussianMixtureFlow.random(3, 2, seed=4, scheduler=schedulers.VP())
    x0 = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ab1 = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.AdamsBashforth(1)).at(nfe=5)
    ab1.initialise("uniform+ddim", flow)
    torch.testing.assert_close(ab1.sample(flow, x0), DDIM().sample(flow, x0, 5)[0], rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="sets the time; ScaleOnly"):
        flowsolve.compose(flowsolve.ScaleOnly(), flowsolve.Euler()).at(nfe=4).initialise("uniform+ddim", flow)
