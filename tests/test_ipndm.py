"""iPNDM: registered on two grids, a written-out reference, convergence to dopri5, and the path's ends."""

import itertools
import math

import pytest
import torch

import flowsolve
from flowsolve.baselines import IPNDM, DPMSolverPP2M, builtin_baselines, solver_grid
from flowsolve.paths import schedulers
from flowsolve.training.metrics import rmse

# Adams--Bashforth for equal steps, with one, two, three and four predictions (latest first).
AB = [[1], [3 / 2, -1 / 2], [23 / 12, -16 / 12, 5 / 12], [55 / 24, -59 / 24, 37 / 24, -9 / 24]]


def test_ipndm_is_registered_on_the_log_snr_and_edm_grids():
    for name, spacing in (("ipndm", "log-snr"), ("ipndm edm", "edm")):
        baseline = builtin_baselines()[name]()
        assert baseline == IPNDM(spacing) and baseline.name == name and baseline.needs_scheduler


# -- a written-out reference ---------------------------------------------------------------------
# A Gaussian mixture on the path alpha = 0.1 + 0.9 t, sigma = 1 - 0.95 t: sigma/alpha = s runs from
# 10 to 0.05, every step is finite in s, and the time where sigma/alpha = s is (1 - 0.1 s) / (0.95 + 0.9 s).
LINEAR = schedulers.Custom(lambda t: 0.1 + 0.9 * t, lambda t: 1 - 0.95 * t,
                           d_alpha=lambda t: torch.full_like(t, 0.9), d_sigma=lambda t: torch.full_like(t, -0.95))


def time_at(s):
    return (1 - 0.1 * s) / (0.95 + 0.9 * s)


def grid_by_hand(steps, spacing):
    """Times where s runs from 10 to 0.05 uniformly in log s, or in s^(1/7) (EDM, rho = 7)."""
    if spacing == "log-snr":
        levels = [10 * (0.05 / 10) ** (i / steps) for i in range(steps + 1)]
    else:
        a, b = 10 ** (1 / 7), 0.05 ** (1 / 7)
        levels = [(a + (b - a) * i / steps) ** 7 for i in range(steps + 1)]
    return [time_at(s) for s in levels]


def noise_by_hand(flow, scheduler, t, x):
    """eps from the velocity: x = alpha x1 + sigma eps and v = alpha' x1 + sigma' eps, solved for eps."""
    tt = torch.tensor(t, dtype=torch.float64)
    a, s, da, ds = (float(f(tt)) for f in (scheduler.alpha, scheduler.sigma, scheduler.d_alpha, scheduler.d_sigma))
    v = flow(tt, x)
    return (da * x - a * v) / (da * s - a * ds)


def ipndm_by_hand(flow, scheduler, x, times):
    """y = x / alpha, s = sigma / alpha; y += (s_next - s) * (AB combination of the eps so far, up to
    four); a step from alpha = 0 is DDIM's and starts the history afresh."""
    def alpha(t):
        return float(scheduler.alpha(torch.tensor(t, dtype=torch.float64)))

    def sigma(t):
        return float(scheduler.sigma(torch.tensor(t, dtype=torch.float64)))

    history = []
    for t0, t1 in itertools.pairwise(times):
        eps = noise_by_hand(flow, scheduler, t0, x)
        if alpha(t0) == 0:  # from pure noise: x1_hat = (x - sigma eps) / alpha is the velocity's limit
            v = flow(torch.tensor(t0, dtype=torch.float64), x)
            data = x + sigma(t0) * v  # FM-OT: v = x1 - eps, eps = x at t = 0
            x = alpha(t1) * data + sigma(t1) * eps
            history = []
            continue
        history = [eps, *history][:4]
        blended = sum(c * e for c, e in zip(AB[len(history) - 1], history))
        y = x / alpha(t0) + (sigma(t1) / alpha(t1) - sigma(t0) / alpha(t0)) * blended
        x = alpha(t1) * y
    return x


@pytest.mark.parametrize("spacing", ["log-snr", "edm"])
def test_a_four_step_run_matches_the_adams_bashforth_loop(spacing):
    # Four steps: Euler (DDIM), then Adams--Bashforth with two, three and four predictions.
    flow = flowsolve.GaussianMixtureFlow.random(dim=3, components=3, seed=4, scheduler=LINEAR, spread=0.8)
    x0 = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    times = grid_by_hand(4, spacing)
    assert solver_grid(flow, LINEAR, 4, spacing) == pytest.approx(times, abs=1e-12)
    x1, used = IPNDM(spacing).sample(flow, x0, 4)
    assert used == 4
    torch.testing.assert_close(x1, ipndm_by_hand(flow, LINEAR, x0, times), rtol=0, atol=1e-10)


def test_on_a_flow_matching_path_the_step_from_pure_noise_is_ddims_and_the_last_lands_on_the_data():
    # FM-OT: t = 0 is pure noise (s infinite), t = 1 clean data (s = 0); 6 steps use every AB order.
    flow = flowsolve.GaussianMixtureFlow.random(dim=3, components=3, seed=1, scheduler=schedulers.FMOT())
    x0 = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    times = solver_grid(flow, flow.scheduler, 6)
    assert times[0] == 0.0 and times[-1] == 1.0
    x1, used = IPNDM().sample(flow, x0, 6)
    assert used == 6
    torch.testing.assert_close(x1, ipndm_by_hand(flow, flow.scheduler, x0, times), rtol=0, atol=1e-10)


# -- accuracy ------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=[schedulers.VP(), schedulers.FMOT()], ids=lambda s: s.name)
def mixture(request):
    flow = flowsolve.GaussianMixtureFlow.random(dim=4, components=3, seed=0, scheduler=request.param, spread=0.5)
    x0 = torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return flow, x0, flowsolve.ground_truth(flow, x0, rtol=1e-11, atol=1e-11).x1


@pytest.mark.parametrize("spacing", ["log-snr", "edm"])
def test_error_falls_towards_dopri5_as_nfe_grows(mixture, spacing):
    flow, x0, reference = mixture
    errors = [float(rmse(IPNDM(spacing).sample(flow, x0, nfe)[0], reference)) for nfe in (10, 20, 40, 80)]
    # measured (VP / FM-OT): log-SNR 1.2e-2, 2.9e-3, 7.0e-4, 1.7e-4 / 1.1e-2, 2.8e-3, 6.6e-4, 1.5e-4;
    # EDM 2.6e-2, 4.7e-3, 1.0e-3, 2.3e-4 / 2.6e-2, 4.0e-3, 8.5e-4, 1.9e-4. Second order: the AB
    # coefficients are those for equal steps in s, which these grids are not.
    assert all(later < earlier / 3 for earlier, later in itertools.pairwise(errors)), errors
    assert errors[-1] < 3e-4


def test_ipndm_beats_dpm_solver_2m_at_moderate_nfe(mixture):
    flow, x0, reference = mixture

    def error(baseline, nfe):
        return float(rmse(baseline.sample(flow, x0, nfe)[0], reference))

    # measured at 10 / 16 NFE (VP; FM-OT alike): 2M 1.8e-2 / 8.1e-3, iPNDM 1.2e-2 / 4.5e-3
    for nfe in (10, 16):
        assert error(IPNDM(), nfe) < 0.8 * error(DPMSolverPP2M(), nfe), nfe


# -- paths that stop short -----------------------------------------------------------------------
def truncated_vp(beta=1.0, tau_min=1e-3, tau_max=10.0):
    """A constant-beta VP score model on diffusion times [tau_min, tau_max]: it ends at sigma/alpha ~ 0.03."""
    def tau(t):
        return tau_min + (tau_max - tau_min) * (1 - t)

    return schedulers.Custom(lambda t: torch.exp(-beta * tau(t) / 2), lambda t: torch.sqrt(-torch.expm1(-beta * tau(t))))


@pytest.fixture(scope="module")
def short_of_clean_data():
    """A mixture on that path, noise, and dopri5's answer."""
    scheduler = truncated_vp()
    assert scheduler.noise_range()[1] == pytest.approx(math.sqrt(-math.expm1(-1e-3)) / math.exp(-0.5e-3))
    flow = flowsolve.GaussianMixtureFlow.random(dim=4, components=3, seed=0, scheduler=scheduler, spread=0.5)
    x0 = torch.randn(64, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return flow, x0, flowsolve.ground_truth(flow, x0, rtol=1e-10, atol=1e-10).x1


@pytest.mark.parametrize("name, tolerance", [("ipndm", 0.02), ("ipndm edm", 0.05)])  # measured 9.3e-3, 3.5e-2
def test_finite_and_accurate_on_a_path_that_ends_above_zero_noise(short_of_clean_data, name, tolerance):
    flow, x0, reference = short_of_clean_data
    scheduler = flow.scheduler
    times = []

    def field(t, x):
        times.append(float(t))
        return flow(t, x)

    field.scheduler = scheduler
    x1, used = builtin_baselines()[name]().sample(field, x0, 8)
    assert used == len(times) == 8 and all(a < b < 1 for a, b in itertools.pairwise(times))
    assert bool(torch.isfinite(x1).all())
    assert float(rmse(x1, reference)) < tolerance


@pytest.mark.parametrize("scheduler", [schedulers.FMOT(), schedulers.VP(), truncated_vp()], ids=["fm-ot", "vp", "truncated"])
def test_tracing_ipndm_reproduces_it(scheduler):
    # iPNDM is linear in the noise and the velocities: a non-stationary solver holds it exactly.
    flow = flowsolve.GaussianMixtureFlow.random(dim=2, components=2, seed=0, scheduler=scheduler, spread=0.5)
    x0 = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    solver = flowsolve.NonStationary().at(7, init=IPNDM(), model=flow)
    torch.testing.assert_close(solver.sample(flow, x0), IPNDM().sample(flow, x0, 7)[0], rtol=1e-8, atol=1e-8)
