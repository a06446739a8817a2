"""Driving a solver one velocity evaluation at a time: the caller owns the network call.

Every solver's rollout is a generator (``SolverModule._rollout``): it yields ``(t, z)``, the
time and state of its next evaluation, receives the velocity ``u(t, z)`` (``v = yield t, z``)
and returns the final sample. :meth:`~flowsolve.solvers.module.SolverModule.sample` drives it
with the field; a :class:`Stepper` (``solver.stepper(x0)``) hands each request to the caller
instead, so a sampling loop written elsewhere (a diffusers pipeline, a k-diffusion sampler, a
server batching requests) can run a fitted solver. Both run the same tensor operations in the
same order, so stepping with ``u(stepper.time, stepper.state)`` gives ``sample``'s result bit
for bit.

Example:
    >>> import torch, flowsolve
    >>> solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=4)
    >>> stepper = solver.stepper(torch.randn(2, 3))
    >>> while not stepper.done:
    ...     x = stepper.step(-stepper.state)  # the velocity u(stepper.time, stepper.state) = -x
    >>> stepper.result.shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

import torch

from flowsolve.core.broadcast import per_sample
from flowsolve.core.errors import FlowsolveTypeError, FlowsolveValueError
from flowsolve.core.field import NonFiniteVelocityError

# What a rollout yields: the time (0-dim, or (batch,) per sample) and the state of its next evaluation.
Request = tuple[torch.Tensor, torch.Tensor]
# A rollout: yields requests, is sent velocities, returns the final sample (or a Trajectory).
Rollout = Generator[Request, torch.Tensor, Any]
# x1_hat from (t, x, velocity): see data_estimator.
DataEstimator = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

_PATH_FUNCTIONS = ("alpha", "sigma", "d_alpha", "d_sigma")


class Stepper:
    """One rollout of a solver, driven from outside: give it the velocity at each requested point.

    Made by :meth:`SolverModule.stepper <flowsolve.solvers.module.SolverModule.stepper>`; the
    rollout runs without autograd. Device and dtype follow the noise it started from.

    Attributes (read-only):
        nfe: the evaluations it takes in all (the solver's ``nfe``).
        index: evaluations given so far (``0 .. nfe``).
        time: the flow time of the next evaluation, a 0-dim tensor (or ``(batch,)`` for a
            family with per-sample times, such as guidance-range).
        state: the state ``x`` the next evaluation happens at (after the last: the sample).
        done: whether all ``nfe`` evaluations were given.
        result: the final sample (an error before ``done``).
    """

    __slots__ = ("_rollout", "_nfe", "_labels", "_check_finite", "_index", "_time", "_state", "_result")

    def __init__(self, rollout: Rollout, nfe: int, labels: Sequence[str], *, check_finite: bool = True):
        self._rollout, self._nfe, self._labels, self._check_finite = rollout, nfe, labels, check_finite
        self._index = 0
        self._result: torch.Tensor | None = None
        with torch.no_grad():
            try:
                self._time, self._state = next(rollout)
            except StopIteration:
                raise FlowsolveValueError("the solver's rollout took no evaluation; a solver needs nfe >= 1") from None

    @property
    def nfe(self) -> int:
        return self._nfe

    @property
    def index(self) -> int:
        return self._index

    @property
    def done(self) -> bool:
        return self._result is not None

    @property
    def time(self) -> torch.Tensor:
        if self._result is not None:
            raise FlowsolveValueError(f"the stepper is done: all {self._nfe} evaluations were given, there is no next time "
                                      "(the sample is stepper.result)")
        return self._time

    @property
    def state(self) -> torch.Tensor:
        return self._state if self._result is None else self._result

    @property
    def result(self) -> torch.Tensor:
        if self._result is None:
            raise FlowsolveValueError(f"the stepper is not done: {self._index} of {self._nfe} evaluations given; call "
                                      "step(velocity) until stepper.done")
        return self._result

    def _where(self) -> str:
        label = self._labels[self._index] if self._index < len(self._labels) else ""
        return f"evaluation {self._index} of {self._nfe}" + (f" ({label})" if label else "")

    def step(self, velocity: torch.Tensor) -> torch.Tensor:
        """Give ``u(stepper.time, stepper.state)``; returns the next evaluation's state, after the
        last evaluation the final sample. A rejected velocity leaves the stepper as it was."""
        if self._result is not None:
            raise FlowsolveValueError(f"stepped past the end: all {self._nfe} evaluations were given already "
                                      "(the sample is stepper.result)")
        check_velocity(velocity, self._state, self._where)
        if self._check_finite and not bool(torch.isfinite(velocity).all()):
            raise NonFiniteVelocityError(
                f"the velocity given for {self._where()} at t = {_times_text(self._time)} has non-finite values; "
                "check the model (and its time convention: flow time t in [0, 1], 0 = noise)"
            )
        with torch.no_grad():
            try:
                self._time, self._state = self._rollout.send(velocity)
            except StopIteration as stop:
                self._result = stop.value
        self._index += 1
        if (self._result is None) == (self._index >= self._nfe):  # a rollout that miscounts is a bug
            raise RuntimeError(f"the rollout {'asked for more' if self._result is None else 'ended after'} "
                               f"{self._index} evaluations; the solver has nfe={self._nfe}")
        return self.state

    def __repr__(self) -> str:
        return f"Stepper(index={self._index}, nfe={self._nfe}, done={self.done})"


def check_velocity(velocity, state: torch.Tensor, where: Callable[[], str]) -> None:
    """Refuse a velocity that is not a tensor shaped, typed and placed like ``state``."""
    if not isinstance(velocity, torch.Tensor):
        raise FlowsolveTypeError(f"the velocity for {where()} must be a torch.Tensor, got {type(velocity).__name__}")
    if velocity.shape != state.shape:
        raise FlowsolveValueError(f"the velocity for {where()} has shape {tuple(velocity.shape)}; the state has "
                                  f"{tuple(state.shape)} (give u(stepper.time, stepper.state), shaped like the state)")
    if velocity.dtype != state.dtype:
        raise FlowsolveTypeError(f"the velocity for {where()} has dtype {velocity.dtype}; the state has {state.dtype} "
                                 "(cast the model output to the state's dtype)")
    if velocity.device != state.device:
        raise FlowsolveValueError(f"the velocity for {where()} is on {velocity.device}; the state is on {state.device}")


def _times_text(t: torch.Tensor) -> str:
    values = sorted(set(t.detach().reshape(-1).tolist()))
    return str([round(v, 6) for v in values[:8]])


def data_estimator(field) -> DataEstimator | None:
    """``x1_hat(t, x, velocity)`` on ``field``'s Gaussian path, or ``None`` for a field without one.

    A field with a ``scheduler`` (``alpha, sigma, d_alpha, d_sigma``: ``x_t = sigma_t x0 +
    alpha_t x1``) has ``u = sigma' x0 + alpha' x1`` on it, so the data estimate is
    ``x1_hat = (sigma' x - sigma u) / (sigma' alpha - sigma alpha')``. A field with a
    ``time_range`` (an adapter) evaluates its network inside it, held at the ends, so the
    estimate is taken at the time clamped to that range (e.g. EDM's ``D(x; sigma_max)`` at
    t = 0); past the end of a range that stops before ``t = 1``, an adapter that finishes with a
    final denoising (``denoise_at_end``) heads straight for its data estimate,
    ``u = (x1_hat - x) / (1 - t_end)``, so there ``x1_hat = x + (1 - t_end) u``. Coefficients are
    computed in float64 and applied in ``x``'s dtype; no network call is made.
    """
    scheduler = getattr(field, "scheduler", None)
    if scheduler is None or not all(callable(getattr(scheduler, name, None)) for name in _PATH_FUNCTIONS):
        return None
    time_range = getattr(field, "time_range", None)
    low, high = (float(v) for v in time_range) if time_range is not None else (0.0, 1.0)
    chord_past_end = high < 1 and callable(getattr(field, "denoise_at_end", None))

    # The same 2x2 solve as paths.predictions.predictions_from_velocity, written here because
    # solvers sit below paths in the layering (tests/test_layers.py): the scheduler is duck-typed.
    def estimate(t: torch.Tensor, x: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            requested = t.detach().to(torch.float64)
            time = requested.clamp(low, high)
            alpha, sigma, d_alpha, d_sigma = (getattr(scheduler, name)(time) for name in _PATH_FUNCTIONS)
            determinant = d_sigma * alpha - sigma * d_alpha
            on_x, on_velocity = d_sigma / determinant, -sigma / determinant
            if chord_past_end:
                past = requested > high
                on_x = torch.where(past, torch.ones_like(on_x), on_x)
                on_velocity = torch.where(past, torch.full_like(on_velocity, 1 - high), on_velocity)
            on_x, on_velocity = (per_sample(c.to(x.dtype), x) for c in (on_x, on_velocity))
            return on_x * x + on_velocity * velocity

    return estimate
