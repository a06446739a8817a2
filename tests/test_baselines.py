"""Training-free baselines: exactness where they must be exact, convergence order, honest NFE."""

import math

import pytest
import torch

import flowsolve
from flowsolve.baselines import (
    DDIM,
    DPMSolverPP2M,
    EDMHeun,
    builtin_baselines,
    predictions,
)
from flowsolve.paths import schedulers
from flowsolve.training.ground_truth import solve_reference
from flowsolve.training.metrics import rmse

SCHEDULERS = [schedulers.FMOT(), schedulers.Cosine(), schedulers.VP()]


def counting(u):
    calls = []

    def field(t, x):
        calls.append(1)
        return u(t, x)

    field.scheduler = u.scheduler
    return field, calls


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: s.name)
def test_predictions_recover_the_exact_posterior_means(scheduler):
    flow = flowsolve.GaussianMixtureFlow.random(dim=5, components=3, seed=1, scheduler=scheduler)
    x = torch.randn(6, 5, dtype=torch.float64)
    t = torch.tensor(0.4, dtype=torch.float64)
    data, noise = predictions(flow, scheduler, t, x)
    expected_data, expected_noise = flow.posterior_means(t, x)
    torch.testing.assert_close(data, expected_data)
    torch.testing.assert_close(noise, expected_noise)


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: s.name)
@pytest.mark.parametrize("baseline", [DDIM(), DPMSolverPP2M()], ids=lambda b: b.name)
def test_exponential_integrators_are_exact_for_a_point_mass(scheduler, baseline):
    # For (nearly) a single data point the data prediction is constant: DDIM / DPM-Solver++ are exact.
    dirac = flowsolve.GaussianMixtureFlow(torch.full((1, 4), 0.3), [1e-7], [1.0], scheduler)
    x0 = torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x1, used = baseline.sample(dirac, x0, 3)
    assert used == 3
    # The exact flow of a point mass carries every x0 to the point: x(1) = mu.
    assert rmse(x1, torch.full_like(x0, 0.3)) < 1e-6


@pytest.mark.parametrize("baseline, order", [(DDIM(), 1), (DPMSolverPP2M(), 2), (EDMHeun(), 2)], ids=lambda b: getattr(b, "name", b))
def test_convergence_order(baseline, order):
    flow = flowsolve.GaussianMixtureFlow.random(dim=8, components=3, seed=0, scheduler=schedulers.VP(), spread=0.5)
    x0 = torch.randn(16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    reference = solve_reference(flow, x0, rtol=1e-11, atol=1e-11)
    budgets = [50, 100, 200]
    errors = [rmse(baseline.sample(flow, x0, n)[0], reference) for n in budgets]
    slope = -math.log(errors[-1] / errors[0]) / math.log(budgets[-1] / budgets[0])
    assert abs(slope - order) < 0.35, (errors, slope)


@pytest.mark.parametrize("name", sorted(builtin_baselines()))
@pytest.mark.parametrize("nfe", [7, 8])
def test_every_baseline_counts_its_evaluations_honestly(name, nfe):
    flow = flowsolve.GaussianMixtureFlow.random(dim=4, components=2, seed=0)
    field, calls = counting(flow)
    x1, used = builtin_baselines()[name]().sample(field, torch.randn(3, 4, dtype=torch.float64), nfe)
    assert used == len(calls) <= nfe
    assert x1 is None or torch.isfinite(x1).all()


def test_gaussian_baselines_need_a_scheduler():
    with pytest.raises(TypeError, match="needs a Gaussian-path model"):
        DDIM().sample(lambda t, x: x, torch.randn(2, 2), 4)


def test_grids_stay_inside_the_times_the_model_is_evaluated_at():
    from flowsolve.baselines import (
        GRID_SPACINGS,
        sigma_range,
        solver_grid,
    )

    u = flowsolve.adapt(lambda x, s: torch.zeros_like(x), "eps-vp")  # stops at s = 1e-3
    scheduler = u.scheduler
    for spacing in GRID_SPACINGS:
        times = solver_grid(u, scheduler, 8, spacing)
        assert len(times) == 9 and times[0] == 0.0 and times[-1] == 1.0
        assert all(a < b for a, b in zip(times[:-1], times[1:]))
        assert max(times[1:-1]) == pytest.approx(1 - 1e-3, abs=1e-9)
    # VP starts inside the sigma range: t = 0 is the first grid point, uniform in log-SNR from there.
    log_snr = scheduler.log_snr(torch.tensor(solver_grid(u, scheduler, 8)[:-1], dtype=torch.float64))
    torch.testing.assert_close(log_snr.diff(), log_snr.diff().mean().expand(7), rtol=1e-9, atol=0)
    # FM-OT starts at infinite sigma/alpha: one step from t = 0 to EDM's sigma_max = 80 first.
    fm = flowsolve.GaussianMixtureFlow.random(2, 2)
    times = solver_grid(fm, fm.scheduler, 6)
    assert float(1 / fm.scheduler.snr(torch.tensor(times[1], dtype=torch.float64))) == pytest.approx(80.0)
    assert sigma_range(flowsolve.GaussianMixtureFlow.random(2, 2), schedulers.FMOT()) == (80.0, 0.002)


def test_best_grid_row_is_the_lowest_dpm_solver_variant_per_budget():
    from flowsolve.training.evaluation import compare

    flow = flowsolve.GaussianMixtureFlow.random(4, 3, seed=2, scheduler=schedulers.VP())
    reference = flowsolve.ground_truth(flow, torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    rows = compare(flow, reference, [4, 6])
    for budget in (4, 6):
        variants = [r["rmse"] for r in rows if r["method"].startswith("dpm-solver++(2m)") and r["budget"] == budget
                    and r["method"] != "dpm-solver++(2m) best grid"]
        (best,) = [r for r in rows if r["method"] == "dpm-solver++(2m) best grid" and r["budget"] == budget]
        assert len(variants) == 3 and best["rmse"] == min(variants)


def test_edm_heun_keeps_edms_schedule_on_full_paths_and_stops_at_a_finite_end():
    fm = flowsolve.GaussianMixtureFlow.random(2, 2)
    levels = EDMHeun().noise_levels(fm, fm.scheduler, 7)  # 4 steps: 80 .. 0.002, then the data (s = 0)
    assert len(levels) == 5 and levels[0] == 80.0 and levels[-2] == 0.002 and levels[-1] == 0.0
    # sigma/alpha runs from 10 to 0.05 only: EDM's 80 and 0.002 are out of reach, the path's own ends count.
    short = schedulers.Custom(lambda t: 0.1 + 0.9 * t, lambda t: 1 - 0.95 * t)
    levels = EDMHeun().noise_levels(flowsolve.GaussianMixtureFlow.random(2, 2, scheduler=short), short, 7)
    assert len(levels) == 5 and levels[0] == pytest.approx(10.0) and levels[-1] == pytest.approx(0.05)
    assert all(a > b for a, b in zip(levels[:-1], levels[1:]))


def test_ddim_keeps_its_uniform_grid_and_evaluates_only_where_the_model_is_defined():
    from flowsolve.baselines import uniform_time_grid

    eps_vp = flowsolve.adapt(lambda x, s: torch.zeros_like(x), "eps-vp")  # evaluated up to t = 0.999
    assert uniform_time_grid(eps_vp, 8) == [i / 8 for i in range(9)]
    flow, times = flowsolve.GaussianMixtureFlow.random(2, 2, scheduler=schedulers.VP()), []

    def truncated(t, x):  # a model defined on t in [0.2, 0.8] only
        times.append(float(t))
        return flow(t.clamp(0.2, 0.8), x)

    truncated.scheduler, truncated.time_range = flow.scheduler, (0.2, 0.8)
    x1, used = DDIM().sample(truncated, torch.randn(3, 2, dtype=torch.float64), 6)
    assert used == len(times) == 6 and times[0] == 0.0 and all(0.2 <= t <= 0.8 for t in times[1:])
    assert torch.isfinite(x1).all()


def test_a_baseline_declares_whether_it_needs_a_scheduler():
    with pytest.raises(TypeError, match="must declare needs_scheduler"):
        type("Undeclared", (flowsolve.baselines.Baseline,), {"name": "x", "sample": lambda self, u, x0, nfe: (x0, 0)})
    assert {name: make().needs_scheduler for name, make in builtin_baselines().items()} == {
        "euler": False, "midpoint": False, "heun": False, "rk4": False, "edm-heun": True, "dpm-solver++(2m)": True,
        "dpm-solver++(2m) edm": True, "dpm-solver++(2m) time-uniform": True, "ddim": True,
        "dpm-solver++(3m)": True, "dpm-solver++(3m) edm": True, "unipc-bh2": True, "unipc-bh2 edm": True,
        "ipndm": True, "ipndm edm": True}
    assert all(make().name == name for name, make in builtin_baselines().items())
