"""Checks of solvers outside the Runge--Kutta x transform mould, with the contracts they declare.

- Adams--Bashforth bases: their coefficients meet the linear multistep order conditions exactly
  (and no more), in place of the Butcher-tableau checks; the empirical order, contracts and the
  parametric checks run as for any base.
- Non-stationary families: the start reproduces the family's base exactly; sampler contracts;
  gradients through the rollout. Order consistency is *not declared* (every step has its own
  coefficients, so more steps need not converge): reported as such, never silently dropped.
"""

from __future__ import annotations

from fractions import Fraction

import torch

from flowsolve.conformance.check import Check, CheckFailed, Outcome
from flowsolve.conformance.contract_checks import (
    Sampler,
    contract_checks,
    gradient_check,
)
from flowsolve.conformance.order_checks import max_error
from flowsolve.conformance.parametric_checks import perturb_parameters
from flowsolve.conformance.problems import SEEDS, noise, smooth_fields
from flowsolve.conformance.profiles import Effort, check_property
from flowsolve.conformance.profiles import strategies as st
from flowsolve.core.errors import FlowsolveValueError
from flowsolve.solvers.family_base import Family

START_TOLERANCE = 1e-11


def multistep_checks(base) -> list[Check]:
    return [Check(f"multistep[{base.name}]", "Adams-Bashforth coefficients meet the order conditions exactly, "
                  "up to the declared order and not beyond", lambda: _multistep_order(base))]


def _multistep_order(base) -> Outcome:
    beta = base.coefficients

    def holds(q: int) -> bool:  # exact on x(t) = t^q with unit steps: sum_j beta_j q (-j)^(q-1) = 1
        return sum((b * q * Fraction(-j) ** (q - 1) for j, b in enumerate(beta)), Fraction(0)) == 1

    achieved = 0
    while holds(achieved + 1):
        achieved += 1
    if achieved != base.order:
        raise CheckFailed(f"{base.name}: order conditions hold through order {achieved}, declared {base.order}")
    start = "Heun first step, then AB2" if base.startup_evaluations else "Euler first step"
    return Outcome.passed(f"order {achieved} exactly; start-up: {start} ({base.evaluations(4)} NFE for 4 steps)")


def family_checks(family: Family, effort: Effort, device) -> list[Check]:
    """The checks ``family`` declares in ``conformance_checks`` (a family with a ``base`` it starts
    from); order consistency, where not declared, is reported as such."""
    base, label = family.base, family.label

    def sample(u, x0, steps):
        solver = family.at(base.evaluations(steps))
        perturb_parameters(solver, seed=steps, spread=0.3)
        return solver.to(device).sample(u, x0)

    groups = {
        "start": lambda: [Check(f"start[{label}]", "the initial solver is its base solver exactly",
                                lambda: _start(family, effort, device))],
        "contracts": lambda: contract_checks(Sampler(label, base.evaluations, sample), effort, device),
        "gradients": lambda: [gradient_check(None, base, effort, device, family=family)],
        "order-consistency": lambda: [Check(
            f"order-consistency[{label}]", "more steps converge to the exact solution at the base's order",
            lambda: Outcome.skipped(
                "not declared: a non-stationary solver has its own coefficients for every step, so it is not "
                "order-consistent by construction (only its start is, being the base solver)"))],
    }
    unknown = sorted(set(family.conformance_checks) - set(groups))
    if unknown:
        raise FlowsolveValueError(f"{type(family).__name__}.conformance_checks names {unknown}, which the conformance suite "
                         f"does not know for this family; known: {sorted(groups)}")
    return [check for name in family.conformance_checks for check in groups[name]()]


nonstationary_checks = family_checks  # the former name


def _start(family, effort, device) -> Outcome:
    base = family.base

    def trial(drawn):
        field, steps, seed = drawn
        nfe = base.evaluations(steps)
        x0 = noise((3, 2), seed, torch.float64, device)
        difference = max_error(family.at(nfe).to(device).sample(field, x0), base.sample(field, x0, nfe))
        if not difference <= START_TOLERANCE:
            raise CheckFailed(f"{family.label} at nfe={nfe} differs from {base.name} by {difference:.3g} on {field!r}")
        return difference

    differences = check_property(st.tuples(smooth_fields(), st.integers(1, 6), SEEDS), trial, examples=4, effort=effort)
    return Outcome.passed(f"max difference {max(differences):.1e} (tolerance {START_TOLERANCE:g})")
