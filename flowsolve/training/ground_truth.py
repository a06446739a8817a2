"""Ground truth: dense dopri5 paths kept with their velocities, which the losses compare solvers against.

Each path is stored at the accepted steps of torchdiffeq's ``dopri5`` (state and velocity;
the solver computes both anyway) and read back at any ``t`` by cubic Hermite interpolation.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
import torchdiffeq

from flowsolve.core.errors import FlowsolveValueError
from flowsolve.core.field import VelocityField, call_field
from flowsolve.models.conditioning import Conditions, bind, check_conditions

# Defaults suited to float32 networks (a tighter tolerance only buys float32 round-off).
DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-5
# Caps the knot spacing: Hermite read-back error ~5e-6 instead of ~1e-4 at ~30% more NFE
# (measured on the 64-dim Gaussian-mixture flow).
DEFAULT_MAX_STEP = 0.05


def check_tolerances(rtol, atol, max_step=None) -> None:
    """Refuse dopri5 settings it cannot work with, naming the argument (before any solve).

    ``rtol`` and ``atol`` must be finite and non-negative, and not both 0 (no step could be
    accepted); ``max_step`` is ``None`` (no cap) or positive.
    """
    for name, value in (("rtol", rtol), ("atol", atol)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and float(value) >= 0):
            raise FlowsolveValueError(f"{name} must be a finite number >= 0 (a dopri5 tolerance, e.g. 1e-5), got {value!r}")
    if rtol == 0 and atol == 0:
        raise FlowsolveValueError(
            "rtol and atol are both 0: dopri5 could never accept a step; give at least one a positive value, "
            f"e.g. rtol=atol={DEFAULT_RTOL:g}"
        )
    if max_step is not None and (isinstance(max_step, bool) or not isinstance(max_step, numbers.Real)
                                 or not float(max_step) > 0):
        raise FlowsolveValueError(
            f"max_step must be None (no cap) or a positive number (the largest dopri5 step, e.g. {DEFAULT_MAX_STEP}), "
            f"got {max_step!r}"
        )


def clamp_time(field: VelocityField) -> VelocityField:
    """Guard a field so it never sees ``t`` outside ``[0, 1]``: dopri5 probes past the end point."""

    def guarded(t, x):
        return field(t.clamp(0.0, 1.0), x)

    guarded.accepts_batched_time = getattr(field, "accepts_batched_time", False)  # type: ignore[attr-defined]
    return guarded


def network_end(u: VelocityField) -> tuple[float, Callable[[torch.Tensor], torch.Tensor]] | None:
    """``(t_end, denoise)`` for a field whose network stops before ``t = 1`` and that says how to
    finish (:meth:`flowsolve.Adapter.denoise_at_end`): its ground truth is the ODE solution at
    ``t_end`` followed by that final denoising, the same ending every solver and baseline gets.
    ``None`` for a field valid up to ``t = 1``."""
    denoise = getattr(u, "denoise_at_end", None)
    end = float(getattr(u, "time_range", (0.0, 1.0))[1])
    if not callable(denoise) or end >= 1:
        return None
    return end, denoise


def solve_reference(u: VelocityField, x0: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-5) -> torch.Tensor:
    """``x(1)`` from ``x0`` by dopri5 at the given tolerances (no dense storage); a field that
    stops before ``t = 1`` is solved to its end and denoised there (:func:`network_end`)."""
    check_tolerances(rtol, atol)
    ending = network_end(u)
    with torch.no_grad():
        times = torch.tensor([0.0, 1.0 if ending is None else ending[0]], dtype=x0.dtype, device=x0.device)
        options = {"step_t": times[1:]}
        x = torchdiffeq.odeint(clamp_time(u), x0, times, method="dopri5", rtol=rtol, atol=atol, options=options)[-1]
        return x if ending is None else ending[1](x)


class _KnotRecorder(torch.nn.Module):
    """Records ``(t, x, u)`` at every accepted dopri5 step.

    dopri5 is first-same-as-last: its last stage evaluates ``u(t1, y1)`` at the accepted point,
    so the most recent evaluation when a step is accepted is the new knot.
    """

    def __init__(self, field: VelocityField):
        super().__init__()
        self.field = field
        self.knots: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.last = None
        self.evaluations = 0

    def forward(self, t, x):
        # Time runs in float64 inside the solver; the field sees x's dtype, never t outside [0, 1].
        velocity = call_field(self.field, t.clamp(0.0, 1.0).to(x.dtype), x, where="in the dopri5 ground-truth solve")
        self.evaluations += 1
        self.last = (t, x, velocity)
        if not self.knots and float(t) == 0.0:
            self.knots.append((torch.zeros((), dtype=torch.float64, device=x.device), x, velocity))
        return velocity

    def callback_accept_step(self, t0, y0, dt):
        t, x, velocity = self.last
        t1 = t0 + dt
        # torchdiffeq hands the field t cast to x's dtype and nudged one ulp below t1.
        resolution = 8 * torch.finfo(x.dtype).eps
        if not math.isclose(float(t), float(t1), rel_tol=resolution, abs_tol=resolution):
            raise RuntimeError(
                "torchdiffeq's dopri5 no longer ends a step with an evaluation at the accepted point; "
                "flowsolve's dense ground truth needs that (first-same-as-last) behaviour"
            )
        self.knots.append((t1.to(torch.float64), x, velocity))


def solve_dense(
    u: VelocityField,
    x0: torch.Tensor,
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    max_step: float | None = DEFAULT_MAX_STEP,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Solve on ``[0, 1]`` with dopri5 and return the knots.

    Returns:
        ``times (K,)`` float64, ``states (K, batch, ...)``, ``velocities (K, batch, ...)`` with
        ``times[0] = 0``, ``times[-1] = 1``, and the number of field evaluations.
    """
    check_tolerances(rtol, atol, max_step)
    ending = network_end(u)
    end = 1.0 if ending is None else ending[0]
    recorder = _KnotRecorder(u)
    grid = torch.tensor([0.0, end], dtype=torch.float64, device=x0.device)
    options: dict[str, object] = {"step_t": grid[1:]}  # land a step exactly on the end
    if max_step is not None:
        options["max_step"] = max_step
    with torch.no_grad():
        torchdiffeq.odeint(recorder, x0, grid, method="dopri5", rtol=rtol, atol=atol, options=options)
    knots = recorder.knots
    if abs(float(knots[-1][0]) - end) > 1e-9:
        raise RuntimeError(f"dense ground truth did not end at t = {end} (last knot at t = {float(knots[-1][0])})")
    evaluations = recorder.evaluations
    if ending is not None:  # the final denoising: a straight last segment to the data estimate at t_end
        with torch.no_grad():
            state = knots[-1][1]
            data = ending[1](state)
        evaluations += 1
        knots = knots + [(knots[-1][0].new_tensor(1.0), data, (data - state) / (1 - end))]
    times = torch.stack([k[0] for k in knots])
    times[-1] = 1.0  # t0 + (1 - t0) can miss 1 by round-off
    if ending is not None:
        times[-2] = end
    states = torch.stack([k[1] for k in knots])
    velocities = torch.stack([k[2] for k in knots])
    return times, states, velocities, evaluations


def hermite(t, t0, t1, x0, x1, u0, u1):
    """Cubic Hermite interpolant and its ``t``-derivative on ``[t0, t1]`` (all broadcastable)."""
    h = t1 - t0
    s = (t - t0) / h
    s2, s3 = s * s, s * s * s
    h00, h10, h01, h11 = 2 * s3 - 3 * s2 + 1, s3 - 2 * s2 + s, -2 * s3 + 3 * s2, s3 - s2
    value = h00 * x0 + h10 * h * u0 + h01 * x1 + h11 * h * u1
    d00, d10, d01, d11 = 6 * s2 - 6 * s, 3 * s2 - 4 * s + 1, -6 * s2 + 6 * s, 3 * s2 - 2 * s
    derivative = (d00 * x0 + d01 * x1) / h + d10 * u0 + d11 * u1
    return value, derivative


class GroundTruth:
    """Ground-truth paths ``x(t)`` from noise ``x0``, readable at any ``t`` in ``[0, 1]``.

    Attributes:
        x0: ``(N, ...)`` initial noise.
        conditions: ``{name: (N, ...)}`` the conditions each path was solved with
            (:mod:`flowsolve.models.conditioning`), or ``None``.
        times: ``(N, K)`` knot times per path (paths solved together share them; padding
            beyond ``t = 1`` repeats the end point).
        states, velocities: ``(N, K, ...)`` path and velocity at the knots.
        evaluations: field evaluations spent per path.
    """

    def __init__(self, x0, times, states, velocities, evaluations: float = float("nan"),
                 conditions: Conditions | None = None):
        self.x0, self.times, self.states, self.velocities = x0, times, states, velocities
        self.evaluations = evaluations
        self.conditions = check_conditions(conditions, x0.shape[0]) if conditions else None

    def field(self, u: VelocityField) -> VelocityField:
        """``u`` with these paths' conditions bound (``u`` itself for unconditional paths)."""
        return bind(u, self.conditions)

    def __len__(self) -> int:
        return self.x0.shape[0]

    @property
    def x1(self) -> torch.Tensor:
        """``x(1)``, ``(N, ...)``."""
        return self.states[:, -1]

    def to(self, device=None, dtype=None) -> "GroundTruth":
        move = lambda v: v.to(device=device, dtype=dtype)  # noqa: E731
        # Conditions keep their dtype (labels are integers): they only change device.
        conditions = None if self.conditions is None else {k: v.to(device) for k, v in self.conditions.items()}
        return GroundTruth(move(self.x0), move(self.times), move(self.states), move(self.velocities), self.evaluations,
                           conditions)

    def subset(self, index) -> "GroundTruth":
        conditions = None if self.conditions is None else {k: v[index] for k, v in self.conditions.items()}
        return GroundTruth(self.x0[index], self.times[index], self.states[index], self.velocities[index],
                           self.evaluations, conditions)

    @classmethod
    def concatenate(cls, parts: list["GroundTruth"]) -> "GroundTruth":
        """Join paths with different knot counts (shorter ones padded past ``t = 1``)."""
        width = max(p.times.shape[1] for p in parts)
        padded = [_pad(p, width) for p in parts]
        total = sum(len(p) for p in parts)
        evaluations = sum(p.evaluations * len(p) for p in parts) / total
        x0, times, states, velocities = (torch.cat([getattr(p, name) for p in padded])
                                         for name in ("x0", "times", "states", "velocities"))
        keys = {tuple(sorted(p.conditions)) if p.conditions else () for p in parts}
        if len(keys) > 1:
            raise FlowsolveValueError(f"cannot join paths solved with different conditions: {sorted(keys)}")
        names = keys.pop()
        conditions = {k: torch.cat([p.conditions[k] for p in parts if p.conditions]) for k in names} or None
        return cls(x0, times, states, velocities, evaluations=evaluations, conditions=conditions)

    def at(self, t: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """``x(t)`` for per-path times, with the gradient rule of eq. 27.

        Args:
            t: ``(B,)`` times in ``[0, 1]``; may require grad.
            index: ``(B,)`` which path each time refers to (default: path ``j`` for ``t[j]``).

        Returns:
            ``(B, ...)``: value ``x(t)``; derivative in ``t`` the path velocity, i.e.
            ``x_aux(t) = x(sg t) + u(sg t) (t - sg t)``.
        """
        if index is None:
            index = torch.arange(len(self), device=self.times.device)
        fixed = t.detach().to(self.times.dtype)
        if bool(((fixed < 0) | (fixed > 1)).any()):
            raise FlowsolveValueError("ground truth can only be read at t in [0, 1]")
        times = self.times[index]
        right = torch.searchsorted(times.contiguous(), fixed[:, None].contiguous()).squeeze(1).clamp(1, times.shape[1] - 1)
        left = right - 1
        gather = lambda v, j: v[index, j]  # noqa: E731
        shape = (-1,) + (1,) * (self.states.dim() - 2)
        t0, t1 = gather(self.times, left).reshape(shape), gather(self.times, right).reshape(shape)
        value, derivative = hermite(
            fixed.reshape(shape), t0, t1,
            gather(self.states, left), gather(self.states, right),
            gather(self.velocities, left), gather(self.velocities, right),
        )
        # Weights are computed in float64 (the knot times' dtype); the result keeps the states' dtype.
        value, derivative = value.to(self.states.dtype), derivative.to(self.states.dtype)
        offset = (t - t.detach()).to(value.dtype).reshape(shape)
        return value + derivative * offset


def _pad(part: GroundTruth, width: int) -> GroundTruth:
    missing = width - part.times.shape[1]
    if missing == 0:
        return part
    extra_times = 1.0 + torch.arange(1, missing + 1, dtype=part.times.dtype, device=part.times.device)
    times = torch.cat([part.times, extra_times.expand(part.times.shape[0], missing)], 1)
    repeat = lambda v: torch.cat([v, v[:, -1:].expand(-1, missing, *v.shape[2:])], 1)  # noqa: E731
    return GroundTruth(part.x0, times, repeat(part.states), repeat(part.velocities), part.evaluations,
                       part.conditions)


def ground_truth(
    u: VelocityField,
    x0: torch.Tensor,
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    max_step: float | None = DEFAULT_MAX_STEP,
    batch_size: int | None = None,
    conditions: Conditions | None = None,
) -> GroundTruth:
    """Solve ``dx/dt = u(t, x)`` from each ``x0`` with dopri5 and keep the paths densely.

    Args:
        u: velocity field; never evaluated outside ``t in [0, 1]``.
        x0: ``(N, ...)`` noise.
        rtol, atol: dopri5 tolerances.
        max_step: optional cap on dopri5's step, i.e. on the spacing of the stored knots.
        batch_size: paths solved together (they share step sizes); default all.
        conditions: ``{name: (N, ...)}`` per-path conditions of a conditional ``u``
            (bound with ``u.bind``), kept with the paths.

    Example:
        >>> from flowsolve.models.gaussian_mixture import GaussianMixtureFlow
        >>> flow = GaussianMixtureFlow.random(dim=4, components=2)
        >>> gt = ground_truth(flow, torch.randn(8, 4, dtype=torch.float64))
        >>> gt.at(torch.full((8,), 0.5, dtype=torch.float64)).shape
        torch.Size([8, 4])
    """
    check_tolerances(rtol, atol, max_step)
    if conditions:
        check_conditions(conditions, x0.shape[0])
    batch_size = batch_size or x0.shape[0]
    parts = []
    for start in range(0, x0.shape[0], batch_size):
        chunk = x0[start : start + batch_size]
        rows = {k: v[start : start + batch_size] for k, v in conditions.items()} if conditions else None
        times, states, velocities, evaluations = solve_dense(bind(u, rows), chunk, rtol=rtol, atol=atol,
                                                             max_step=max_step)
        parts.append(GroundTruth(chunk, times.expand(chunk.shape[0], -1), states.transpose(0, 1),
                                 velocities.transpose(0, 1), float(evaluations), rows))
    return GroundTruth.concatenate(parts)
