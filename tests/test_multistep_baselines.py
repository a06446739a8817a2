"""DPM-Solver++(3M), UniPC-bh2 and iPNDM: honest NFE, accuracy against dopri5, and written-out
references (iPNDM's own in test_ipndm.py)."""

import itertools
import math

import pytest
import torch

import flowsolve
from flowsolve.baselines import DPMSolverPP2M, DPMSolverPP3M, UniPC, builtin_baselines
from flowsolve.paths import schedulers
from flowsolve.training.metrics import rmse

NEW = ["dpm-solver++(3m)", "dpm-solver++(3m) edm", "unipc-bh2", "unipc-bh2 edm", "ipndm", "ipndm edm"]


def recording(u):
    """``u`` recording the time of each evaluation, carrying its scheduler."""
    times = []

    def field(t, x):
        times.append(float(t))
        return u(t, x)

    field.scheduler = u.scheduler
    return field, times


def test_the_new_baselines_are_registered():
    assert all(name in builtin_baselines() and builtin_baselines()[name]().name == name for name in NEW)


@pytest.mark.parametrize("scheduler", [schedulers.FMOT(), schedulers.Cosine(), schedulers.VP()], ids=lambda s: s.name)
@pytest.mark.parametrize("name", NEW)
def test_exactly_nfe_evaluations_at_increasing_times(scheduler, name):
    flow = flowsolve.GaussianMixtureFlow.random(3, 2, seed=0, scheduler=scheduler)
    x0 = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for nfe in (1, 2, 3, 4, 7):
        field, times = recording(flow)
        x1, used = builtin_baselines()[name]().sample(field, x0, nfe)
        assert used == len(times) == nfe and all(a < b for a, b in itertools.pairwise(times)), (nfe, times)
        assert bool(torch.isfinite(x1).all())


@pytest.fixture(scope="module")
def vp_mixture():
    flow = flowsolve.GaussianMixtureFlow.random(dim=4, components=3, seed=0, scheduler=schedulers.VP(), spread=0.5)
    x0 = torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return flow, x0, flowsolve.ground_truth(flow, x0, rtol=1e-10, atol=1e-10).x1


@pytest.mark.parametrize("baseline", [DPMSolverPP3M(), UniPC(), UniPC(order=3)], ids=lambda b: b.name)
def test_error_falls_with_nfe(vp_mixture, baseline):
    flow, x0, reference = vp_mixture
    errors = [float(rmse(baseline.sample(flow, x0, nfe)[0], reference)) for nfe in (8, 15, 30)]
    # measured: 3M 7.6e-2, 4.2e-3, 6e-4; UniPC 3.0e-2, 6.7e-3, 8e-4; order 3 7.7e-2, 2.8e-3, 3e-4 (below 8 steps third order still warms up)
    assert errors[1] < errors[0] / 2 and errors[2] < errors[1] / 2, errors


def test_higher_order_beats_dpm_solver_2m_at_moderate_nfe(vp_mixture):
    flow, x0, reference = vp_mixture

    def error(baseline, nfe):
        return float(rmse(baseline.sample(flow, x0, nfe)[0], reference))

    # measured at 15 / 20 NFE: 2M 9.3e-3 / 5.1e-3, 3M 4.2e-3 / 1.8e-3, UniPC 6.7e-3 / 2.6e-3
    assert error(DPMSolverPP3M(), 15) < error(DPMSolverPP2M(), 15)
    assert error(DPMSolverPP3M(), 20) < 0.7 * error(DPMSolverPP2M(), 20)
    assert error(UniPC(), 20) < 0.8 * error(DPMSolverPP2M(), 20)


# -- a written-out reference ---------------------------------------------------------------------
# 1-D data N(MU, S^2) on the path alpha = 0.1 + 0.9 t, sigma = 1 - 0.95 t (sigma/alpha from 10 to
# 0.05: every log-SNR step is finite, so no end handling): the denoiser is linear in x and every
# model output is known in closed form.
MU, S = 0.7, 0.3


def alpha(t):
    return 0.1 + 0.9 * t


def sigma(t):
    return 1 - 0.95 * t


def denoised(t, x):
    a, s = alpha(t), sigma(t)
    return MU + a * S**2 * (x - a * MU) / (a**2 * S**2 + s**2)


class LinearDenoiserFlow:
    """The exact velocity of that path: ``alpha' D + sigma' (x - alpha D) / sigma``."""

    scheduler = schedulers.Custom(lambda t: 0.1 + 0.9 * t, lambda t: 1 - 0.95 * t,
                                  d_alpha=lambda t: torch.full_like(t, 0.9), d_sigma=lambda t: torch.full_like(t, -0.95))

    def __call__(self, t, x):
        d = denoised(float(t), x)
        return 0.9 * d - 0.95 * (x - alpha(float(t)) * d) / sigma(float(t))


def log_snr_grid(steps):
    """Times where sigma/alpha runs log-uniformly from 10 to 0.05 (sigma/alpha = r at t = (1 - 0.1 r) / (0.95 + 0.9 r))."""
    ratios = [10 * (0.05 / 10) ** (i / steps) for i in range(steps + 1)]
    return [(1 - 0.1 * r) / (0.95 + 0.9 * r) for r in ratios]


def lam(t):
    return math.log(alpha(t) / sigma(t))


def dpm_solver_3m_by_hand(x, times):
    """Lu et al. (2022), DPM-Solver++(3M): first, second, then third order."""
    ds, lams = [], []
    for i, (s, t) in enumerate(itertools.pairwise(times)):
        d0, h = denoised(s, x), lam(t) - lam(s)
        phi1 = math.expm1(-h)
        if i == 0:
            x = sigma(t) / sigma(s) * x - alpha(t) * phi1 * d0
        elif i == 1:
            r0 = (lam(s) - lams[-1]) / h
            x = sigma(t) / sigma(s) * x - alpha(t) * phi1 * d0 - 0.5 * alpha(t) * phi1 * (d0 - ds[-1]) / r0
        else:
            r0, r1 = (lam(s) - lams[-1]) / h, (lams[-1] - lams[-2]) / h
            d1_0, d1_1 = (d0 - ds[-1]) / r0, (ds[-1] - ds[-2]) / r1
            d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi2 = phi1 / h + 1
            phi3 = phi2 / h - 0.5
            x = sigma(t) / sigma(s) * x - alpha(t) * phi1 * d0 + alpha(t) * phi2 * d1 - alpha(t) * phi3 * d2
        ds, lams = [*ds, d0], [*lams, lam(s)]
    return x


def unipc_bh2_by_hand(x, times):
    """Zhao et al. (2023), UniPC-2 with B(h) = e^h - 1 in the data prediction: UniP-1 + UniC-1 on the
    first step, UniP-2 (rho = 1/2) + UniC-2 after, no corrector on the last step; the corrector uses
    the model's output at the predicted state, which the next step starts from."""
    m0 = denoised(times[0], x)
    previous = None  # (lambda, model output) one step back
    for i, (s, t) in enumerate(itertools.pairwise(times)):
        h = lam(t) - lam(s)
        hh = -h
        b_h = math.expm1(hh)
        phi_1 = b_h / hh - 1
        b1 = phi_1 / b_h
        b2 = (phi_1 / hh - 0.5) * 2 / b_h
        base = sigma(t) / sigma(s) * x - alpha(t) * math.expm1(hh) * m0
        if previous is None:
            predicted = base
        else:
            r1 = (previous[0] - lam(s)) / h
            d1 = (previous[1] - m0) / r1
            predicted = base - alpha(t) * b_h * 0.5 * d1
        if i == len(times) - 2:
            return predicted
        m_t = denoised(t, predicted)
        if previous is None:
            x = base - alpha(t) * b_h * 0.5 * (m_t - m0)
        else:  # rho_c solves [[1, 1], [r1, 1]] rho = [b1, b2]
            rho_1 = (b1 - b2) / (1 - r1)
            rho_t = b1 - rho_1
            x = base - alpha(t) * b_h * (rho_1 * d1 + rho_t * (m_t - m0))
        previous, m0 = (lam(s), m0), m_t
    raise AssertionError("unreachable")


def unipc_bh2_order_3_by_hand(x, times):
    """UniPC-3 with B(h) = e^h - 1 in the data prediction: UniP-1 + UniC-1, UniP-2 + UniC-2, then UniP-3 +
    UniC-3 (the corrector of order p solves for weights on p earlier-and-new nodes), no corrector on
    the last step. ``rho`` for nodes ``n_j`` satisfies ``sum_j rho_j n_j^k = b_{k+1}``, written out with
    the Lagrange polynomials of the nodes."""
    m0 = denoised(times[0], x)
    history = []  # (lambda, model output) of the earlier steps, latest first
    for i, (s, t) in enumerate(itertools.pairwise(times)):
        h = lam(t) - lam(s)
        hh = -h
        b_h = math.expm1(hh)
        g1 = b_h / hh - 1
        g2 = g1 / hh - 1 / 2
        g3 = g2 / hh - 1 / 6
        b1, b2, b3 = g1 / b_h, 2 * g2 / b_h, 6 * g3 / b_h
        base = sigma(t) / sigma(s) * x - alpha(t) * b_h * m0
        nodes = [(earlier - lam(s)) / h for earlier, _ in history[:2]]
        slopes = [(m - m0) / r for (_, m), r in zip(history[:2], nodes)]
        if len(nodes) == 0:
            rho_p = []
        elif len(nodes) == 1:
            rho_p = [0.5]
        else:
            r1, r2 = nodes
            rho_p = [(b2 - r2 * b1) / (r1 - r2), (b2 - r1 * b1) / (r2 - r1)]
        predicted = base - alpha(t) * b_h * sum(p * d for p, d in zip(rho_p, slopes))
        if i == len(times) - 2:
            return predicted
        m_t = denoised(t, predicted)
        points = [*nodes, 1.0]
        differences = [*slopes, m_t - m0]
        if len(points) == 1:
            rho_c = [0.5]
        elif len(points) == 2:
            (r1, one) = points
            rho_c = [(b2 - one * b1) / (r1 - one), (b2 - r1 * b1) / (one - r1)]
        else:
            rho_c = []
            for j, node in enumerate(points):
                others = [p for k, p in enumerate(points) if k != j]
                rho_c.append((b3 - sum(others) * b2 + others[0] * others[1] * b1)
                             / ((node - others[0]) * (node - others[1])))
        x = base - alpha(t) * b_h * sum(c * d for c, d in zip(rho_c, differences))
        history, m0 = [(lam(s), m0), *history], m_t
    raise AssertionError("unreachable")


@pytest.mark.parametrize("baseline, by_hand, steps", [(DPMSolverPP3M(), dpm_solver_3m_by_hand, 4),
                                                      (UniPC(), unipc_bh2_by_hand, 4),
                                                      (UniPC(order=3), unipc_bh2_order_3_by_hand, 5)],
                         ids=["dpm-solver++(3m)", "unipc-bh2", "unipc-bh2 order 3"])
def test_a_short_run_matches_the_written_out_formulas(baseline, by_hand, steps):
    u, x0 = LinearDenoiserFlow(), [-1.3, 0.2, 2.1]
    times = log_snr_grid(steps)
    assert flowsolve.baselines.solver_grid(u, u.scheduler, steps) == pytest.approx(times, abs=1e-12)
    x1, used = baseline.sample(u, torch.tensor(x0, dtype=torch.float64).unsqueeze(1), steps)
    assert used == steps
    expected = torch.tensor([by_hand(x, times) for x in x0], dtype=torch.float64).unsqueeze(1)
    torch.testing.assert_close(x1, expected, rtol=0, atol=1e-10)
