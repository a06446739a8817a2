"""Training losses for bespoke solvers (sec. 2.3, appendix K.1), one interface.

A loss maps ``(solver, u, ground_truth)`` to a scalar: the mean over the ground-truth batch.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import attrs
import torch

from .ground_truth import GroundTruth
from .metrics import per_sample_rms
from .velocity import VelocityField


class Loss(abc.ABC):
    """A training objective for a :class:`~flowsolve.ParametricSolver`.

    Subclasses implement ``__call__(solver, u, gt)`` returning a differentiable scalar.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def __call__(self, solver, u: VelocityField, gt: GroundTruth) -> torch.Tensor: ...

    def to_dict(self) -> dict:
        return {"name": self.name, **attrs.asdict(self)} if attrs.has(type(self)) else {"name": self.name}


def _check_L_tau(instance, attribute, value):
    if not (isinstance(value, (int, float)) and value >= 0):
        raise ValueError(f"L_tau must be a non-negative number (the assumed Lipschitz constant of u), got {value!r}")


@attrs.frozen
class RMSE(Loss):
    """Global error (eq. 6): roll the whole solver out and compare ``x_n`` with ``x(1)``.

    Memory grows with ``n`` (all steps' activations are kept); ``checkpoint=True`` keeps one
    step's worth at about twice the compute.
    """

    checkpoint: bool = False
    name = "rmse"

    def __call__(self, solver, u, gt):
        x1 = solver.sample(u, gt.x0, differentiable=True, checkpoint_steps=self.checkpoint)
        return per_sample_rms(x1 - gt.x1).mean()


def local_errors(solver, u: VelocityField, gt: GroundTruth) -> torch.Tensor:
    """``d_{i+1} = ||x(t_{i+1}) - step_x(t_i, x(t_i))||`` for every step and path, ``(n, batch)``.

    All steps run as one batch of ``n * batch`` states (one field call per stage). The GT
    points move with the learned times through eq. 27.
    """
    n, batch = solver.n_steps, len(gt)
    device = gt.x0.device
    times = solver.node_values().t[solver.grid.start_index.to(solver.grid.r.device)].to(device)
    steps = torch.arange(n, device=device).repeat_interleave(batch)
    paths = torch.arange(batch, device=device).repeat(n)
    start = gt.at(times[steps], paths)
    target = gt.at(times[steps + 1], paths)
    predicted = solver.step(steps, start, u)
    return per_sample_rms(target - predicted).reshape(n, batch)


def amplification(step_lipschitz: torch.Tensor) -> torch.Tensor:
    """``M`` for each step's local error: the product of the later steps' constants (eq. 25)."""
    later = torch.cat([step_lipschitz[1:], step_lipschitz.new_ones(1)])
    return torch.flip(torch.cumprod(torch.flip(later, [0]), 0), [0])


@attrs.frozen
class RMSEBound(Loss):
    """The paper's RMSE-Bound (eq. 26): ``sum_i M_i d_i``, an upper bound of the RMSE when
    ``L_tau`` bounds the Lipschitz constant of ``u``. Steps are independent, so they run as one batch.
    """

    L_tau: float = attrs.field(default=1.0, validator=_check_L_tau)
    name = "rmse-bound"

    def __call__(self, solver, u, gt):
        errors = local_errors(solver, u, gt)
        weights = amplification(solver.step_lipschitz(self.L_tau)).to(errors)
        return (weights[:, None] * errors).sum(0).mean()


@attrs.frozen
class LTE(Loss):
    """Sum of local truncation errors: RMSE-Bound with every ``M_i = 1``."""

    name = "lte"

    def __call__(self, solver, u, gt):
        return local_errors(solver, u, gt).sum(0).mean()


BUILTIN_LOSSES: dict[str, type[Loss]] = {cls.name: cls for cls in (RMSE, RMSEBound, LTE)}
