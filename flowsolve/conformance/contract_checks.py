"""Contracts every sampler keeps, for base solvers and parametric solvers alike.

- shape-dtype-device: the output is shaped like the input, in its dtype (float32 and float64)
  and on its device; float32 agrees with a float64 run.
- field-calls: exactly ``nfe`` evaluations of ``u``, each with a 0-dim ``t`` in ``[0, 1]`` of
  the input's dtype and device and a state shaped like the input (see docs/architecture.md).
- determinism: the same input gives bitwise the same output.
- gradients (parametric solvers): finite gradients reach the learnable parameters through
  ``sample(..., differentiable=True)``.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import torch

from flowsolve.conformance.check import Check, CheckFailed, Outcome
from flowsolve.conformance.parametric_checks import pairing_label, perturb_parameters
from flowsolve.conformance.problems import SEEDS, bounded, noise, smooth_fields
from flowsolve.conformance.profiles import Effort, check_property
from flowsolve.conformance.profiles import strategies as st
from flowsolve.core.errors import FlowsolveTypeError
from flowsolve.methods.base import BaseMethod
from flowsolve.solvers.family import compose
from flowsolve.solvers.transforms import Transform

FLOAT32_TOLERANCE = 1e-4


@attrs.frozen
class Sampler:
    """A sampler under test: ``sample(u, x0, steps)`` runs ``steps`` steps, ``evaluations(steps)`` NFE."""

    label: str
    evaluations: Callable[[int], int]
    sample: Callable = attrs.field(repr=False)


def base_sampler(base: BaseMethod) -> Sampler:
    return Sampler(base.name, base.evaluations, lambda u, x0, steps: base.sample(u, x0, base.evaluations(steps)))


def parametric_sampler(transform: Transform, base: BaseMethod, device) -> Sampler:
    """A perturbed (non-identity) parametric solver, one per step count and seed."""

    def sample(u, x0, steps):
        solver = compose(transform, base).at(base.evaluations(steps))
        perturb_parameters(solver, seed=steps, spread=0.3)
        return solver.to(device).sample(u, x0)

    return Sampler(pairing_label(transform, base), base.evaluations, sample)


def _shapes():
    return st.tuples(st.integers(1, 3), st.lists(st.integers(1, 3), max_size=2)).map(lambda p: (p[0], *p[1]))


def _draws():
    """(field, shape, steps, seed) for one contract example."""
    return st.tuples(smooth_fields(), _shapes(), st.integers(1, 4), SEEDS)


def contract_checks(sampler: Sampler, effort: Effort, device) -> list[Check]:
    return [
        Check(f"shape-dtype-device[{sampler.label}]", "output shaped like the input, same dtype and device",
              lambda: _shape_dtype_device(sampler, effort, device)),
        Check(f"field-calls[{sampler.label}]", "exactly nfe evaluations, 0-dim t in [0, 1], input's dtype and device",
              lambda: _field_calls(sampler, effort, device)),
        Check(f"determinism[{sampler.label}]", "the same input gives bitwise the same output",
              lambda: _determinism(sampler, effort, device)),
    ]


def _shape_dtype_device(sampler: Sampler, effort: Effort, device) -> Outcome:
    worst = 0.0

    def trial(drawn):
        nonlocal worst
        (field, shape, steps, seed), dtype = drawn
        x0 = noise(shape, seed, dtype, device)
        out = sampler.sample(field, x0, steps)
        found = (tuple(out.shape), out.dtype, out.device)
        if found != (tuple(x0.shape), dtype, x0.device):
            raise CheckFailed(
                f"{sampler.label} returned shape {found[0]}, {found[1]} on {found[2]} for input {tuple(x0.shape)}, "
                f"{dtype} on {x0.device}; the output must keep the input's shape, dtype and device"
            )
        if dtype == torch.float32:
            reference = sampler.sample(field, x0.double(), steps).float()
            gap = float(((out - reference).abs() / (1 + reference.abs())).max())
            if not gap <= FLOAT32_TOLERANCE:
                raise CheckFailed(f"{sampler.label} in float32 differs from its float64 result by {gap:.3g} "
                                  f"(relative, limit {FLOAT32_TOLERANCE:g}) on {field!r}, shape {shape}")
            worst = max(worst, gap)

    check_property(st.tuples(_draws(), st.sampled_from([torch.float32, torch.float64])), trial,
                   examples=8, effort=effort)
    return Outcome.passed(f"shape, dtype and device ({device}) preserved; float32 within {worst:.1e} of float64")


def _field_calls(sampler: Sampler, effort: Effort, device) -> Outcome:
    def trial(drawn):
        field, shape, steps, seed = drawn
        x0 = noise(shape, seed, torch.float64, device)
        calls = []

        def recording(t, x):
            calls.append((t, tuple(x.shape), x.dtype, x.device))
            return field(t, x)

        sampler.sample(recording, x0, steps)
        nfe = sampler.evaluations(steps)
        if len(calls) != nfe:
            raise CheckFailed(f"{sampler.label} evaluated the field {len(calls)} times for nfe = {nfe} ({steps} steps)")
        for number, (t, x_shape, x_dtype, x_device) in enumerate(calls):
            problems = []
            if not isinstance(t, torch.Tensor) or t.dim() != 0:
                shape = tuple(getattr(t, "shape", ()))
                problems.append(f"t is {type(t).__name__} of shape {shape}, not a 0-dim tensor")
            elif t.dtype != x0.dtype or t.device != x0.device:
                problems.append(f"t is {t.dtype} on {t.device}, the input is {x0.dtype} on {x0.device}")
            elif not -1e-12 <= float(t) <= 1 + 1e-12:
                problems.append(f"t = {float(t):.6g} outside [0, 1]")
            if (x_shape, x_dtype, x_device) != (tuple(x0.shape), x0.dtype, x0.device):
                problems.append(f"x is {x_shape} {x_dtype} on {x_device}")
            if problems:
                raise CheckFailed(f"{sampler.label}, evaluation {number} of {nfe}: " + "; ".join(problems))

    check_property(_draws(), trial, examples=6, effort=effort)
    return Outcome.passed(f"exactly nfe evaluations; 0-dim t in [0, 1] on {device}, input's dtype")


def _determinism(sampler: Sampler, effort: Effort, device) -> Outcome:
    def trial(drawn):
        field, shape, steps, seed = drawn
        x0 = noise(shape, seed, torch.float64, device)
        first, second = sampler.sample(field, x0, steps), sampler.sample(field, x0.clone(), steps)
        if not torch.equal(first, second):
            raise CheckFailed(f"{sampler.label} gave different outputs for the same input (max gap "
                              f"{float((first - second).abs().max()):.3g}) on {field!r}, shape {shape}")

    check_property(_draws(), trial, examples=4, effort=effort)
    return Outcome.passed("bitwise identical outputs for identical inputs")


def gradient_check(transform: Transform | None, base: BaseMethod, effort: Effort, device, family=None) -> Check:
    """Gradients of ``transform x base``, or of ``family`` (any family with ``at(nfe)``) with ``base``'s NFEs."""
    if family is None:
        if transform is None:
            raise FlowsolveTypeError("gradient_check needs a transform or a family")
        family = compose(transform, base)
    label = pairing_label(transform, base) if transform is not None else family.label
    return Check(f"gradients[{label}]", "finite gradients reach the learnable parameters",
                 lambda: _gradients(family, base, label, effort, device))


def _gradients(family, base, label, effort, device) -> Outcome:
    unused = set()

    def trial(drawn):
        (field, shape, steps, seed), spread = drawn
        solver = family.at(base.evaluations(steps))
        perturb_parameters(solver, seed, spread)
        solver.to(device)
        x0 = noise(shape, seed, torch.float64, device)
        with torch.enable_grad():
            solver.sample(field, x0, differentiable=True).square().mean().backward()
        named = {name: p for name, p in solver.named_parameters() if p.requires_grad}
        if not named:
            raise CheckFailed(f"{label} has no learnable parameters")
        for name, parameter in named.items():
            if parameter.grad is None:
                unused.add(name)
            elif not bool(torch.isfinite(parameter.grad).all()):
                raise CheckFailed(f"gradient of {name} is not finite ({parameter.grad.tolist()}) for "
                                  f"{label} (steps={steps}, perturbed by {spread:.3g}) "
                                  f"on {field!r}")
        if not any(p.grad is not None and bool((p.grad != 0).any()) for p in named.values()):
            raise CheckFailed(f"no gradient reaches any parameter of {label} on {field!r}")
        return len(named)

    counts = check_property(st.tuples(_draws(), bounded(0.0, 0.5)), trial, examples=4, effort=effort)
    note = f"; no gradient for {sorted(unused)}" if unused else ""
    return Outcome.passed(f"finite gradients for all {max(counts)} parameter tensors{note}")

