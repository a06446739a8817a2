"""Adams--Bashforth bases: the textbook method at the identity, order kept under transforms,
step = rollout, the multistep error amplification, files and fitting."""

import math

import pytest
import torch

import flowsolve
from flowsolve.conformance.problems import LinearSystem
from flowsolve.training.losses import RMSE, RMSEBound, amplification
from tests.solver_parameters import randomize_parameters


def nonlinear_field(t, x):
    return torch.sin(x.flip(-1)) * (1 + t) - 0.5 * x


def adams_bashforth_reference(u, x0, nfe, order):
    """Plain AB on a uniform t grid, written out: AB2 starts with Euler, AB3 with Heun then AB2."""
    n = nfe - (1 if order == 3 else 0)
    h, x, slopes = 1.0 / n, x0, []
    for i in range(n):
        t = torch.tensor(i * h, dtype=torch.float64)
        slopes.append(u(t, x))
        if order == 3 and i == 0:
            x = x + h / 2 * (slopes[0] + u(t + h, x + h * slopes[0]))
        elif order == 2 and i >= 1 or order == 3 and i == 1:
            x = x + h * (1.5 * slopes[i] - 0.5 * slopes[i - 1])
        elif order == 3:
            x = x + h * (23 / 12 * slopes[i] - 16 / 12 * slopes[i - 1] + 5 / 12 * slopes[i - 2])
        else:
            x = x + h * slopes[i]
    return x


@pytest.mark.parametrize("order", [2, 3])
def test_identity_transform_is_the_textbook_method_and_spends_its_nfe(order):
    calls = []

    def counted(t, x):
        calls.append(float(t))
        return nonlinear_field(t, x)

    x0 = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.AdamsBashforth(order)).at(nfe=9)
    torch.testing.assert_close(solver.sample(counted, x0), adams_bashforth_reference(nonlinear_field, x0, 9, order),
                               rtol=1e-13, atol=1e-13)
    assert len(calls) == 9 == solver.nfe and solver.n_steps == (9 if order == 2 else 8)
    assert solver.num_params == 4 * solver.n_steps - 1


def observed_order(sampler, problem, steps=(16, 32, 64)):
    instance = problem.build("cpu")
    errors = [float((sampler(instance.field, instance.x0, n) - instance.x1).abs().max()) for n in steps]
    return math.log(errors[0] / errors[-1]) / math.log(steps[-1] / steps[0])


@pytest.mark.parametrize("order", [2, 3])
def test_order_is_kept_under_a_smooth_scale_time_transform(order):
    base = flowsolve.AdamsBashforth(order)
    problem = LinearSystem(dim=3, gain=1.5, seed=4)

    def transformed(u, x0, n):
        solver = flowsolve.compose(flowsolve.ScaleTime(), base).at(nfe=base.evaluations(n))
        solver.set_transform(lambda r: (torch.exp(r) - 1) / (math.e - 1), lambda r: 1 + 0.5 * torch.sin(math.pi * r))
        return solver.sample(u, x0)

    plain = lambda u, x0, n: base.sample(u, x0, base.evaluations(n))  # noqa: E731
    assert observed_order(plain, problem) == pytest.approx(order, abs=0.15)
    assert observed_order(transformed, problem) == pytest.approx(order, abs=0.15)


@pytest.mark.parametrize("order", [2, 3])
def test_a_step_from_the_solvers_own_states_continues_its_rollout(order):
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.AdamsBashforth(order)).at(nfe=7)
    randomize_parameters(solver, seed=1)
    x0 = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    states = solver.sample(nonlinear_field, x0, return_intermediates=True).x
    for i in range(solver.n_steps):
        previous = [states[max(i - j, 0)] for j in range(1, order)]
        torch.testing.assert_close(solver.step(i, states[i], nonlinear_field, previous=previous), states[i + 1],
                                   rtol=1e-12, atol=1e-12)
    batched = torch.arange(solver.n_steps).repeat_interleave(3)
    previous = [states[(batched - j).clamp_min(0), torch.arange(3).repeat(solver.n_steps)] for j in range(1, order)]
    start = states[batched, torch.arange(3).repeat(solver.n_steps)]
    torch.testing.assert_close(solver.step(batched, start, nonlinear_field, previous=previous),
                               states[1:].reshape(-1, 2), rtol=1e-12, atol=1e-12)


def test_ab1_amplification_is_lemma_d2():
    euler = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Euler()).at(nfe=6)
    ab1 = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.AdamsBashforth(1)).at(nfe=6)
    randomize_parameters(euler, seed=5)
    ab1.load_state_dict(euler.state_dict())
    torch.testing.assert_close(ab1.error_amplification(1.3), amplification(euler.step_lipschitz(1.3)), rtol=1e-12, atol=0)


@pytest.mark.parametrize("order", [2, 3])
def test_rmse_is_below_the_multistep_rmse_bound(order):
    problem = LinearSystem(dim=3, gain=2.0, seed=7)
    for seed in range(3):
        solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.AdamsBashforth(order)).at(nfe=6)
        randomize_parameters(solver, seed=seed)
        x0 = problem.initial_state(8, "cpu")
        truth = flowsolve.ground_truth(problem.field("cpu"), x0, rtol=1e-11, atol=1e-11, max_step=0.01)
        with torch.no_grad():
            rmse, bound = float(RMSE()(solver, problem.field("cpu"), truth)), float(
                RMSEBound(L_tau=problem.lipschitz)(solver, problem.field("cpu"), truth))
        assert 0 < rmse <= bound * (1 + 1e-9) + 1e-7


def test_save_load_and_fit(tmp_path):
    flow = flowsolve.GaussianMixtureFlow.random(4, 3, seed=0)
    family = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.AdamsBashforth(3))
    solver = family.fit(flow, nfe=5, iterations=40, train_trajectories=128, val_trajectories=64, validate_every=20,
                        progress=False, lr=1e-2)
    assert solver.metadata["validation"]["rmse"] < solver.metadata["history"][0]["val_rmse"]
    solver.save(tmp_path / "ab3.pt")
    loaded = flowsolve.load(tmp_path / "ab3.pt")
    assert isinstance(loaded, flowsolve.MultistepSolver) and loaded.base == flowsolve.AdamsBashforth(3)
    x0 = torch.randn(4, 4)
    assert torch.equal(loaded.sample(flow, x0), solver.sample(flow, x0))


def test_bad_nfe_and_missing_history_are_explained():
    with pytest.raises(ValueError, match="ab3 needs nfe >= 2"):
        flowsolve.AdamsBashforth(3).n_steps(1)
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.AdamsBashforth(2)).at(nfe=4)
    with pytest.raises(ValueError, match="ab2 step 2 needs the states at the 1 previous step points"):
        solver.step(2, torch.zeros(1, 2, dtype=torch.float64), nonlinear_field)
    with pytest.raises(NotImplementedError, match="error_amplification"):
        solver.step_lipschitz()


def test_checkpointed_rollout_gives_the_same_gradients():
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.AdamsBashforth(3)).at(nfe=6)
    randomize_parameters(solver, seed=2)
    x0 = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    gradients = []
    for checkpoint in (False, True):
        solver.zero_grad()
        solver.sample(nonlinear_field, x0, differentiable=True, checkpoint_steps=checkpoint).square().sum().backward()
        gradients.append([p.grad.clone() for p in solver.parameters()])
    for plain, recomputed in zip(*gradients):
        torch.testing.assert_close(plain, recomputed, rtol=1e-12, atol=1e-12)


def test_ab3_single_heun_step_learns_the_end_node_like_heun():
    time = lambda r: (torch.exp(r) - 1) / (math.e - 1)  # noqa: E731
    scale = lambda r: 1 + 0.5 * torch.sin(math.pi * r)  # noqa: E731
    ab3 = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.AdamsBashforth(3)).at(nfe=2)
    heun = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Heun()).at(nfe=2)
    for solver in (ab3, heun):
        solver.set_transform(time, scale)
    x0 = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ab3.sample(nonlinear_field, x0), heun.sample(nonlinear_field, x0), rtol=1e-13, atol=1e-13)
    assert ab3.num_params == heun.num_params == 5


@pytest.mark.parametrize("order", [2, 3])
def test_adjoint_amplification_equals_the_forward_recurrence(order):
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.AdamsBashforth(order)).at(nfe=9)
    randomize_parameters(solver, seed=6)
    _, dt, s, ds = (v.detach() for v in solver.node_values())
    lipschitz = ds.abs() / s + dt * 1.7
    beta = solver.base.step_coefficients(solver.n_steps)[0].abs()
    n, h = solver.n_steps, solver.step_size
    expected = []
    for start in range(1, n + 1):  # inject a unit error at x_start and run the bound forward
        errors = {start: 1.0}
        for k in range(start, n):
            errors[k + 1] = errors[k] + sum(h * float(beta[k, j]) * float(lipschitz[k - j]) * errors[k - j]
                                            for j in range(order) if k - j >= start)
        expected.append(errors[n] * float(s[start] / s[n]))
    torch.testing.assert_close(solver.error_amplification(1.7).detach(), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-12, atol=0)


def test_ab3_second_step_needs_one_previous_state():
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.AdamsBashforth(3)).at(nfe=6)
    states = solver.sample(nonlinear_field, torch.ones(2, 2, dtype=torch.float64), return_intermediates=True).x
    torch.testing.assert_close(solver.step(1, states[1], nonlinear_field, previous=[states[0]]), states[2],
                               rtol=1e-12, atol=1e-12)
