"""Checks of a parametric solver ``compose(transform, base)``: identity and consistency.

- identity: the identity-initialised solver is the base solver on a uniform grid (float64, 1e-12).
- consistency (Theorem 2.2): a smooth continuous transform discretised at growing ``n`` keeps
  the base solver's order; transform shapes are drawn by Hypothesis.
"""

from __future__ import annotations

import math

import attrs
import torch

from flowsolve.conformance.check import Check, CheckFailed, Outcome
from flowsolve.conformance.convergence import fitted_order
from flowsolve.conformance.order_checks import (
    ORDER_EXAMPLES,
    ORDER_TOLERANCE,
    format_order,
    format_orders,
    max_error,
)
from flowsolve.conformance.problems import (
    SEEDS,
    linear_systems,
    noise,
    signed,
    smooth_fields,
    varying_logistics,
)
from flowsolve.conformance.profiles import Effort, check_property
from flowsolve.conformance.profiles import strategies as st
from flowsolve.methods.base import BaseMethod
from flowsolve.methods.runge_kutta import BaseSolver
from flowsolve.solvers.family import compose
from flowsolve.solvers.transforms import Transform

IDENTITY_TOLERANCE = 1e-12


def pairing_label(transform: Transform, base: BaseMethod) -> str:
    return f"{transform_name(transform)}+{base.name}"


def transform_name(transform: Transform) -> str:
    return getattr(type(transform), "name", type(transform).__name__)


def identity_check(transform: Transform, base: BaseMethod, effort: Effort, device, examples: int = 6) -> Check:
    label = pairing_label(transform, base)
    return Check(f"identity[{label}]", f"identity-initialised {label} equals {base.name} on a uniform grid",
                 lambda: _identity(transform, base, effort, device, examples))


def consistency_check(transform: Transform, base: BaseMethod, effort: Effort, device,
                      examples: int = ORDER_EXAMPLES) -> Check:
    label = pairing_label(transform, base)
    return Check(f"consistency[{label}]", f"{label} under smooth transforms keeps {base.name}'s order",
                 lambda: _consistency(transform, base, effort, device, examples))


# -- identity -------------------------------------------------------------------------------------
def _identity(transform, base, effort, device, examples) -> Outcome:
    family = compose(transform, base)

    def trial(drawn):
        field, steps, seed = drawn
        x0 = noise((3, 2), seed, torch.float64, device)
        nfe = base.evaluations(steps)
        solver = family.at(nfe)
        difference = max_error(solver.sample(field, x0), base.sample(field, x0, nfe))
        if not difference <= IDENTITY_TOLERANCE:
            raise CheckFailed(
                f"identity-initialised {pairing_label(transform, base)} differs from {base.name} by {difference:.3g} "
                f"(limit {IDENTITY_TOLERANCE:g}) at nfe={nfe} on {field!r}; " + _identity_diagnosis(solver, transform, base)
            )
        return difference

    differences = check_property(st.tuples(smooth_fields(), st.integers(1, 6), SEEDS), trial,
                                 examples=examples, effort=effort)
    return Outcome.passed(f"max |difference| {max(differences):.2g} over {len(differences)} draws "
                          f"(limit {IDENTITY_TOLERANCE:g})")


def _identity_diagnosis(solver, transform, base) -> str:
    """Whose fault a failed identity is: the family's initialisation (its node values are not
    ``t_r = r, dt = 1, s_r = 1, ds = 0``) or, with identity node values, the base solver."""
    try:
        r, t, dt, s, ds = (v.detach().double().cpu() for v in solver.nodes())
        grid = getattr(solver, "grid", None)
        evals = grid.eval_index.cpu() if grid is not None else torch.arange(r.numel())
        off = {"t_r - r": (t - r).abs().max(), "s_r - 1": (s - 1).abs().max(),
               "dt - 1": (dt[evals] - 1).abs().max(), "ds": ds[evals].abs().max()}
    except Exception:  # a solver without inspectable node values: no diagnosis beyond the rule
        return "at identity (t_r = r, s_r = 1) the parametric solver must be the base solver"
    off = {name: float(value) for name, value in off.items() if not float(value) <= IDENTITY_TOLERANCE}
    if off:
        shown = ", ".join(f"|{name}| up to {value:.3g}" for name, value in off.items())
        nodes = (f"nodes r_i + c_k h, c = [{', '.join(str(c) for c in base.tableau.c)}]"
                 if isinstance(base, BaseSolver) else "nodes")
        return (f"the identity initialisation of {transform_name(transform)} is broken, not {base.name}'s tableau: "
                f"on {base.name}'s grid ({nodes}) its initial node values have {shown}, where the identity "
                "needs t_r = r, dt = 1, s_r = 1, ds = 0")
    return (f"the node values are the identity (t_r = r, dt = 1, s_r = 1, ds = 0), so stepping {base.name}'s "
            f"tableau on the transformed field disagrees with {base.name}.sample on the uniform grid")


# -- consistency ----------------------------------------------------------------------------------
@attrs.frozen
class SmoothTransform:
    """A smooth continuous transform of the family (see docs/architecture.md), drawn by Hypothesis.

    ``t_r = warp(r + wiggle sin(pi m r) / (pi m))`` with ``warp(v) = expm1(a v) / expm1(a)`` (``|a| >= 0.3``)
    (increasing, ``t_0 = 0``, ``t_1 = 1`` since ``|wiggle| < 1``), and
    ``s_r = exp(growth r + ripple sin(pi k r))`` (positive, ``s_0 = 1``). ``kind`` restricts it
    to what the transform can represent: ``"scale-time"``, ``"time-only"`` (``s = 1``) or
    ``"scale-only"`` (``t_r = r``).
    """

    kind: str
    warp: float = 0.0
    wiggle: float = 0.0
    wiggle_frequency: int = 1
    growth: float = 0.0
    ripple: float = 0.0
    ripple_frequency: int = 1

    def time(self, r: torch.Tensor) -> torch.Tensor:
        if self.kind == "scale-only":
            return r
        m = self.wiggle_frequency * math.pi
        v = r + self.wiggle * torch.sin(m * r) / m
        return torch.expm1(self.warp * v) / math.expm1(self.warp)

    def scale(self, r: torch.Tensor) -> torch.Tensor:
        if self.kind == "time-only":
            return r * 0 + 1
        return torch.exp(self.growth * r + self.ripple * torch.sin(self.ripple_frequency * math.pi * r))


KINDS = ("scale-time", "time-only", "scale-only")


def probe_transform(kind: str) -> SmoothTransform:
    """A fixed smooth transform of ``kind``: what :func:`representable_kind` tries to set."""
    return SmoothTransform(kind, warp=0.7, wiggle=0.3, growth=0.4, ripple=0.2)


def smooth_transforms(kind: str):
    return st.builds(SmoothTransform, kind=st.just(kind), warp=signed(0.3, 2.0), wiggle=signed(0.1, 0.8),
                     wiggle_frequency=st.integers(1, 2), growth=signed(0.2, 1.0), ripple=signed(0.1, 0.5),
                     ripple_frequency=st.integers(1, 2))


def representable_kind(transform: Transform, base: BaseMethod) -> tuple[str | None, str]:
    """The most general kind of smooth transform ``transform`` can be set to, and why not if none."""
    reasons = []
    for kind in KINDS:
        solver = compose(transform, base).at(base.evaluations(2))
        try:
            solver.set_transform(probe_transform(kind).time, probe_transform(kind).scale)
        except (ValueError, NotImplementedError) as error:
            reasons.append(f"{kind}: {type(error).__name__}: {error}")
        else:
            return kind, ""
    return None, "; ".join(reasons)


def _consistency(transform, base, effort, device, examples) -> Outcome:
    kind, reason = representable_kind(transform, base)
    if kind is None:
        return Outcome.skipped(f"{transform_name(transform)} cannot be set from a continuous transform "
                               f"(set_transform / parameters_for refused every kind: {reason})")
    family, declared = compose(transform, base), base.order

    def error_at(shape, instance, steps):
        solver = family.at(base.evaluations(steps))
        solver.set_transform(shape.time, shape.scale)
        return max_error(solver.sample(instance.field, instance.x0), instance.x1)

    def trial(drawn):
        shape, *drawn_problems = drawn
        orders = []
        for problem in drawn_problems:
            instance = problem.build(device)
            convergence = fitted_order(lambda steps: error_at(shape, instance, steps), problem.floor)
            if not convergence.order >= declared - ORDER_TOLERANCE:
                raise CheckFailed(
                    f"fitted order {format_order(convergence.order)} vs base order {declared} (needs >= "
                    f"{declared - ORDER_TOLERANCE:.2f}) for {pairing_label(transform, base)} under {shape!r} on "
                    f"{problem!r}; {convergence.describe()}"
                )
            orders.append(convergence.order)
        return min(orders)

    strategy = st.tuples(smooth_transforms(kind), varying_logistics(), linear_systems())
    orders = check_property(strategy, trial, examples=examples, effort=effort)
    return Outcome.passed(f"fitted order {format_orders(orders, f'vs base order {declared}')}, {kind} transforms")


def perturb_parameters(solver, seed: int, spread: float) -> None:
    """Move every learnable parameter by ``spread * U(-1, 1)`` away from its initial value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in (p for p in solver.parameters() if p.requires_grad):
            noise = torch.rand(parameter.shape, generator=generator, dtype=torch.float64) * 2 - 1
            parameter.add_((spread * noise).to(parameter))
