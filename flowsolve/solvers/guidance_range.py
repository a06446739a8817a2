"""One solver for a range of classifier-free guidance scales.

Guidance changes the field a solver integrates: a solver fitted at ``w = 2`` is not the best
one at ``w = 4``. A :class:`GuidanceRangeSolver` holds the coefficients of a non-stationary
solver (times and combination weights, see :mod:`flowsolve.solvers.nonstationary`) at a few
anchor scales ``w_1 < ... < w_K``; at scale ``w`` it uses their piecewise-linear
interpolation (held constant beyond the end anchors), so its coefficients are a continuous
function of ``w`` and every sample of a batch may have its own scale.

The scale of each sample comes from the field being sampled: the per-sample ``"guidance"``
condition bound to it (``u.bind({"labels": ..., "guidance": ...})``), else the guided model's
own weight (0 for a field without guidance). It is fitted like any family, over paths whose guidance scales are drawn with the
labels: ``conditions=Labels(10) & GuidanceScales(0, 4)``.
"""

from __future__ import annotations

from typing import cast

import attrs
import torch
from torch import nn

from flowsolve.core.broadcast import per_sample
from flowsolve.core.errors import FlowsolveValueError
from flowsolve.core.solver_file import part_spec
from flowsolve.methods.base import BaseMethod
from flowsolve.methods.runge_kutta import Midpoint
from flowsolve.solvers.family_base import Family
from flowsolve.solvers.module import SolverModule, Trajectory
from flowsolve.solvers.nonstationary import NonStationary, NonStationarySolver, stored_coefficients

FAMILY_NAME = "guidance-range"
PARAMETER_NAMES = ("times", "weights", "weight_scale", "time_scale")


def _check_anchors(anchors) -> tuple[float, ...]:
    values = tuple(float(a) for a in anchors)
    if len(values) < 1 or any(b <= a for a, b in zip(values, values[1:])):
        raise FlowsolveValueError(f"anchors must be one or more increasing guidance scales, got {list(anchors)}")
    return values


def guidance_of(u, batch: int, like: torch.Tensor) -> torch.Tensor:
    """The ``(batch,)`` guidance scale of each sample ``u`` is run with: the bound ``"guidance"``
    condition, else the weight of the guided model it adapts, else 0 (an unguided field)."""
    bound = getattr(u, "bound_conditions", None) or {}
    if "guidance" in bound:
        scales = bound["guidance"]
    else:
        weight = getattr(getattr(u, "model", None), "weight", 0.0)  # an unguided field is w = 0
        scales = torch.full((batch,), float(weight) if isinstance(weight, (int, float)) else 0.0)
    if scales.shape != (batch,):
        raise FlowsolveValueError(f"the bound guidance scales have shape {tuple(scales.shape)}, expected ({batch},)")
    return scales.to(device=like.device, dtype=like.dtype)


class GuidanceRangeSolver(SolverModule):
    """Non-stationary coefficients at anchor guidance scales, interpolated in ``w`` per sample.

    Parameters: for anchor ``k``, ``times_k``, ``weights_k`` and their fixed scales, laid out as
    in :class:`~flowsolve.solvers.nonstationary.NonStationarySolver`.

    Args:
        nfe: evaluations per sample.
        anchors: increasing guidance scales.
    """

    has_local_steps = False

    def __init__(self, nfe: int, anchors):
        super().__init__()
        self.anchors = _check_anchors(anchors)
        template = NonStationarySolver(nfe)
        self.params = nn.ParameterDict({
            f"{name}_{k}": nn.Parameter(template.params[name].detach().clone(),
                                        requires_grad=template.params[name].requires_grad)
            for k in range(len(self.anchors)) for name in PARAMETER_NAMES
        })
        self.register_buffer("mask", template.get_buffer("mask").clone(), persistent=False)
        self.metadata: dict = {}

    @property
    def nfe(self) -> int:
        return self.params["times_0"].numel()

    @property
    def n_steps(self) -> int:
        return self.nfe

    @property
    def num_params(self) -> int:
        m = self.nfe
        return len(self.anchors) * m * (m + 5) // 2

    @property
    def label(self) -> str:
        return f"{FAMILY_NAME} w in {list(self.anchors)}"

    def anchor_coefficients(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(times, weights)`` at anchor ``k``."""
        return stored_coefficients(self.params, self.get_buffer("mask"), suffix=f"_{k}")

    def set_anchor(self, k: int, solver: NonStationarySolver) -> None:
        """Copy a non-stationary solver's parameters into anchor ``k``."""
        if solver.nfe != self.nfe:
            raise FlowsolveValueError(f"anchor {k} needs an NFE {self.nfe} solver, got NFE {solver.nfe}")
        with torch.no_grad():
            for name in PARAMETER_NAMES:
                self.params[f"{name}_{k}"].copy_(solver.params[name])

    def coefficients(self, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample ``(times (B, m), weights (B, m, m + 1))`` at guidance ``scales`` ``(B,)``."""
        anchors = torch.tensor(self.anchors, dtype=torch.float64, device=scales.device)
        pairs = [self.anchor_coefficients(k) for k in range(len(self.anchors))]
        times = torch.stack([t for t, _ in pairs]).to(scales.device)  # (K, m)
        weights = torch.stack([w for _, w in pairs]).to(scales.device)  # (K, m, m + 1)
        if len(self.anchors) == 1:
            return times[0].expand(scales.shape[0], -1), weights[0].expand(scales.shape[0], -1, -1)
        w = scales.to(torch.float64).clamp(anchors[0], anchors[-1])
        right = torch.searchsorted(anchors, w.contiguous()).clamp(1, len(self.anchors) - 1)
        left = right - 1
        fraction = (w - anchors[left]) / (anchors[right] - anchors[left])
        times = times[left] + fraction[:, None] * (times[right] - times[left])
        weights = weights[left] + fraction[:, None, None] * (weights[right] - weights[left])
        return times, weights

    def _field_options(self, u, x0):
        return {"scales": guidance_of(u, x0.shape[0], x0)}

    def _stepper_options(self, x0, guidance):
        """The guidance scales a stepper runs with: a number for the whole batch, or ``(batch,)``."""
        batch = x0.shape[0]
        if guidance is None:
            raise FlowsolveValueError(
                f"a {FAMILY_NAME} solver's evaluation times and weights depend on the guidance scale: give it, "
                "e.g. stepper(x0, guidance=2.0), or per sample stepper(x0, guidance=scales) with scales of shape "
                f"({batch},) (evaluation_times(guidance=2.0) for the times)"
            )
        # A number is taken in float64 (torch.as_tensor would round it to float32 first).
        scales = guidance if isinstance(guidance, torch.Tensor) else torch.as_tensor(guidance, dtype=torch.float64)
        if scales.dim() == 0:
            scales = scales.expand(batch)
        if scales.shape != (batch,) or scales.is_complex() or scales.dtype == torch.bool:
            raise FlowsolveValueError(f"guidance must be a number or a ({batch},) tensor of scales, got shape "
                                      f"{tuple(scales.shape)}")
        scales = scales.to(device=x0.device, dtype=x0.dtype)
        if not bool(torch.isfinite(scales).all()):
            raise FlowsolveValueError(f"the guidance scales must be finite, got {scales.tolist()}")
        return {"scales": scales}

    def _rollout(self, x0, return_intermediates, scales):
        times, weights = (v.to(x0.dtype) for v in self.coefficients(scales))
        times = times.clamp(0.0, 1.0)
        basis, states, z = [x0], [x0], x0
        for k in range(self.nfe):
            velocity = yield times[:, k], z
            basis.append(velocity)
            z = sum(per_sample(weights[:, k, j], x0) * basis[j] for j in range(k + 2))
            if return_intermediates:
                states.append(z)
        if not return_intermediates:
            return z
        # Per-sample times have no single time stamp: the mean time of each evaluation is reported.
        stamps = torch.cat([times.mean(0), times.new_ones(1)])
        return Trajectory(t=stamps, x=torch.stack(states))

    def family_spec(self) -> dict:
        return GuidanceRange(self.anchors).to_spec()

    def extra_repr(self) -> str:
        return f"nfe={self.nfe}, anchors={list(self.anchors)}, params={self.num_params}"


@attrs.frozen
class GuidanceRange(Family):
    """Solvers for guidance scales in ``[anchors[0], anchors[-1]]`` (see the module docstring).

    ``at(nfe, init)`` starts every anchor at the same non-stationary solver: ``init`` may be
    anything :meth:`NonStationarySolver.initialise` accepts (a base solver, a baseline name such
    as ``"dpm-solver++(2m)"``, a fitted non-stationary solver); default Midpoint on a uniform grid.

    Example:
        >>> family = GuidanceRange(anchors=(0.0, 2.0, 4.0))
        >>> family.at(nfe=4).num_params  # three non-stationary solvers' worth
        54
    """

    anchors: tuple[float, ...] = attrs.field(default=(0.0, 2.0, 4.0), converter=_check_anchors)
    base: BaseMethod = attrs.field(factory=Midpoint)
    name = FAMILY_NAME
    solver_class = GuidanceRangeSolver

    has_local_steps = False
    conformance_checks = ("start", "contracts", "gradients", "order-consistency")
    # Anchors are non-stationary solvers, parametrised the same way.
    default_lr = NonStationary.default_lr
    default_lr_schedule = NonStationary.default_lr_schedule

    def at(self, nfe: int, init=None, model=None) -> GuidanceRangeSolver:
        if isinstance(init, GuidanceRangeSolver):
            if init.nfe != nfe or init.anchors != self.anchors:
                raise FlowsolveValueError("a guidance-range solver starts from one with the same NFE and anchors")
            solver = GuidanceRangeSolver(nfe, self.anchors)
            solver.load_state_dict(init.state_dict())
            return solver
        if init is None:
            self.base.n_steps(nfe)
        start = NonStationarySolver(nfe)
        start.initialise(self.base if init is None else init, model)
        solver = GuidanceRangeSolver(nfe, self.anchors)
        for k in range(len(self.anchors)):
            solver.set_anchor(k, start)
        return solver

    def new_solver(self, nfe: int) -> GuidanceRangeSolver:
        return GuidanceRangeSolver(nfe, self.anchors)

    def to_dict(self) -> dict:
        return {"name": FAMILY_NAME, "anchors": list(self.anchors), "base": self.base.name}

    def to_spec(self) -> dict:
        return part_spec(self.kind, self.name, {"anchors": list(self.anchors), "base": self.base.to_spec()})

    @classmethod
    def from_spec(cls, name: str, options: dict) -> GuidanceRange:
        return cls(**options)

    @property
    def label(self) -> str:
        return f"{FAMILY_NAME} {list(self.anchors)}"

    def fit(self, model, nfe: int, **options) -> GuidanceRangeSolver:
        """Fit at ``nfe`` (loss: the final-sample RMSE); pass ``conditions=`` drawing guidance
        scales over the anchors' range, e.g. ``Labels(10) & GuidanceScales(0, 4)``."""
        return cast(GuidanceRangeSolver, super().fit(model, nfe, **options))
