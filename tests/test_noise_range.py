"""Grids, schedules and tracing take the model's real noise range at both ends.

Paths in the wild end above zero noise (a discrete DDPM table, a score model trained on
diffusion times tau >= 1e-3), start short of pure noise, or are only evaluated on part of
[0, 1] (``u.time_range``). On every such model each training-free baseline, each named
schedule and each traced baseline must spend exactly its NFE, at strictly increasing times
inside the model's range, and return finite samples.
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowsolve
from flowsolve.baselines import (
    DPMSolverPP2M,
    EDMHeun,
    builtin_baselines,
    sigma_range,
    solver_grid,
)
from flowsolve.paths import schedulers
from flowsolve.training.metrics import rmse

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- paths ---------------------------------------------------------------------------------------
def constant_beta_vp(beta: float, tau_min: float, tau_max: float) -> schedulers.Scheduler:
    """A VP score model with constant beta on diffusion times ``tau in [tau_min, tau_max]``, mapped to
    ``t in [0, 1]`` (t = 0 at tau_max): it ends at ``sigma/alpha ~ sqrt(beta tau_min) > 0``."""

    def tau(t):
        return tau_min + (tau_max - tau_min) * (1 - t)

    return schedulers.Custom(lambda t: torch.exp(-beta * tau(t) / 2), lambda t: torch.sqrt(-torch.expm1(-beta * tau(t))),
                             name=f"vp-beta{beta:.3g}-tau[{tau_min:.3g},{tau_max:.3g}]")


def bent_path(alpha_start: float, sigma_end: float, bend_alpha: float, bend_sigma: float) -> schedulers.Scheduler:
    """``alpha`` from ``alpha_start`` to 1, ``sigma`` from 1 to ``sigma_end``, each along a bent line
    (slopes nonzero at both ends): zero ends are pure noise / clean data, positive ones stop short."""

    def bent(t, bend):
        return t + bend * t * (1 - t)

    return schedulers.Custom(lambda t: alpha_start + (1 - alpha_start) * bent(t, bend_alpha),
                             lambda t: sigma_end + (1 - sigma_end) * bent(1 - t, bend_sigma),
                             name=f"bent-a{alpha_start:.3g}-s{sigma_end:.3g}-{bend_alpha:.3g}-{bend_sigma:.3g}")


def ddpm_table(steps: int, beta_end: float, skipped: float = 0.0, beta_start: float = 1e-4) -> schedulers.Scheduler:
    """DDPM's linear-beta ``alphas_cumprod`` without its ``skipped`` cleanest fraction of steps (a truncated
    table), linearly interpolated in ``t`` (t = 0 the noisiest step, t = 1 the cleanest kept one; its
    ``sigma`` is ``sqrt(beta_start) = 0.01`` or more, above EDM's ``sigma_min``)."""
    betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    cumulative = torch.cumprod(1 - betas, 0)[int(skipped * steps):].flip(0)  # index 0 = noisiest

    def alphas_cumprod(t):
        position = t * (cumulative.numel() - 1)
        index = position.detach().floor().clamp(0, cumulative.numel() - 2).long()
        left, right = cumulative.to(t)[index], cumulative.to(t)[index + 1]
        return left + (right - left) * (position - index)

    return schedulers.Custom(lambda t: torch.sqrt(alphas_cumprod(t)), lambda t: torch.sqrt(1 - alphas_cumprod(t)),
                             name=f"ddpm-{steps}-{beta_end:.3g}-skip{skipped:.3g}")


paths = st.one_of(
    st.builds(constant_beta_vp, st.floats(0.5, 2.0), st.floats(1e-4, 5e-2), st.floats(2.0, 20.0)),
    st.builds(bent_path, st.sampled_from([0.0, 1e-3, 0.05, 0.3]), st.sampled_from([0.0, 1e-3, 0.01, 0.1]),
              st.floats(-0.5, 0.5), st.floats(-0.5, 0.5)),
    st.builds(ddpm_table, st.integers(50, 1000), st.floats(0.01, 0.03), st.sampled_from([0.0, 0.0, 0.01, 0.2])),
)
time_ranges = st.one_of(st.none(), st.tuples(st.sampled_from([0.0, 0.0, 0.02, 0.2]), st.sampled_from([1.0, 1.0, 0.97, 0.8])))


class RecordingModel:
    """An exact Gaussian-mixture model on ``scheduler``, held at the ends of ``time_range`` like an adapter;
    it records the time of every evaluation."""

    def __init__(self, scheduler, time_range=None, seed=0):
        self.flow = flowsolve.GaussianMixtureFlow.random(dim=2, components=2, seed=seed, scheduler=scheduler, spread=0.5)
        self.scheduler, self.times = scheduler, []
        if time_range is not None:
            self.time_range = time_range

    def __call__(self, t, x):
        self.times.append(float(t))
        low, high = getattr(self, "time_range", (0.0, 1.0))
        return self.flow(torch.as_tensor(t).clamp(low, high), x)

    def inside(self, times) -> bool:
        low, high = getattr(self, "time_range", (0.0, 1.0))
        return all(low - 1e-12 <= t <= high + 1e-12 for t in times)


def noise(count=3):
    return torch.randn(count, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def strictly_increasing(times) -> bool:
    return all(a < b for a, b in zip(times[:-1], times[1:]))


# -- properties ----------------------------------------------------------------------------------
SCHEDULER_BASELINES = ["ddim", "dpm-solver++(2m)", "dpm-solver++(2m) edm", "dpm-solver++(2m) time-uniform", "edm-heun",
                       "dpm-solver++(3m)", "dpm-solver++(3m) edm", "unipc-bh2", "unipc-bh2 edm", "ipndm", "ipndm edm"]
SHARED_STAGE_TIMES = ("heun", "rk4", "edm-heun")  # a stage and the next step's first share a time, at other states


@SETTINGS
@given(scheduler=paths, time_range=time_ranges, nfe=st.integers(2, 10))
def test_every_baseline_spends_its_nfe_at_increasing_times(scheduler, time_range, nfe):
    for name, make in builtin_baselines().items():
        model, baseline = RecordingModel(scheduler, time_range), make()
        x1, used = baseline.sample(model, noise(), nfe)
        if x1 is None:  # a Runge--Kutta method whose stages do not divide nfe
            assert used == 0 == len(model.times) and nfe % baseline.base.stages
            continue
        expected = 2 * ((nfe + 1) // 2) - 1 if name == "edm-heun" else nfe  # Heun: k steps, 2k - 1 NFE
        assert used == len(model.times) == expected, (name, model.times)
        assert bool(torch.isfinite(x1).all()), (name, model.times)
        if name in SHARED_STAGE_TIMES:
            assert sorted(model.times) == model.times and len(set(model.times)) > used // 2, (name, model.times)
        else:
            assert strictly_increasing(model.times), (name, model.times)
        if name in SCHEDULER_BASELINES:  # after t = 0 (the noise), the model is only asked inside its range
            assert model.inside(model.times[1:]), (name, model.times)


@SETTINGS
@given(scheduler=paths, time_range=time_ranges, steps=st.integers(1, 5),
       spec=st.sampled_from(["log-snr", "edm", "cosine", "uniform", "log-snr+ddim", "edm+ddim"]),
       base=st.sampled_from(["euler", "midpoint"]))
def test_every_named_schedule_starts_a_solver_on_the_model(scheduler, time_range, steps, spec, base):
    model = RecordingModel(scheduler, time_range)
    base_solver = flowsolve.Euler() if base == "euler" else flowsolve.Midpoint()
    nfe = steps * base_solver.stages
    solver = flowsolve.compose(flowsolve.ScaleTime(), base_solver).at(nfe=nfe)
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    spans_every_snr = float(scheduler.alpha(ends[0])) == 0 and float(scheduler.sigma(ends[1])) == 0
    if spec == "cosine" and not spans_every_snr:
        with pytest.raises(ValueError, match="cosine schedule needs a path from pure noise"):
            solver.initialise(spec, model)
        return
    solver.initialise(spec, model)
    t = solver.nodes().t
    assert float(t[0]) == 0.0 and float(t[-1]) == 1.0 and bool((t.diff() > 0).all())
    x1 = solver.sample(model, noise())
    assert len(model.times) == nfe and strictly_increasing(model.times), model.times
    assert bool(torch.isfinite(x1).all())


@SETTINGS
@given(scheduler=paths, time_range=time_ranges, nfe=st.integers(2, 8),
       name=st.sampled_from(["ddim", "dpm-solver++(2m)", "dpm-solver++(2m) edm", "dpm-solver++(2m) time-uniform"]))
def test_tracing_a_baseline_reproduces_it_on_the_model(scheduler, time_range, nfe, name):
    model = RecordingModel(scheduler, time_range)
    baseline = builtin_baselines()[name]()
    solver = flowsolve.NonStationary().at(nfe, init=baseline, model=model)
    times, weights = solver.coefficients()
    assert strictly_increasing(times.tolist()) and bool(torch.isfinite(weights).all())
    model.times.clear()
    traced = solver.sample(model, noise())
    assert len(model.times) == nfe
    torch.testing.assert_close(traced, baseline.sample(model, noise(), nfe)[0], rtol=1e-8, atol=1e-8)


# -- the model: a constant-beta VP score model on tau in [1e-3, 10] ------------------------
@pytest.fixture(scope="module")
def truncated_vp():
    """The model, its noise and the dopri5 answer; its path ends at sigma/alpha = 0.03 at t = 1."""
    scheduler = constant_beta_vp(1.0, 1e-3, 10.0)
    model = flowsolve.GaussianMixtureFlow.random(dim=4, components=3, seed=0, scheduler=scheduler, spread=0.5)
    x0 = torch.randn(64, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return model, x0, flowsolve.ground_truth(model, x0, rtol=1e-10, atol=1e-10).x1


def test_the_noise_range_is_the_paths_own_where_it_is_narrower(truncated_vp):
    model, *_ = truncated_vp
    end = math.sqrt(-math.expm1(-1e-3)) / math.exp(-0.5e-3)  # sigma/alpha at tau = 1e-3
    assert sigma_range(model, model.scheduler) == (80.0, pytest.approx(end, rel=1e-12))
    times = solver_grid(model, model.scheduler, 8)
    assert len(times) == 9 and times[0] == 0.0 and times[-1] == 1.0 and strictly_increasing(times)


def test_dpm_solver_is_finite_and_accurate_on_a_path_that_ends_above_zero_noise(truncated_vp):
    model, x0, reference = truncated_vp
    x1, used = DPMSolverPP2M().sample(model, x0, 8)
    assert used == 8
    assert rmse(x1, reference) < 0.03  # NaN before: its grid asked for sigma/alpha = 0.002


def test_edm_heun_lands_on_the_paths_end(truncated_vp):
    model, x0, reference = truncated_vp
    x1, used = EDMHeun().sample(model, x0, 7)
    assert used == 7
    assert rmse(x1, reference) < 0.1  # 0.21 before: four evaluations at t ~ 1 and a denoised output


@pytest.mark.parametrize("spec", ["log-snr", "edm", "log-snr+ddim"])
def test_named_schedules_start_a_fit_on_that_model(truncated_vp, spec):
    model, x0, reference = truncated_vp
    base = flowsolve.Euler() if spec.endswith("+ddim") else flowsolve.Midpoint()
    solver = flowsolve.compose(flowsolve.ScaleTime(), base).at(nfe=8)
    solver.initialise(spec, model)  # failed before: "node values need t increasing ... and dt > 0"
    assert bool((solver.nodes().t.diff() > 0).all()) and bool((solver.nodes().dt > 0).all())
    assert rmse(solver.sample(model, x0), reference) < 0.5


def test_tracing_dpm_solver_on_that_model_reproduces_it(truncated_vp):
    model, x0, _ = truncated_vp
    solver = flowsolve.NonStationary().at(8, init=DPMSolverPP2M(), model=model)  # failed before
    torch.testing.assert_close(solver.sample(model, x0), DPMSolverPP2M().sample(model, x0, 8)[0], rtol=1e-9, atol=1e-9)


def test_a_discrete_schedules_grid_ends_on_its_last_step_without_a_zero_length_step():
    table = ddpm_table(1000, 0.02)  # sigma/alpha = 0.01 at its cleanest step, above EDM's 0.002
    flow = flowsolve.GaussianMixtureFlow.random(dim=2, components=2, scheduler=table)
    for spacing in ("log-snr", "edm", "time-uniform"):
        times = solver_grid(flow, table, 6, spacing)
        assert len(times) == 7 and times[-1] == 1.0 and strictly_increasing(times), (spacing, times)
