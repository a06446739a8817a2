"""The contract every solver module fulfils, whatever its family: a fixed NFE, sampling, saving."""

from __future__ import annotations

import abc
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from flowsolve.core.errors import FlowsolveTypeError, FlowsolveValueError
from flowsolve.core.field import VelocityField
from flowsolve.core.solver_file import write_solver_file


class Trajectory(NamedTuple):
    """States ``x_i`` at the step end points, ``(n + 1, batch, ...)``, and their times ``(n + 1,)``."""

    t: torch.Tensor
    x: torch.Tensor


class SolverModule(nn.Module, abc.ABC):
    """A solver with learnable parameters (``params``) spending exactly ``nfe`` evaluations per sample.

    Subclasses declare ``has_local_steps`` (whether ``step(i, x)`` exists, so local-error losses
    apply) and ``history`` (previous states such a step needs besides its own), and implement
    ``_sample`` and :meth:`family_spec` (what a solver file stores to rebuild the solver).
    """

    has_local_steps: ClassVar[bool]
    params: nn.ParameterDict
    metadata: dict

    @property
    def history(self) -> int:
        """Previous states a step needs besides its own (0: one-step solvers)."""
        return 0

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not isinstance(getattr(cls, "has_local_steps", None), bool):
            raise FlowsolveTypeError(f"{cls.__qualname__} must declare has_local_steps = True or False (does it have step(i, x)?)")

    @property
    @abc.abstractmethod
    def nfe(self) -> int:
        """Velocity evaluations per sample."""

    @property
    @abc.abstractmethod
    def n_steps(self) -> int:
        """Steps (for a family without steps: evaluations)."""

    @property
    @abc.abstractmethod
    def num_params(self) -> int:
        """Degrees of freedom (the paper's count)."""

    @property
    @abc.abstractmethod
    def label(self) -> str:
        """The family's name, for progress bars and messages."""

    @abc.abstractmethod
    def family_spec(self) -> dict:
        """``{kind: "solver family", name, options}`` of the family this solver belongs to; the
        options hold the specs of its parts (base method, transform)."""

    @abc.abstractmethod
    def _sample(self, u, x0, return_intermediates: bool, check_finite: bool, checkpoint_steps: bool):
        """The rollout behind :meth:`sample` (arguments already checked)."""

    def sample(
        self,
        u: VelocityField,
        x0: torch.Tensor,
        *,
        return_intermediates: bool = False,
        check_finite: bool = True,
        differentiable: bool = False,
        checkpoint_steps: bool = False,
    ) -> torch.Tensor | Trajectory:
        """Integrate from noise ``x0`` at ``t = 0`` to ``t = 1`` with exactly ``nfe`` evaluations of ``u``.

        Args:
            u: velocity field ``u(t, x)``, called with 0-dim ``t``.
            x0: ``(batch, ...)`` noise at ``t = 0``; sets device and dtype.
            return_intermediates: also return the states at every step end point (for a
                non-stationary solver: at every evaluation).
            check_finite: stop with an error naming the step if ``u`` returns inf/NaN.
            differentiable: keep the autograd graph (for training through the rollout);
                by default sampling runs under ``torch.no_grad()`` and stores no activations.
            checkpoint_steps: with ``differentiable``, recompute each step's activations in the
                backward pass instead of storing them (memory of one step, ~2x compute).

        Returns:
            ``x_n`` shaped like ``x0``, or a :class:`Trajectory` with ``x[-1] = x_n``.
        """
        check_state(x0)
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            return self._sample(u, x0, return_intermediates, check_finite, checkpoint_steps and differentiable)

    @classmethod
    def upgrade_parameters(cls, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The parameters of a solver file written by an older version, in today's layout
        (unchanged unless a subclass changed its parameters)."""
        return tensors

    def out_of_range(self) -> list[str]:
        """What is out of range in values derived from finite parameters (e.g. a scale of 0), for
        fit to stop with; nothing by default."""
        return []

    def save(self, path) -> None:
        """Write parameters and metadata to ``path`` atomically (see :func:`flowsolve.load`)."""
        header = {"nfe": self.nfe, "metadata": self.metadata, "family": self.family_spec()}
        write_solver_file(path, header, dict(self.params.items()))


def check_state(x) -> None:
    """Refuse a state that is not a floating-point tensor with a batch dimension."""
    if not isinstance(x, torch.Tensor):
        raise FlowsolveTypeError(f"the state must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise FlowsolveTypeError(f"the state must be a floating-point tensor, got dtype {x.dtype}; use x.float() or x.double()")
    if x.dim() < 1:
        raise FlowsolveValueError("the state must have a batch dimension: shape (batch, ...), got a 0-dim tensor")
