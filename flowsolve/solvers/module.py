"""The contract every solver module fulfils, whatever its family: a fixed NFE, sampling, saving."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from flowsolve.core.checkpointing import call_checkpointed
from flowsolve.core.errors import FlowsolveTypeError, FlowsolveValueError
from flowsolve.core.field import VelocityField, call_field
from flowsolve.core.solver_file import write_solver_file
from flowsolve.solvers.stepping import Rollout, Stepper, data_estimator

# callback(i, t, x, denoised) after evaluation i at time t and state x (see SolverModule.sample).
SampleCallback = Callable[[int, torch.Tensor, torch.Tensor, "torch.Tensor | None"], None]


class Trajectory(NamedTuple):
    """States ``x_i`` at the step end points, ``(n + 1, batch, ...)``, and their times ``(n + 1,)``."""

    t: torch.Tensor
    x: torch.Tensor


class SolverModule(nn.Module, abc.ABC):
    """A solver with learnable parameters (``params``) spending exactly ``nfe`` evaluations per sample.

    Subclasses declare ``has_local_steps`` (whether ``step(i, x)`` exists, so local-error losses
    apply) and ``history`` (previous states such a step needs besides its own), and implement
    ``_rollout`` (the evaluations as a generator, see :mod:`flowsolve.solvers.stepping`) and
    :meth:`family_spec` (what a solver file stores to rebuild the solver). :meth:`sample` and
    :meth:`stepper` both drive ``_rollout``, so stepping by hand gives ``sample``'s result bit for bit.
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
    def _rollout(self, x0: torch.Tensor, return_intermediates: bool, **options) -> Rollout:
        """The evaluations from ``x0`` as a generator: ``v = yield t, z`` asks for ``u(t, z)``; it
        returns the sample (or, with ``return_intermediates``, a :class:`Trajectory`) after
        exactly ``nfe`` requests. ``options`` are those of :meth:`_field_options` /
        :meth:`_stepper_options` (none for most families)."""

    def _evaluation_labels(self) -> list[str]:
        """Per evaluation, where it happens, for error messages (``"in step 2, stage 1"``)."""
        return [f"in evaluation {k}" for k in range(self.nfe)]

    def _field_options(self, u, x0: torch.Tensor) -> dict:
        """The :meth:`_rollout` options :meth:`sample` reads off the field (e.g. guidance scales)."""
        return {}

    def _stepper_options(self, x0: torch.Tensor, guidance) -> dict:
        """The :meth:`_rollout` options of :meth:`stepper`, from its arguments."""
        if guidance is not None:
            raise FlowsolveValueError(f"a {self.label} solver takes no guidance scales (only a guidance-range solver "
                                      "does); call stepper(x0) without guidance=")
        return {}

    def _sample(self, u, x0, return_intermediates: bool, check_finite: bool, checkpoint_steps: bool,
                callback: SampleCallback | None = None):
        """The rollout behind :meth:`sample` (arguments already checked), driven by ``u``."""
        rollout = self._rollout(x0, return_intermediates, **self._field_options(u, x0))
        labels = self._evaluation_labels()
        estimate = None if callback is None else data_estimator(u)
        t, z = next(rollout)
        for index, where in enumerate(labels):
            velocity = call_checkpointed(_evaluate, u, t, z, where, check_finite, enabled=checkpoint_steps)
            if callback is not None:
                callback(index, t, z, None if estimate is None else estimate(t, z, velocity))
            try:
                t, z = rollout.send(velocity)
            except StopIteration as stop:
                if index + 1 == len(labels):
                    return stop.value
                break
        raise RuntimeError(f"the {self.label} rollout did not take exactly nfe={self.nfe} evaluations")

    def stepper(self, x0: torch.Tensor, guidance=None, *, check_finite: bool = True) -> Stepper:
        """A rollout from ``x0`` driven from outside: the caller evaluates the network.

        ``stepper.time`` and ``stepper.state`` say where the next evaluation happens;
        ``stepper.step(u(stepper.time, stepper.state))`` advances (``nfe`` times in all) and
        ``stepper.result`` is then :meth:`sample`'s result, bit for bit. Runs without autograd.

        Args:
            x0: ``(batch, ...)`` noise at ``t = 0``; sets device and dtype.
            guidance: a guidance-range solver's guidance scales (a number, or ``(batch,)``); what
                :meth:`sample` reads off the field. Other families take none.
            check_finite: refuse a velocity with inf/NaN (naming the evaluation).

        Example:
            >>> import torch, flowsolve
            >>> solver = flowsolve.compose(flowsolve.TimeOnly(), flowsolve.Heun()).at(nfe=4)
            >>> stepper = solver.stepper(torch.ones(2, 3))
            >>> while not stepper.done:
            ...     _ = stepper.step(-stepper.state)
            >>> torch.equal(stepper.result, solver.sample(lambda t, x: -x, torch.ones(2, 3)))
            True
        """
        check_state(x0)
        rollout = self._rollout(x0, False, **self._stepper_options(x0, guidance))  # runs under no_grad in Stepper
        return Stepper(rollout, self.nfe, self._evaluation_labels(), check_finite=check_finite)

    def evaluation_times(self, guidance=None) -> torch.Tensor:
        """The ``(nfe,)`` float64 flow times of the evaluations, in the order they happen.

        Every built-in family's times are fixed by its parameters, not by the state. A
        guidance-range solver's depend on the guidance scale: give it as ``guidance=`` (a number).
        """
        x0 = torch.zeros(1, 1, dtype=torch.float64, device=self._parameter_device())
        options = self._stepper_options(x0, guidance)
        times: list[torch.Tensor] = []
        with torch.no_grad():
            rollout = self._rollout(x0, False, **options)
            try:
                t, z = next(rollout)
                while True:
                    times.append(t.reshape(-1)[0] if t.dim() else t)
                    t, z = rollout.send(torch.zeros_like(z))
            except StopIteration:
                pass
        return torch.stack(times).cpu()

    def _parameter_device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def sample(
        self,
        u: VelocityField,
        x0: torch.Tensor,
        *,
        return_intermediates: bool = False,
        check_finite: bool = True,
        differentiable: bool = False,
        checkpoint_steps: bool = False,
        callback: SampleCallback | None = None,
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
            checkpoint_steps: with ``differentiable``, recompute each evaluation's activations in
                the backward pass instead of storing them (memory of one evaluation, ~2x compute).
            callback: called after every evaluation as ``callback(i, t, x, denoised)``: ``x`` is
                the state evaluation ``i`` was made at, ``t`` its time, ``denoised`` the data
                estimate ``x1_hat`` the velocity implies when ``u`` has a Gaussian-path
                ``scheduler`` (see :func:`flowsolve.solvers.stepping.data_estimator`), else ``None``.

        Returns:
            ``x_n`` shaped like ``x0``, or a :class:`Trajectory` with ``x[-1] = x_n``.
        """
        check_state(x0)
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            return self._sample(u, x0, return_intermediates, check_finite, checkpoint_steps and differentiable, callback)

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


def _evaluate(u, t, z, where: str, check_finite: bool) -> torch.Tensor:
    return call_field(u, t, z, where=where, check_finite=check_finite)


def check_state(x) -> None:
    """Refuse a state that is not a floating-point tensor with a batch dimension."""
    if not isinstance(x, torch.Tensor):
        raise FlowsolveTypeError(f"the state must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise FlowsolveTypeError(f"the state must be a floating-point tensor, got dtype {x.dtype}; use x.float() or x.double()")
    if x.dim() < 1:
        raise FlowsolveValueError("the state must have a batch dimension: shape (batch, ...), got a 0-dim tensor")
