"""flowsolve.k_diffusion.sample_bespoke: a fitted solver in k-diffusion's sampler convention, on the
exact EDM denoiser of a Gaussian mixture."""

import pytest
import torch

import flowsolve
from flowsolve.k_diffusion import noise_range, sample_bespoke
from flowsolve.models.gaussian_mixture import GaussianMixtureFlow
from flowsolve.training.ground_truth import solve_reference
from tests.solver_parameters import randomize_parameters

FLOW = GaussianMixtureFlow.random(dim=3, components=4, seed=21, spread=1.2)
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


class MixtureDenoiser:
    """The exact EDM denoiser ``D(x; sigma) = E[x1 | x1 + sigma n = x]`` of FLOW's data, counting its calls."""

    def __init__(self, flow=FLOW, **attributes):
        self.flow, self.calls = flow, 0
        vars(self).update(attributes)

    def __call__(self, x, sigma, **extra):
        assert sigma.shape == (x.shape[0],)
        self.calls += 1
        means, variances = self.flow.means.to(x), self.flow.stds.to(x) ** 2  # (K, D), (K,)
        noise = sigma.to(x).reshape(-1, 1, 1) ** 2  # (B, 1, 1)
        total = variances[:, None] + noise  # (B, K, 1)
        residual = x[:, None, :] - means  # (B, K, D)
        log_density = -0.5 * (residual.square().sum(-1, keepdim=True) / total + x.shape[1] * torch.log(total))
        weights = torch.softmax(self.flow.log_weights.to(x)[:, None] + log_density, dim=1)
        return (weights * (means + variances[:, None] / total * residual)).sum(1) + extra.get("shift", 0.0)


def edm_field(model=None):
    return flowsolve.adapt(model or MixtureDenoiser(), "edm", sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)


def scale_time_midpoint():
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=8)
    randomize_parameters(solver, seed=3)
    return solver


def non_stationary():
    return flowsolve.NonStationary().at(6, init="dpm-solver++(2m)", model=edm_field())


def noise(batch=5, seed=0):
    return torch.randn(batch, FLOW.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_the_test_denoiser_is_the_mixture_flow_under_the_edm_adapter():
    u, x = edm_field(), noise()
    for t in (0.05, 0.3, 0.7, 0.95):
        time = torch.tensor(t, dtype=torch.float64)
        torch.testing.assert_close(u(time, x), FLOW(time, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("make", [scale_time_midpoint, non_stationary], ids=lambda f: f.__name__)
def test_sample_bespoke_is_the_solver_on_the_edm_adapter(make):
    solver, model = make(), MixtureDenoiser()
    x = noise() * SIGMA_MAX  # k-diffusion's starting point
    out = sample_bespoke(model, x, solver, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, disable=True)
    assert model.calls == solver.nfe
    expected = solver.sample(edm_field(), x / SIGMA_MAX)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    assert out.shape == x.shape and not out.requires_grad


def test_callbacks_get_k_diffusions_dict_with_the_model_calls():
    solver, model = scale_time_midpoint(), MixtureDenoiser()
    seen = []
    sample_bespoke(model, noise() * SIGMA_MAX, solver, callback=seen.append, sigma_min=SIGMA_MIN,
                   sigma_max=SIGMA_MAX, disable=True)
    assert [info["i"] for info in seen] == list(range(solver.nfe))
    times = solver.evaluation_times().clamp(1 / (1 + SIGMA_MAX), 1 / (1 + SIGMA_MIN))
    for info, t in zip(seen, times.tolist()):
        assert set(info) == {"x", "i", "sigma", "sigma_hat", "denoised"}
        torch.testing.assert_close(info["sigma"], torch.full((5,), (1 - t) / t, dtype=torch.float64))
        assert info["sigma_hat"] is info["sigma"]
        torch.testing.assert_close(info["denoised"], MixtureDenoiser()(info["x"], info["sigma"]), rtol=0, atol=0)
    assert float(seen[0]["sigma"][0]) == pytest.approx(SIGMA_MAX)  # t = 0 is held at sigma_max


def test_extra_args_reach_every_call():
    solver = scale_time_midpoint()
    x = noise() * SIGMA_MAX
    plain = sample_bespoke(MixtureDenoiser(), x, solver, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, disable=True)
    shifted = sample_bespoke(MixtureDenoiser(), x, solver, extra_args={"shift": 0.5}, sigma_min=SIGMA_MIN,
                             sigma_max=SIGMA_MAX, disable=True)
    assert not torch.allclose(plain, shifted)


def test_the_noise_range_comes_from_the_model_then_the_solver_metadata():
    solver = scale_time_midpoint()
    x = noise() * SIGMA_MAX
    expected = sample_bespoke(MixtureDenoiser(), x, solver, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, disable=True)
    # k-diffusion's wrappers carry them as tensors
    wrapped = MixtureDenoiser(sigma_min=torch.tensor(SIGMA_MIN, dtype=torch.float64), sigma_max=torch.tensor(SIGMA_MAX))
    assert torch.equal(sample_bespoke(wrapped, x, solver, disable=True), expected)
    guided = MixtureDenoiser(inner_model=wrapped)  # a CFG-style wrapper around one
    assert noise_range(guided, solver) == (SIGMA_MIN, SIGMA_MAX)
    with pytest.raises(ValueError, match=r"found no sigma_min and sigma_max: pass them as sample_bespoke\(\.\.\., "
                                         r"sigma_min="):
        sample_bespoke(MixtureDenoiser(), x, solver, disable=True)
    solver.metadata = {"sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX}
    assert torch.equal(sample_bespoke(MixtureDenoiser(), x, solver, disable=True), expected)
    assert noise_range(wrapped, solver, sigma_max=40.0) == (SIGMA_MIN, 40.0)  # an argument wins


def test_a_base_solver_converges_to_dopri5():
    x = noise(batch=8, seed=1) * SIGMA_MAX
    reference = solve_reference(edm_field(), x / SIGMA_MAX, rtol=1e-10, atol=1e-10)
    errors = []
    for nfe in (16, 64, 256):
        solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.RK4()).at(nfe=nfe)  # plain RK4, uniform grid
        out = sample_bespoke(MixtureDenoiser(), x, solver, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, disable=True)
        errors.append(float((out - reference).abs().max()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-4, errors
