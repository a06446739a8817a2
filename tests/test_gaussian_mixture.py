"""The exact Gaussian-mixture flow against closed forms and against its own data distribution."""

import pytest
import torch

from flowsolve.models.gaussian_mixture import GaussianMixtureFlow
from flowsolve.paths.schedulers import FMOT, VP, Cosine
from flowsolve.training.ground_truth import solve_reference

SCHEDULERS = [FMOT(), Cosine(), VP()]


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: s.name)
def test_scheduler_derivatives_match_autograd(scheduler):
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64, requires_grad=True)
    d_alpha, = torch.autograd.grad(scheduler.alpha(t).sum(), t)
    d_sigma, = torch.autograd.grad(scheduler.sigma(t).sum(), t)
    torch.testing.assert_close(scheduler.d_alpha(t.detach()), d_alpha)
    torch.testing.assert_close(scheduler.d_sigma(t.detach()), d_sigma)


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: s.name)
def test_single_component_velocity_is_the_linear_closed_form(scheduler):
    mu, tau = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64), 0.3
    flow = GaussianMixtureFlow(mu, [tau], [1.0], scheduler)
    x = torch.randn(5, 3, dtype=torch.float64)
    for t in (0.1, 0.5, 0.9):
        t = torch.tensor(t, dtype=torch.float64)
        a, s, da, ds = scheduler.alpha(t), scheduler.sigma(t), scheduler.d_alpha(t), scheduler.d_sigma(t)
        expected = da * mu + (a * da * tau**2 + s * ds) / (a**2 * tau**2 + s**2) * (x - a * mu)
        torch.testing.assert_close(flow(t, x), expected)


def test_per_sample_times_equal_scalar_calls():
    flow = GaussianMixtureFlow.random(dim=5, components=4, seed=3)
    x = torch.randn(6, 5, dtype=torch.float64)
    t = torch.linspace(0, 1, 6, dtype=torch.float64)
    together = flow(t, x)
    for j in range(6):
        torch.testing.assert_close(together[j : j + 1], flow(t[j], x[j : j + 1]))


@pytest.mark.parametrize("scheduler", [FMOT(), Cosine()], ids=lambda s: s.name)
def test_flow_transports_noise_to_the_mixture(scheduler):
    flow = GaussianMixtureFlow.random(dim=3, components=3, seed=1, scheduler=scheduler)
    generator = torch.Generator().manual_seed(0)
    x1 = solve_reference(flow, torch.randn(4000, 3, dtype=torch.float64, generator=generator), rtol=1e-7, atol=1e-7)
    data = flow.sample_data(4000, generator)
    torch.testing.assert_close(x1.mean(0), data.mean(0), atol=0.04, rtol=0)
    torch.testing.assert_close(x1.std(0), data.std(0), atol=0.04, rtol=0)


def test_dimension_mismatch_is_reported():
    flow = GaussianMixtureFlow.random(dim=4, components=2)
    with pytest.raises(ValueError, match="5 features per sample, the mixture has dimension 4"):
        flow(torch.tensor(0.5), torch.randn(2, 5))
