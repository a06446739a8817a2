"""The Lipschitz constants of a parametric solver's steps (appendix D) and the RMSE bound they give.

- lipschitz: ``step_lipschitz(L_tau)`` bounds the observed ratios ``|step(x) - step(y)| / |x - y|``
  on linear fields ``u = M x`` whose constant ``L_tau = ||M||_2`` is known.
- rmse-bound: ``RMSE <= RMSE-Bound`` there (:class:`flowsolve.RMSE`, :class:`flowsolve.RMSEBound`
  against :func:`flowsolve.ground_truth`) when ``L_tau >= ||M||_2``.

Parameters are perturbed away from the identity by a drawn amount, so non-trivial transforms are covered.
"""

from __future__ import annotations

import torch

from flowsolve.conformance.check import Check, CheckFailed, Outcome
from flowsolve.conformance.parametric_checks import pairing_label, perturb_parameters
from flowsolve.conformance.problems import SEEDS, bounded, linear_systems
from flowsolve.conformance.profiles import Effort, check_property
from flowsolve.conformance.profiles import strategies as st
from flowsolve.methods.base import BaseMethod
from flowsolve.solvers.family import compose
from flowsolve.solvers.transforms import Transform
from flowsolve.training.ground_truth import ground_truth
from flowsolve.training.losses import RMSE, RMSEBound

# Relative slack on the inequalities (RMSE <= bound, ratio <= L_i): float64 round-off only.
BOUND_SLACK = 1e-9
# Absolute slack on RMSE <= bound: the bound reads the ground truth between its knots (cubic
# Hermite, knots <= 0.01 apart, measured error <= 3e-9 on these fields).
GROUND_TRUTH_SLACK = 1e-7


def lipschitz_checks(transform: Transform, base: BaseMethod, effort: Effort, device) -> list[Check]:
    label = pairing_label(transform, base)
    return [
        Check(f"lipschitz[{label}]", "step_lipschitz(L_tau) bounds observed step ratios on linear fields",
              lambda: _lipschitz(transform, base, effort, device)),
        Check(f"rmse-bound[{label}]", "RMSE <= RMSE-Bound when L_tau bounds the field's Lipschitz constant",
              lambda: _rmse_below_bound(transform, base, effort, device)),
    ]


def _perturbed_solver(transform, base, steps, seed, spread, device):
    solver = compose(transform, base).at(base.evaluations(steps))
    perturb_parameters(solver, seed, spread)
    return solver.to(device)


def _lipschitz(transform, base, effort, device) -> Outcome:
    if "step-lipschitz" not in base.conformance_checks:
        return Outcome.skipped(f"{base.name} steps map several states, so there is no one-step constant; its "
                               "RMSE-Bound weights (error_amplification) are checked by rmse-bound[...]")

    def trial(drawn):
        problem, steps, seed, spread = drawn
        solver = _perturbed_solver(transform, base, steps, seed, spread, device)
        field = problem.field(device)
        L_tau = problem.lipschitz
        bounds = solver.step_lipschitz(L_tau).detach().cpu()
        x = problem.initial_state(32, device, seed_offset=2)
        y = x + 0.1 * problem.initial_state(32, device, seed_offset=3)
        worst = 0.0
        for i in range(solver.n_steps):
            with torch.no_grad():
                gap = (solver.step(i, x, field) - solver.step(i, y, field)).norm(dim=1)
            ratio = float((gap / (x - y).norm(dim=1)).max())
            if not ratio <= float(bounds[i]) * (1 + BOUND_SLACK):
                raise CheckFailed(
                    f"step {i}: observed |step(x) - step(y)| / |x - y| = {ratio:.6g} exceeds step_lipschitz(L_tau="
                    f"{L_tau:.4g})[{i}] = {float(bounds[i]):.6g} with {pairing_label(transform, base)} (steps={steps}, "
                    f"parameters perturbed by {spread:.3g}, seed {seed}) on {problem!r}"
                )
            worst = max(worst, ratio / float(bounds[i]))
        return worst

    strategy = st.tuples(linear_systems(3, 5, 3.0), st.integers(1, 5), SEEDS, bounded(0.0, 0.6))
    ratios = check_property(strategy, trial, examples=6, effort=effort)
    return Outcome.passed(f"observed ratio / bound at most {max(ratios):.3f} over {len(ratios)} draws (must be <= 1)")


def _rmse_below_bound(transform, base, effort, device) -> Outcome:
    def trial(drawn):
        problem, steps, seed, spread, slack = drawn
        solver = _perturbed_solver(transform, base, steps, seed, spread, device)
        field = problem.field(device)
        L_tau = problem.lipschitz * slack
        x0 = problem.initial_state(8, device)
        truth = ground_truth(field, x0, rtol=1e-11, atol=1e-11, max_step=0.01)
        with torch.no_grad():
            rmse = float(RMSE()(solver, field, truth))
            bound = float(RMSEBound(L_tau=L_tau)(solver, field, truth))
        if not rmse <= bound * (1 + BOUND_SLACK) + GROUND_TRUTH_SLACK:
            raise CheckFailed(
                f"RMSE {rmse:.6g} exceeds RMSE-Bound {bound:.6g} with L_tau = {L_tau:.4g} >= ||M||_2 = "
                f"{problem.lipschitz:.4g} for {pairing_label(transform, base)} (steps={steps}, parameters perturbed by "
                f"{spread:.3g}, seed {seed}) on {problem!r}"
            )
        return rmse / bound if bound > 0 else 0.0

    strategy = st.tuples(linear_systems(2, 4, 2.0), st.integers(1, 4), SEEDS, bounded(0.0, 0.6), bounded(1.0, 2.0))
    ratios = check_property(strategy, trial, examples=3, effort=effort)
    return Outcome.passed(f"RMSE / RMSE-Bound at most {max(ratios):.3f} over {len(ratios)} draws (must be <= 1)")
