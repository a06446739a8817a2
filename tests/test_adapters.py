"""Adapters fed the exact predictions of the Gaussian-mixture model return its exact velocity."""

import math

import pytest
import torch

import flowsolve
from flowsolve.models.gaussian_mixture import GaussianMixtureFlow
from flowsolve.paths import schedulers
from flowsolve.training.ground_truth import solve_reference

TIMES = [0.0, 1e-6, 1e-3, 0.1, 0.37, 0.5, 0.81, 0.999, 1 - 1e-6, 1.0]


def exact(scheduler):
    return GaussianMixtureFlow.random(dim=5, components=3, seed=2, scheduler=scheduler)


def states(n=7):
    return torch.randn(n, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def check(adapter, reference, times, atol=1e-9):
    x = states()
    for t in times:
        t = torch.tensor(t, dtype=torch.float64)
        got, want = adapter(t, x), reference(t, x)
        assert torch.isfinite(got).all(), f"non-finite at t={float(t)}"
        torch.testing.assert_close(got, want, rtol=1e-7, atol=atol, msg=f"t = {float(t)}")
        # per-sample times agree with the scalar call
        torch.testing.assert_close(adapter(t.expand(x.shape[0]), x), got)


@pytest.mark.parametrize("kind, scheduler", [("fm-ot", schedulers.FMOT()), ("fm-cs", schedulers.Cosine())])
def test_velocity_adapters(kind, scheduler):
    flow = exact(scheduler)
    check(flowsolve.adapt(lambda x, t: flow(t, x), kind), flow, TIMES)


def test_velocity_adapter_in_diffusion_time():
    flow = exact(schedulers.FMOT())
    model = lambda x, s: -flow(1 - s, x)  # noqa: E731 - a network trained data(s=0) -> noise(s=1)
    check(flowsolve.adapt(model, "fm-ot", time="diffusion"), flow, TIMES)


def test_eps_vp_in_score_sde_convention():
    flow = exact(schedulers.VP())
    eps_model = lambda x, s: flow.posterior_means(1 - s, x)[1]  # noqa: E731
    # exact up to the stopping time s = 1e-3 (beyond it the network is held at s = 1e-3)
    check(flowsolve.adapt(eps_model, "eps-vp"), flow, [t for t in TIMES if t <= 1 - 1e-3], atol=1e-8)


def past_the_end(x, data_at_end, end=1 - 1e-3):
    """The field past the network's last time: straight to its data estimate there."""
    return (data_at_end - x) / (1 - end)


def test_eps_vp_is_finite_at_the_data_end_where_sigma_prime_is_infinite():
    u = flowsolve.adapt(lambda x, s: torch.ones_like(x), "eps-vp")
    x = states()
    end = torch.tensor(1 - 1e-3, dtype=torch.float64)
    data = (x - schedulers.VP().sigma(end)) / schedulers.VP().alpha(end)  # x1_hat with eps_hat = 1
    for t in (1.0, 0.9995):
        at = u(torch.tensor(t, dtype=torch.float64), x)
        assert torch.isfinite(at).all()
        torch.testing.assert_close(at, past_the_end(x, data))
    torch.testing.assert_close(u.denoise_at_end(x), data)
    # one Euler step from the end is the final denoising
    torch.testing.assert_close(x + 1e-3 * u(torch.tensor(1.0, dtype=torch.float64), x), data)


@pytest.mark.parametrize("scheduler", [schedulers.FMOT(), schedulers.Cosine()], ids=lambda s: s.name)
def test_eps_adapter_is_finite_at_alpha_zero_and_exact_away_from_it(scheduler):
    flow = exact(scheduler)
    u = flowsolve.adapt(lambda x, t: flow.posterior_means(t, x)[1], "eps", scheduler=scheduler)
    check(u, flow, [t for t in TIMES if t >= 1e-3 and t < 1 - 1e-7], atol=1e-8)
    near_zero = u(torch.tensor(0.0, dtype=torch.float64), states())
    torch.testing.assert_close(near_zero, flow(torch.tensor(1e-3, dtype=torch.float64), states()))


@pytest.mark.parametrize("scheduler", [schedulers.FMOT(), schedulers.Cosine(), schedulers.VP()], ids=lambda s: s.name)
def test_data_prediction_is_finite_at_sigma_zero_and_exact_away_from_it(scheduler):
    flow = exact(scheduler)
    u = flowsolve.adapt(lambda x, t: flow.posterior_means(t, x)[0], "x-pred", scheduler=scheduler)
    check(u, flow, [t for t in TIMES if t <= 1 - 1e-3], atol=1e-8)
    at_one = u(torch.tensor(1.0, dtype=torch.float64), states())
    data = flow.posterior_means(torch.tensor(1 - 1e-3, dtype=torch.float64), states())[0]
    torch.testing.assert_close(at_one, past_the_end(states(), data))


@pytest.mark.parametrize("scheduler", [schedulers.Cosine(), schedulers.VP()], ids=lambda s: s.name)
def test_v_prediction(scheduler):
    flow = exact(scheduler)

    def v_model(x, t):
        t = t.reshape(-1, 1)
        data, noise = flow.posterior_means(t.reshape(-1), x)
        return scheduler.alpha(t) * noise - scheduler.sigma(t) * data

    # exact everywhere on the cosine path; on VP up to the stopping time t_max = 1 - 1e-3
    times = TIMES if scheduler.name == "cosine" else [t for t in TIMES if t <= 1 - 1e-3]
    check(flowsolve.adapt(v_model, "v-pred", scheduler=scheduler), flow, times, atol=1e-8)


def test_v_prediction_refuses_a_non_variance_preserving_scheduler():
    with pytest.raises(ValueError, match="variance-preserving"):
        flowsolve.adapt(lambda x, t: x, "v-pred", scheduler=schedulers.FMOT())


def test_edm_denoiser():
    flow = exact(schedulers.FMOT())

    def denoiser(x, sigma):  # exact D(x, sigma) of the mixture under x = x1 + sigma n
        t = 1 / (1 + sigma)
        return flow.posterior_means(t, x * t.reshape(-1, 1))[0]

    u = flowsolve.adapt(denoiser, "edm", sigma_min=1e-4, sigma_max=1e4)
    check(u, flow, [t for t in TIMES if 1e-4 <= t <= 1 - 1e-3], atol=1e-7)
    for t in (0.0, 1.0):
        assert torch.isfinite(u(torch.tensor(t, dtype=torch.float64), states())).all()


def test_unknown_kind_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown model adapter 'eps-ve'; registered: \[.*'eps-vp'.*'fm-ot'"):
        flowsolve.adapt(lambda x, t: x, "eps-ve")


def test_models_can_declare_their_adapter():
    flow = exact(schedulers.FMOT())

    class Declared:
        flowsolve_adapter = ("fm-ot", {})

        def __call__(self, x, t):
            return flow(t, x)

    check(flowsolve.adapt(Declared()), flow, [0.5])
    with pytest.raises(ValueError, match="no plugin recognises"):
        flowsolve.adapt(lambda x, t: x)


def test_classifier_free_guidance_batches_both_passes_and_counts():
    calls = []

    def model(x, t, label):
        calls.append(x.shape[0])
        return x * label.reshape(-1, 1).to(x.dtype)

    guided = flowsolve.ClassifierFreeGuidance(model, weight=2.0, condition=torch.full((4,), 3.0),
                                              null_condition=torch.ones(4))
    u = flowsolve.adapt(guided, "fm-ot")
    x = torch.randn(4, 2)
    torch.testing.assert_close(u(torch.tensor(0.5), x), (1 + 2.0) * 3 * x - 2.0 * x)
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=6)
    solver.sample(u, x)
    assert calls == [8] * 7 and guided.calls == 7 and guided.forward_passes == 14


@pytest.mark.parametrize(
    "source, target",
    [(schedulers.FMOT(), schedulers.Cosine()), (schedulers.Cosine(), schedulers.FMOT()),
     (schedulers.FMOT(), schedulers.VP()), (schedulers.Cosine(), schedulers.VP())],
    ids=lambda s: s.name,
)
def test_reschedule_gives_the_target_paths_exact_velocity(source, target):
    resched = flowsolve.reschedule(exact(source), source, target)
    check(resched, exact(target), [t for t in TIMES if t < 1 - 1e-7], atol=1e-9)


@pytest.mark.parametrize("target", [schedulers.Cosine(), schedulers.VP()], ids=lambda s: s.name)
def test_reschedule_reproduces_the_ground_truth_endpoint(target):
    import torchdiffeq

    source = schedulers.FMOT()
    flow = exact(source)
    x0 = states(32)
    resched = flowsolve.reschedule(flow, source, target)
    zero, one = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    # The target path starts at the source's state at t_0 (0 unless alpha_target(0) > 0, as for VP).
    t0 = resched.time(zero)
    grid = torch.stack([zero, t0, one]) if float(t0) > 0 else torch.stack([zero, one])
    along_source = torchdiffeq.odeint(flow, x0, grid, rtol=1e-10, atol=1e-10)
    start = resched.scale(zero) * along_source[-2]
    end = solve_reference(resched, start, rtol=1e-10, atol=1e-10) / resched.scale(one)
    torch.testing.assert_close(end, along_source[-1], rtol=1e-5, atol=1e-5)
    if target.name == "cosine":
        assert float(t0) == 0.0 and float(resched.scale(zero)) == 1.0


def test_scheduler_inverses_and_custom_scheduler():
    t = torch.linspace(0.02, 0.98, 13, dtype=torch.float64)
    quadratic = schedulers.Custom(lambda t: t**2, lambda t: 1 - t**2, name="quadratic")
    for scheduler in (schedulers.FMOT(), schedulers.Cosine(), schedulers.VP(beta_max=15.0), quadratic):
        torch.testing.assert_close(scheduler.snr_inverse(scheduler.snr(t)), t)
    torch.testing.assert_close(quadratic.d_alpha(t), 2 * t)
    torch.testing.assert_close(quadratic.d_sigma(t), -2 * t)
    assert schedulers.VP().is_variance_preserving() and not schedulers.FMOT().is_variance_preserving()
    torch.testing.assert_close(schedulers.Cosine().snr(t), torch.tan(math.pi / 2 * t))


def test_fingerprints_see_adapter_configuration_and_wrapped_callables():
    from flowsolve.core.fingerprint import model_fingerprint

    class Net(torch.nn.Linear):
        def forward(self, x, t):
            return super().forward(x)

    net = Net(5, 5)

    def fp(u):
        return model_fingerprint(u, (5,), torch.float32, torch.device("cpu"))

    variants = [flowsolve.adapt(net, "eps", scheduler=schedulers.VP()),
                flowsolve.adapt(net, "eps", scheduler=schedulers.Cosine()),
                flowsolve.adapt(net, "eps", scheduler=schedulers.VP(), time="diffusion"),
                flowsolve.adapt(lambda x, t: x, "fm-ot"), flowsolve.adapt(lambda x, t: 2 * x, "fm-ot"),
                flowsolve.reschedule(exact(schedulers.FMOT()), schedulers.FMOT(), schedulers.Cosine()),
                flowsolve.reschedule(GaussianMixtureFlow.random(5, 3, seed=7), schedulers.FMOT(), schedulers.Cosine())]
    prints = [fp(u) for u in variants]
    assert len(set(prints)) == len(prints)
    assert fp(flowsolve.adapt(net, "eps", scheduler=schedulers.VP())) == prints[0]


def test_guidance_conditions_are_shared_or_per_sample_and_fingerprinted():
    from flowsolve.core.fingerprint import model_fingerprint

    model = lambda x, t, c: x * c.reshape(-1, 1)  # noqa: E731
    one = flowsolve.ClassifierFreeGuidance(model, 1.0, torch.tensor([3.0]), torch.tensor([1.0]))
    torch.testing.assert_close(one(torch.ones(4, 2), torch.zeros(4)), torch.full((4, 2), 5.0))
    with pytest.raises(ValueError, match="condition has 3 rows for a batch of 4"):
        flowsolve.ClassifierFreeGuidance(model, 1.0, torch.ones(3), torch.ones(3))(torch.ones(4, 2), torch.zeros(4))
    fp = lambda g: model_fingerprint(flowsolve.adapt(g, "fm-ot"), (2,), torch.float32, torch.device("cpu"))  # noqa: E731
    assert fp(one) != fp(flowsolve.ClassifierFreeGuidance(model, 3.0, torch.tensor([3.0]), torch.tensor([1.0])))
    assert fp(one) != fp(flowsolve.ClassifierFreeGuidance(model, 1.0, torch.tensor([4.0]), torch.tensor([1.0])))


def test_v_prediction_on_vp_is_finite_at_the_data_end():
    u = flowsolve.adapt(lambda x, t: torch.ones_like(x), "v-pred", scheduler=schedulers.VP())
    at_one = u(torch.tensor(1.0, dtype=torch.float64), states())
    assert torch.isfinite(at_one).all()
    end = torch.tensor(1 - 1e-3, dtype=torch.float64)
    data = schedulers.VP().alpha(end) * states() - schedulers.VP().sigma(end)  # x1_hat = alpha x - sigma v, v = 1
    torch.testing.assert_close(at_one, past_the_end(states(), data))


def test_data_prediction_uses_a_path_that_ends_above_zero_noise_up_to_its_end():
    ends_noisy = schedulers.Custom(lambda t: 0.5 + 0.4 * t, lambda t: 1 - 0.8 * t, name="noisy-end")
    assert flowsolve.adapt(lambda x, t: x, "x-pred", scheduler=ends_noisy).time_range == (0.0, 1.0)
    assert flowsolve.adapt(lambda x, t: x, "x-pred", scheduler=schedulers.Cosine()).time_range == (0.0, 1 - 1e-3)


# -- the one prediction <-> velocity conversion, and the public Adapter ------------------------------
@pytest.mark.parametrize("scheduler", [schedulers.Cosine(), schedulers.VP()], ids=lambda s: s.name)
def test_every_prediction_type_gives_the_exact_velocity_and_posterior_means(scheduler):
    from flowsolve.paths.predictions import (
        PREDICTION_TYPES,
        predictions_from,
        velocity_from,
    )

    flow, x = exact(scheduler), states()
    t = torch.full((x.shape[0],), 0.37, dtype=torch.float64)
    data, noise = flow.posterior_means(t[0], x)
    column = lambda f: f(t).reshape(-1, 1)  # noqa: E731
    outputs = {"velocity": flow(t[0], x), "eps": noise, "x1": data,
               "v": column(scheduler.alpha) * noise - column(scheduler.sigma) * data}
    assert set(outputs) == set(PREDICTION_TYPES)
    for kind, out in outputs.items():
        torch.testing.assert_close(velocity_from(kind, out, x, t, scheduler), flow(t[0], x), msg=kind)
        for got, want in zip(predictions_from(kind, out, x, t, scheduler), (data, noise)):
            torch.testing.assert_close(got, want, msg=kind)
    with pytest.raises(flowsolve.FlowsolveError, match="unknown prediction type 'epsilon'"):
        velocity_from("epsilon", noise, x, t, scheduler)


def test_a_subclass_of_the_public_adapter_only_says_how_to_call_its_network():
    flow = exact(schedulers.VP())

    class TimestepEps(flowsolve.Adapter):  # a network called at an integer-like timestep, k-diffusion style
        kind = "timestep-eps"
        predicts = "eps"

        def network(self, x, t):
            return self.model(x, 999 * (1 - t))

    u = TimestepEps(lambda x, k: flow.posterior_means(1 - k[0] / 999, x)[1], schedulers.VP())
    check(u, flow, [0.1, 0.5, 0.9], atol=1e-8)
    data, noise = u.predictions(torch.tensor(0.5, dtype=torch.float64), states())
    torch.testing.assert_close(data, flow.posterior_means(torch.tensor(0.5, dtype=torch.float64), states())[0])
    with pytest.raises(TypeError, match="abstract"):
        type("Undeclared", (flowsolve.Adapter,), {})(lambda x, t: x, schedulers.VP())
