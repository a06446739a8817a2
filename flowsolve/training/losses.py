"""Training losses for bespoke solvers (sec. 2.3, appendix K.1), one interface.

A loss maps ``(solver, u, ground_truth)`` to a scalar: the mean over the ground-truth batch.
"""

from __future__ import annotations

import abc
import math
import re
from typing import ClassVar, cast

import attrs
import torch

from flowsolve.core.errors import FlowsolveValueError
from flowsolve.core.field import VelocityField
from flowsolve.core.lipschitz import amplification  # noqa: F401  (re-exported: its former home)
from flowsolve.core.solver_file import part_spec
from flowsolve.models.conditioning import select_rows
from flowsolve.training.ground_truth import GroundTruth
from flowsolve.training.metrics import per_sample_rms


class Loss(abc.ABC):
    """A training objective for a :class:`~flowsolve.ParametricSolver`.

    Subclasses implement ``__call__(solver, u, gt)`` returning a differentiable scalar, and may
    set ``name`` (what fit's metadata and checkpoints record); a subclass that does not is named
    after its class, e.g. ``MyFinalError`` -> ``"my-final-error"``. A loss that weighs per-step
    errors declares ``needs_local_steps = True``: fit then refuses solvers without ``step(i, x)``
    (``has_local_steps``).

    For a conditional model ``u`` arrives bound to the conditions of ``gt``'s paths, one row
    per path; a loss that evaluates another arrangement of rows re-binds it with
    :func:`flowsolve.models.conditioning.select_rows` (as :func:`local_errors` does).
    """

    kind: ClassVar[str] = "loss"  # the registry kind it is rebuilt through
    name: ClassVar[str]
    needs_local_steps: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Set per class, not inherited: a subclass of RMSE computes something else than RMSE,
        # and checkpoints tell runs apart by the loss's name.
        if "name" not in cls.__dict__:
            cls.name = _kebab_case(cls.__name__)

    @abc.abstractmethod
    def __call__(self, solver, u: VelocityField, gt: GroundTruth) -> torch.Tensor: ...

    def backward(self, solver, u: VelocityField, gt: GroundTruth) -> torch.Tensor:
        """Accumulate the loss gradient into the solver's parameters; return the (detached) loss.

        Losses whose terms are independent may split the work to bound memory.
        """
        value = self(solver, u, gt)
        value.backward()
        return value.detach()

    def to_dict(self) -> dict:
        if not attrs.has(type(self)):
            return {"name": self.name}
        # attrs.has narrows the class, not the instance: say so for asdict.
        return {"name": self.name, **attrs.asdict(cast(attrs.AttrsInstance, self))}

    def to_spec(self) -> dict:
        """``{kind, name, options}``: how the loss is recorded and rebuilt through the registry."""
        return part_spec(self.kind, self.name, {k: v for k, v in self.to_dict().items() if k != "name"})

    @classmethod
    def from_spec(cls, name: str, options: dict) -> Loss:
        """The loss of ``options`` (see :meth:`to_spec`): ``cls(**options)``."""
        return cls(**options)


def _kebab_case(class_name: str) -> str:
    """``MyFinalError`` -> ``my-final-error``, ``PSNRLoss`` -> ``psnr-loss``."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", class_name.strip("_"))
    return words.lower()


def _check_L_tau(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise FlowsolveValueError(
            f"L_tau must be a finite non-negative number (the assumed Lipschitz constant of u, e.g. 1.0), got {value!r}"
        )


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


@attrs.frozen
class PSNRLoss(Loss):
    """Negative PSNR of the final samples (data range 2): ``10 log10(MSE / 4)`` over the batch.

    A full rollout like :class:`RMSE`; the logarithm weighs relative improvements equally at
    every error level. ``checkpoint=True`` keeps one step's activations. An exactly zero error
    counts as the smallest positive MSE of the dtype (a finite loss with a zero gradient, not -inf).
    """

    checkpoint: bool = False
    name = "psnr"

    def __call__(self, solver, u, gt):
        x1 = solver.sample(u, gt.x0, differentiable=True, checkpoint_steps=self.checkpoint)
        mse = (x1 - gt.x1).square().mean()
        # log10(0) = -inf and its gradient 0/0 would end the fit; below the floor the gradient is 0.
        return 10 * torch.log10(mse.clamp_min(torch.finfo(mse.dtype).tiny) / 4.0)


def local_errors(solver, u: VelocityField, gt: GroundTruth, steps: torch.Tensor | None = None) -> torch.Tensor:
    """``d_{i+1} = ||x(t_{i+1}) - step_x(t_i, x(t_i))||`` per step and path, ``(len(steps), batch)``.

    The steps (default: all) run as one batch of ``len(steps) * batch`` states, one field call
    per stage. The GT points move with the learned times through eq. 27.
    """
    batch, device = len(gt), gt.x0.device
    steps = torch.arange(solver.n_steps) if steps is None else steps
    times = solver.node_values().t[solver.grid.start_index.to(solver.grid.r.device)].to(device)
    per_sample_steps = steps.to(device).repeat_interleave(batch)
    paths = torch.arange(batch, device=device).repeat(len(steps))
    u = select_rows(u, paths)  # a conditional field bound to the batch: its conditions for every (step, path)
    start = gt.at(times[per_sample_steps], paths)
    target = gt.at(times[per_sample_steps + 1], paths)
    if solver.history:  # a multistep step also starts from the exact states at the previous step points
        previous = [gt.at(times[(per_sample_steps - j).clamp_min(0)], paths) for j in range(1, solver.history + 1)]
        predicted = solver.step(per_sample_steps, start, u, previous=previous)
    else:
        predicted = solver.step(per_sample_steps, start, u)
    return per_sample_rms(target - predicted).reshape(len(steps), batch)


def _check_chunk(instance, attribute, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise FlowsolveValueError(f"{attribute.name} must be None or a positive int (steps per batch), got {value!r}")


class _WeightedLocalErrors(Loss):
    """``sum_i w_i d_i`` over the steps; ``steps_per_batch`` bounds memory in :meth:`backward`."""

    steps_per_batch: int | None
    needs_local_steps = True

    @abc.abstractmethod
    def step_weights(self, solver) -> torch.Tensor:
        """``w_i`` per step, ``(n,)``."""

    def _partial(self, solver, u, gt, steps):
        errors = local_errors(solver, u, gt, steps)
        weights = self.step_weights(solver)[steps].to(errors)
        return (weights[:, None] * errors).sum(0).mean()

    def __call__(self, solver, u, gt):
        return self._partial(solver, u, gt, torch.arange(solver.n_steps))

    def backward(self, solver, u, gt):
        if self.steps_per_batch is None:
            return super().backward(solver, u, gt)
        total = 0.0
        for steps in torch.arange(solver.n_steps).split(self.steps_per_batch):
            value = self._partial(solver, u, gt, steps)
            value.backward()
            total = total + value.detach()
        return total


@attrs.frozen
class RMSEBound(_WeightedLocalErrors):
    """The paper's RMSE-Bound (eq. 26): ``sum_i M_i d_i``, an upper bound of the RMSE when
    ``L_tau`` bounds the Lipschitz constant of ``u``.

    Steps are independent: by default they run as one batch; ``steps_per_batch=k`` evaluates
    and back-propagates ``k`` steps at a time, so memory does not grow with ``n``.
    """

    L_tau: float = attrs.field(default=1.0, validator=_check_L_tau)
    steps_per_batch: int | None = attrs.field(default=None, validator=_check_chunk)
    name = "rmse-bound"

    def step_weights(self, solver):
        return solver.error_amplification(self.L_tau)


@attrs.frozen
class LTE(_WeightedLocalErrors):
    """Sum of local truncation errors: RMSE-Bound with every ``M_i = 1``."""

    steps_per_batch: int | None = attrs.field(default=None, validator=_check_chunk)
    name = "lte"

    def step_weights(self, solver):
        return torch.ones(solver.n_steps, dtype=torch.float64)


BUILTIN_LOSSES: dict[str, type[Loss]] = {cls.name: cls for cls in (RMSE, RMSEBound, LTE, PSNRLoss)}
