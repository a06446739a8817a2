"""Which checks run for which subject.

- base solver (or tableau): tableau algebra, empirical order on every problem, sampler
  contracts; then as the base of ``ScaleTime`` the parametric checks (identity, consistency,
  Lipschitz bound, RMSE bound, contracts, gradients), and identity and consistency with
  ``TimeOnly`` and ``ScaleOnly``.
- transform: boundary conditions; the parametric checks with ``Midpoint`` and ``Euler`` bases.
- solver family: the base-solver checks of its base, the transform's boundary conditions,
  and the parametric checks of the pair itself.
- multistep base (Adams--Bashforth): its order conditions in place of the tableau checks.
- non-stationary family: exact start, contracts, gradients; order consistency reported as not
  declared (see :mod:`.family_checks`).
"""

from __future__ import annotations

import torch

from flowsolve.conformance.check import Check
from flowsolve.conformance.contract_checks import (
    base_sampler,
    contract_checks,
    gradient_check,
    parametric_sampler,
)
from flowsolve.conformance.family_checks import multistep_checks, nonstationary_checks
from flowsolve.conformance.lipschitz_checks import lipschitz_checks
from flowsolve.conformance.order_checks import order_checks
from flowsolve.conformance.parametric_checks import consistency_check, identity_check
from flowsolve.conformance.profiles import DEFAULT, Effort
from flowsolve.conformance.subject import Subject
from flowsolve.conformance.tableau_checks import tableau_checks
from flowsolve.conformance.transform_checks import boundary_check
from flowsolve.methods.runge_kutta import BaseSolver, Euler, Midpoint
from flowsolve.solvers.transforms import ScaleOnly, ScaleTime, TimeOnly, Transform

# Model adapters are checked once they land (the adapters issue): their group of checks
# (time-convention round trips, velocity from eps / x1 predictions) is added here, keyed on a
# Subject holding an adapter, next to the base-solver and transform groups below.


def plan(subject: Subject, effort: Effort = DEFAULT, device="cpu") -> list[Check]:
    """The checks for ``subject``, in report order."""
    device = torch.device(device)
    checks: list[Check] = []
    if subject.family is not None:
        return nonstationary_checks(subject.family, effort, device)
    if subject.base is not None:
        checks += base_solver_checks(subject.base, effort, device)
    if subject.transform is not None:
        checks.append(boundary_check(subject.transform, effort))
    if subject.base is not None and subject.transform is not None:
        checks += parametric_checks(subject.transform, subject.base, effort, device)
    elif subject.base is not None:
        checks += parametric_checks(ScaleTime(), subject.base, effort, device)
        for ablation in (TimeOnly(), ScaleOnly()):
            checks += [identity_check(ablation, subject.base, effort, device, examples=2),
                       consistency_check(ablation, subject.base, effort, device, examples=1)]
    elif subject.transform is not None:
        for base in (Midpoint(), Euler()):
            checks += parametric_checks(subject.transform, base, effort, device)
    return checks


def base_solver_checks(base: BaseSolver, effort: Effort, device) -> list[Check]:
    algebra = multistep_checks(base) if getattr(base, "is_multistep", False) else tableau_checks(base)
    return [*algebra, *order_checks(base, effort, device),
            *contract_checks(base_sampler(base), effort, device)]


def parametric_checks(transform: Transform, base: BaseSolver, effort: Effort, device) -> list[Check]:
    return [
        identity_check(transform, base, effort, device),
        consistency_check(transform, base, effort, device),
        *lipschitz_checks(transform, base, effort, device),
        *contract_checks(parametric_sampler(transform, base, device), effort, device),
        gradient_check(transform, base, effort, device),
    ]
