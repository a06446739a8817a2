"""Losses: the batched RMSE-Bound against a per-step loop, and RMSE <= RMSE-Bound when L_tau >= L_u."""

import pytest
import torch

import flowsolve
from flowsolve.conformance.problems import LinearSystem
from flowsolve.models.gaussian_mixture import GaussianMixtureFlow
from flowsolve.training.ground_truth import ground_truth
from flowsolve.training.losses import LTE, RMSE, RMSEBound, amplification
from flowsolve.training.metrics import per_sample_rms

from .solver_parameters import randomize_parameters


def test_amplification_is_the_product_of_later_step_constants():
    L = torch.tensor([1.5, 2.0, 3.0, 5.0], dtype=torch.float64)
    torch.testing.assert_close(amplification(L), torch.tensor([30.0, 15.0, 5.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("base", [flowsolve.Euler(), flowsolve.Midpoint(), flowsolve.RK3()], ids=repr)
def test_batched_bound_equals_a_loop_over_steps(base):
    flow = GaussianMixtureFlow.random(dim=6, components=3, seed=1)
    gt = ground_truth(flow, torch.randn(10, 6, dtype=torch.float64))
    solver = flowsolve.compose(flowsolve.ScaleTime(), base).at(nfe=4 * base.stages)
    randomize_parameters(solver, seed=5, spread=0.2)
    _, t, *_ = solver.nodes()
    t = t[solver.grid.start_index]
    L = solver.step_lipschitz(1.0).detach()
    bound = lte = 0.0
    for i in range(solver.n_steps):
        start = gt.at(t[i].expand(10))
        predicted = solver.step(i, start, flow)
        error = per_sample_rms(gt.at(t[i + 1].expand(10)) - predicted)
        bound = bound + torch.prod(L[i + 1 :]) * error
        lte = lte + error
    torch.testing.assert_close(RMSEBound(1.0)(solver, flow, gt).detach(), bound.mean().detach())
    torch.testing.assert_close(LTE()(solver, flow, gt).detach(), lte.mean().detach())


@pytest.mark.parametrize("seed", range(4))
def test_rmse_is_below_the_bound_when_L_tau_bounds_the_field(seed):
    problem = LinearSystem(dim=5, gain=1.5, seed=seed)
    field = problem.field("cpu")
    gt = ground_truth(field, torch.randn(32, 5, dtype=torch.float64), rtol=1e-10, atol=1e-10)
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=6)
    randomize_parameters(solver, seed=seed, spread=0.5)
    rmse = RMSE()(solver, field, gt)
    bound = RMSEBound(L_tau=problem.lipschitz)(solver, field, gt)
    assert rmse <= bound
    assert rmse > 0.05 * bound  # the comparison is not vacuous


def parameter_gradients(solver, backward) -> list:
    """The solver's parameter gradients after ``backward()`` (fresh, from zero)."""
    solver.zero_grad()
    backward()
    return [p.grad.clone() for p in solver.params.values()]


def test_checkpointed_rmse_has_the_same_gradient():
    flow = GaussianMixtureFlow.random(dim=6, components=3, seed=1)
    gt = ground_truth(flow, torch.randn(8, 6, dtype=torch.float64))
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=6)
    randomize_parameters(solver, seed=2)
    grads = [parameter_gradients(solver, lambda: loss(solver, flow, gt).backward())
             for loss in (RMSE(), RMSE(checkpoint=True))]
    for plain, checkpointed in zip(*grads):
        torch.testing.assert_close(plain, checkpointed)


@pytest.mark.parametrize("loss", [RMSE(), RMSEBound(), LTE()], ids=repr)
def test_every_loss_has_gradients_for_times_and_scales(loss):
    flow = GaussianMixtureFlow.random(dim=6, components=3, seed=1)
    gt = ground_truth(flow, torch.randn(8, 6))
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=6)
    loss(solver, flow, gt).backward()
    for name, p in solver.params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_scalar_time_fields_train_like_batched_ones():
    flow = GaussianMixtureFlow.random(dim=6, components=3, seed=1)
    gt = ground_truth(flow, torch.randn(8, 6, dtype=torch.float64))
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=6)
    randomize_parameters(solver, seed=3)
    fields = (flow, lambda t, x: flow(t, x))  # the lambda only gets 0-dim times
    grads = [parameter_gradients(solver, lambda: RMSEBound()(solver, field, gt).backward()) for field in fields]
    for batched, grouped in zip(*grads):
        torch.testing.assert_close(batched, grouped)


def test_L_tau_must_be_non_negative():
    with pytest.raises(ValueError, match="L_tau must be a finite non-negative number"):
        RMSEBound(L_tau=-1)


@pytest.mark.parametrize("loss", [RMSEBound(steps_per_batch=2), LTE(steps_per_batch=1)], ids=repr)
def test_step_batches_give_the_same_value_and_gradient(loss):
    flow = GaussianMixtureFlow.random(dim=6, components=3, seed=1)
    gt = ground_truth(flow, torch.randn(8, 6, dtype=torch.float64))
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=10)
    randomize_parameters(solver, seed=4)
    values, grads = {}, []
    for variant in (type(loss)(), loss):
        grads.append(parameter_gradients(solver, lambda: values.setdefault(variant, variant.backward(solver, flow, gt))))
    torch.testing.assert_close(values[type(loss)()], values[loss])
    for whole, batched in zip(*grads):
        torch.testing.assert_close(whole, batched)


def test_psnr_loss_is_minus_the_psnr_of_the_rollout():
    from flowsolve.training.losses import PSNRLoss
    from flowsolve.training.metrics import psnr

    flow = GaussianMixtureFlow.random(dim=6, components=3, seed=1)
    gt = ground_truth(flow, torch.randn(8, 6, dtype=torch.float64))
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=6)
    value = PSNRLoss()(solver, flow, gt)
    assert float(value.detach()) == pytest.approx(-psnr(solver.sample(flow, gt.x0), gt.x1), rel=1e-12)
    value.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in solver.params.values())


@pytest.mark.parametrize("loss", [RMSE(), RMSEBound(), LTE(), flowsolve.PSNRLoss()], ids=repr)
def test_losses_are_finite_with_finite_gradients_at_zero_error(loss):
    # u = 0: the identity-initialised solver is exact, so every error is exactly 0, where
    # sqrt (and log) have no finite derivative.
    field = flowsolve.batched_time(lambda t, x: torch.zeros_like(x))
    gt = ground_truth(field, torch.randn(4, 2, dtype=torch.float64))
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=4)
    value = loss(solver, field, gt)
    assert torch.isfinite(value)
    value.backward()
    for name, p in solver.params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_per_sample_rms_has_a_zero_gradient_at_zero():
    difference = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    value = per_sample_rms(difference)
    value.sum().backward()
    torch.testing.assert_close(value.detach(), torch.tensor([0.0, 12.5**0.5], dtype=torch.float64))
    torch.testing.assert_close(difference.grad[0], torch.zeros(2, dtype=torch.float64))
    assert torch.isfinite(difference.grad).all()


def test_a_custom_loss_without_a_name_is_named_after_its_class():
    from flowsolve.training.losses import Loss

    class MyFinalError(Loss):
        def __call__(self, solver, u, gt):
            return RMSE()(solver, u, gt)

    class SubRMSE(RMSE):  # behaves differently from RMSE, so it must not share RMSE's name
        pass

    assert MyFinalError().name == "my-final-error"
    assert MyFinalError().to_dict() == {"name": "my-final-error"}
    assert SubRMSE().name == "sub-rmse" and RMSE().name == "rmse"
    assert flowsolve.PSNRLoss().name == "psnr"
