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

Which groups apply is what the subject declares: a base method's and a family's
``conformance_checks`` (e.g. ``"tableau"`` or ``"multistep-order"``; ``"step-lipschitz"`` where a
step maps one state), never guessed from its attributes.
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
from flowsolve.conformance.family_checks import family_checks, multistep_checks
from flowsolve.conformance.lipschitz_checks import lipschitz_checks
from flowsolve.conformance.order_checks import order_checks
from flowsolve.conformance.parametric_checks import consistency_check, identity_check
from flowsolve.conformance.profiles import DEFAULT, Effort
from flowsolve.conformance.subject import Subject
from flowsolve.conformance.tableau_checks import tableau_checks
from flowsolve.conformance.transform_checks import boundary_check
from flowsolve.core.errors import FlowsolveValueError
from flowsolve.methods.base import BaseMethod
from flowsolve.methods.runge_kutta import Euler, Midpoint
from flowsolve.solvers.transforms import ScaleOnly, ScaleTime, TimeOnly, Transform

# Model adapters are checked once they land (the adapters issue): their group of checks
# (time-convention round trips, velocity from eps / x1 predictions) is added here, keyed on a
# Subject holding an adapter, next to the base-solver and transform groups below.


def plan(subject: Subject, effort: Effort = DEFAULT, device="cpu") -> list[Check]:
    """The checks for ``subject``, in report order."""
    device = torch.device(device)
    checks: list[Check] = []
    if subject.family is not None:
        return family_checks(subject.family, effort, device)
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


# The checks of a base method itself, by the names methods declare in ``conformance_checks``.
_METHOD_CHECKS = {
    "tableau": lambda base, effort, device: tableau_checks(base),
    "multistep-order": lambda base, effort, device: multistep_checks(base),
    "order": order_checks,
    "contracts": lambda base, effort, device: contract_checks(base_sampler(base), effort, device),
}
# Declared names that select checks of the method's parametric solvers (see parametric_checks).
_PARAMETRIC_NAMES = frozenset({"parametric", "step-lipschitz"})


def base_solver_checks(base: BaseMethod, effort: Effort, device) -> list[Check]:
    unknown = sorted(set(base.conformance_checks) - set(_METHOD_CHECKS) - _PARAMETRIC_NAMES)
    if unknown:
        raise FlowsolveValueError(f"{type(base).__name__}.conformance_checks names {unknown}, which the conformance suite does "
                         f"not know; known: {sorted({*_METHOD_CHECKS, *_PARAMETRIC_NAMES})}")
    return [check for name in base.conformance_checks if name in _METHOD_CHECKS
            for check in _METHOD_CHECKS[name](base, effort, device)]


def parametric_checks(transform: Transform, base: BaseMethod, effort: Effort, device) -> list[Check]:
    return [
        identity_check(transform, base, effort, device),
        consistency_check(transform, base, effort, device),
        *lipschitz_checks(transform, base, effort, device),
        *contract_checks(parametric_sampler(transform, base, device), effort, device),
        gradient_check(transform, base, effort, device),
    ]
