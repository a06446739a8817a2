"""Driving a solver from outside (solver.stepper): the same rollout as sample, bit for bit; the
evaluation times; sample's callback and its data estimate; the errors."""

import pytest
import torch

import flowsolve
from flowsolve.core.field import NonFiniteVelocityError
from flowsolve.models.gaussian_mixture import GaussianMixtureFlow
from flowsolve.paths.schedulers import Cosine
from flowsolve.solvers.guidance_range import GuidanceRangeSolver
from flowsolve.solvers.stepping import Stepper, data_estimator
from tests.solver_parameters import randomize_parameters
from tests.test_conditioning import guided_field

FLOW = GaussianMixtureFlow.random(dim=4, components=3, seed=11, spread=1.5)
LABELS = torch.tensor([0, 1, 2, 0, 1, 2])
SCALES = torch.tensor([0.0, 0.7, 2.0, 3.3, 4.0, 5.5], dtype=torch.float64)  # 5.5: beyond the last anchor


def perturb(solver, seed: int, spread: float = 0.1) -> None:
    """Move every trained parameter by a relative ``spread`` (a fitted-looking, non-initial solver)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in solver.params.values():
            if p.requires_grad:
                p.mul_(1 + spread * (torch.rand(p.shape, generator=generator, dtype=p.dtype) * 2 - 1))


def scale_time_midpoint():
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=8)
    randomize_parameters(solver, seed=1)
    return solver


def time_only_rk4():
    solver = flowsolve.compose(flowsolve.TimeOnly(), flowsolve.RK4()).at(nfe=8)
    randomize_parameters(solver, seed=2)
    return solver


def time_only_heun():
    solver = flowsolve.compose(flowsolve.TimeOnly(), flowsolve.Heun()).at(nfe=6)
    randomize_parameters(solver, seed=3)
    return solver


def ab2():
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.AdamsBashforth(2)).at(nfe=7)
    randomize_parameters(solver, seed=4)
    return solver


def ab3():
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.AdamsBashforth(3)).at(nfe=6)
    randomize_parameters(solver, seed=5)
    return solver


def non_stationary():
    solver = flowsolve.NonStationary().at(6, init="dpm-solver++(2m)", model=FLOW)
    perturb(solver, seed=6)
    return solver


def guidance_range():
    solver = flowsolve.GuidanceRange(anchors=(0.0, 2.0, 4.0)).at(4, init="dpm-solver++(2m)", model=FLOW)
    for k in range(3):  # each anchor its own solver
        single = flowsolve.NonStationary().at(4, init="dpm-solver++(2m)", model=FLOW)
        perturb(single, seed=7 + k)
        solver.set_anchor(k, single)
    return solver


STEADY = [scale_time_midpoint, time_only_rk4, time_only_heun, ab2, ab3, non_stationary]
FAMILIES = [*STEADY, guidance_range]
DTYPES = [torch.float64, torch.float32]


def noise(dtype, batch=6, seed=0):
    return torch.randn(batch, FLOW.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def field_and_guidance(solver):
    """The field sample runs on, and the guidance= a stepper needs to match it."""
    if isinstance(solver, GuidanceRangeSolver):
        u, _, _ = guided_field()
        return u.bind({"labels": LABELS, "guidance": SCALES}), SCALES
    return FLOW, None


def step_by_hand(solver, u, x0, guidance=None):
    """Drive a stepper with ``u``; returns the result and the (index, time, state) of every evaluation."""
    stepper = solver.stepper(x0, guidance)
    seen = []
    while not stepper.done:
        assert stepper.nfe == solver.nfe
        seen.append((stepper.index, stepper.time, stepper.state))
        stepper.step(u(stepper.time, stepper.state))
    return stepper.result, seen


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("make", FAMILIES, ids=lambda f: f.__name__)
def test_stepping_by_hand_is_sample_bit_for_bit(make, dtype):
    solver = make()
    u, guidance = field_and_guidance(solver)
    x0 = noise(dtype)
    expected = solver.sample(u, x0)
    result, seen = step_by_hand(solver, u, x0, guidance)
    assert torch.equal(result, expected)
    assert [index for index, _, _ in seen] == list(range(solver.nfe))
    assert result.dtype == dtype and not result.requires_grad
    # A different velocity at one evaluation changes the result (the comparison can fail).
    stepper = solver.stepper(x0, guidance)
    while not stepper.done:
        velocity = u(stepper.time, stepper.state)
        stepper.step(velocity * 1.001 if stepper.index == solver.nfe // 2 else velocity)
    assert not torch.equal(stepper.result, expected)


@pytest.mark.parametrize("make", STEADY, ids=lambda f: f.__name__)
def test_the_times_seen_are_the_evaluation_times(make):
    solver = make()
    times = solver.evaluation_times()
    assert times.shape == (solver.nfe,) and times.dtype == torch.float64
    for dtype in DTYPES:
        _, seen = step_by_hand(solver, FLOW, noise(dtype))
        assert all(t.dim() == 0 and t.dtype == dtype for _, t, _ in seen)
        assert torch.equal(torch.stack([t for _, t, _ in seen]), times.to(dtype))
    assert bool((times[1:] >= times[:-1]).all()) or make is non_stationary


def test_the_evaluation_times_of_a_uniform_time_only_rk4():
    solver = flowsolve.compose(flowsolve.TimeOnly(), flowsolve.RK4()).at(nfe=8)
    assert solver.evaluation_times().tolist() == [0.0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0]
    assert flowsolve.NonStationary().at(4).evaluation_times().tolist() == [0.0, 0.25, 0.5, 0.75]  # Midpoint


def test_guidance_range_times_are_per_sample_and_follow_the_scale():
    solver = guidance_range()
    u, _ = field_and_guidance(solver)
    _, seen = step_by_hand(solver, u, noise(torch.float64), SCALES)
    times = torch.stack([t for _, t, _ in seen], dim=1)  # (batch, nfe)
    assert times.shape == (6, solver.nfe)
    for i, w in enumerate(SCALES.tolist()):
        assert torch.equal(times[i], solver.evaluation_times(guidance=w))
    assert not torch.equal(times[0], times[3])  # different scales, different times
    with pytest.raises(ValueError, match="depend on the guidance scale"):
        solver.evaluation_times()
    with pytest.raises(ValueError, match="depend on the guidance scale"):
        solver.stepper(noise(torch.float64))
    with pytest.raises(ValueError, match=r"a number or a \(6,\) tensor"):
        solver.stepper(noise(torch.float64), guidance=SCALES[:3])
    one_scale = solver.stepper(noise(torch.float64), guidance=2.0)
    assert torch.equal(one_scale.time, torch.zeros(6, dtype=torch.float64) + solver.evaluation_times(guidance=2.0)[0])


def test_other_families_take_no_guidance():
    with pytest.raises(ValueError, match="takes no guidance scales"):
        scale_time_midpoint().stepper(noise(torch.float64), guidance=2.0)


class _MixtureWithScales:
    """The exact mixture flow, carrying per-sample guidance scales as a bound field does (so a
    guidance-range solver samples it with per-sample times)."""

    accepts_batched_time = True

    def __init__(self, flow, scales):
        self.flow, self.scheduler, self.bound_conditions = flow, flow.scheduler, {"guidance": scales}

    def __call__(self, t, x):
        return self.flow(t, x)


@pytest.mark.parametrize("scheduler", [None, Cosine()], ids=["fm-ot", "cosine"])
@pytest.mark.parametrize("make", FAMILIES, ids=lambda f: f.__name__)
def test_callbacks_see_every_evaluation_and_the_exact_data_estimate(make, scheduler):
    flow = GaussianMixtureFlow(FLOW.means, FLOW.stds, FLOW.log_weights.exp(), scheduler)
    solver = make()
    u = _MixtureWithScales(flow, SCALES) if isinstance(solver, GuidanceRangeSolver) else flow
    x0 = noise(torch.float64)
    calls = []
    out = solver.sample(u, x0, callback=lambda i, t, x, denoised: calls.append((i, t, x, denoised)))
    result, seen = step_by_hand(solver, flow, x0, SCALES if isinstance(solver, GuidanceRangeSolver) else None)
    assert torch.equal(out, result) and len(calls) == solver.nfe
    checked = 0
    for (i, t, x, denoised), (index, time, state) in zip(calls, seen):
        assert i == index and torch.equal(t, time) and torch.equal(x, state)
        away = (t > 0.02) & (t < 0.98)  # the cosine path's coefficients are singular at the ends
        if not bool(away.any()):
            continue
        exact = flow.posterior_means(t, x)[0]
        keep = away.expand(x.shape[0]) if away.dim() == 0 else away
        torch.testing.assert_close(denoised[keep], exact[keep], rtol=1e-9, atol=1e-9)
        checked += 1
    assert checked >= solver.nfe // 2


def test_callbacks_get_no_estimate_without_a_scheduler():
    calls = []
    scale_time_midpoint().sample(lambda t, x: -x, noise(torch.float64), callback=lambda *args: calls.append(args[3]))
    assert calls == [None] * 8


def test_the_estimate_of_an_adapter_is_taken_inside_its_time_range():
    means, stds = FLOW.means, FLOW.stds

    def denoiser(x, sigma):  # the exact EDM denoiser of a single-component mixture
        v = (stds[0] ** 2 / (stds[0] ** 2 + sigma**2)).reshape(-1, 1)
        return means[0] + v * (x - means[0])

    u = flowsolve.adapt(denoiser, "edm", sigma_min=0.01, sigma_max=20.0)
    estimate = data_estimator(u)
    x = noise(torch.float64)
    for t in (0.0, 0.3, 1.0):  # 0 and 1 lie outside [1/21, 1/1.01]: the network is held there
        time = torch.tensor(t, dtype=torch.float64)
        held = min(max(t, 1 / 21), 1 / 1.01)
        expected = denoiser(x / held, torch.full((6,), (1 - held) / held, dtype=torch.float64))
        torch.testing.assert_close(estimate(time, x, u(time, x)), expected, rtol=1e-10, atol=1e-10)


def test_errors_name_the_evaluation_and_leave_the_stepper_usable():
    solver = scale_time_midpoint()
    x0 = noise(torch.float64)
    stepper = solver.stepper(x0)
    assert isinstance(stepper, Stepper)
    with pytest.raises(ValueError, match="not done: 0 of 8"):
        stepper.result
    with pytest.raises(ValueError, match=r"evaluation 0 of 8 \(in step 0, stage 0\) has shape \(6, 3\)"):
        stepper.step(torch.zeros(6, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="dtype torch.float32"):
        stepper.step(torch.zeros(6, 4))
    with pytest.raises(ValueError, match="is on meta"):
        stepper.step(torch.zeros(6, 4, dtype=torch.float64, device="meta"))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        stepper.step(stepper.state.numpy())
    for _ in range(3):
        stepper.step(FLOW(stepper.time, stepper.state))
    bad = FLOW(stepper.time, stepper.state)
    bad[2, 1] = float("nan")
    with pytest.raises(NonFiniteVelocityError, match=r"evaluation 3 of 8 \(in step 1, stage 1\)"):
        stepper.step(bad)
    assert stepper.index == 3  # nothing was taken: go on with the right velocity
    while not stepper.done:
        stepper.step(FLOW(stepper.time, stepper.state))
    assert torch.equal(stepper.result, solver.sample(FLOW, x0)) and torch.equal(stepper.state, stepper.result)
    with pytest.raises(ValueError, match="stepped past the end: all 8 evaluations"):
        stepper.step(torch.zeros_like(x0))
    with pytest.raises(ValueError, match="the stepper is done"):
        stepper.time


def test_a_stepper_checks_its_noise_and_can_skip_the_finiteness_check():
    solver = non_stationary()
    with pytest.raises(TypeError, match="floating-point"):
        solver.stepper(torch.zeros(2, 4, dtype=torch.long))
    stepper = solver.stepper(noise(torch.float64), check_finite=False)
    stepper.step(torch.full((6, 4), float("inf"), dtype=torch.float64))
    assert stepper.index == 1


def test_a_stepper_keeps_no_autograd_graph():
    solver = scale_time_midpoint()
    with torch.enable_grad():
        stepper = solver.stepper(noise(torch.float64))
        while not stepper.done:
            stepper.step(FLOW(stepper.time, stepper.state))
    assert not stepper.result.requires_grad


@pytest.mark.parametrize("make", [scale_time_midpoint, non_stationary], ids=lambda f: f.__name__)
def test_checkpointed_sampling_gives_the_same_gradients(make):
    solver = make()
    x0 = noise(torch.float64)
    gradients = []
    for checkpoint in (False, True):
        solver.zero_grad()
        solver.sample(FLOW, x0, differentiable=True, checkpoint_steps=checkpoint).square().sum().backward()
        gradients.append([p.grad.clone() for p in solver.parameters() if p.grad is not None])
    assert gradients[0]
    for plain, recomputed in zip(*gradients):
        torch.testing.assert_close(plain, recomputed, rtol=1e-12, atol=1e-12)
