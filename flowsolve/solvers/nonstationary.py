"""Non-stationary solvers in the spirit of Bespoke Non-Stationary solvers (Shaul et al., ICML 2024).

With ``m`` evaluations, evaluation ``k`` happens at a learned time ``t_k`` on a state that is a
learned linear combination of the noise and every earlier velocity:

    z_0 = x_0,   v_k = u(t_k, z_k),   z_{k+1} = a_k x_0 + sum_{j <= k} b_kj v_j,   output z_m.

That is ``m`` times plus ``m (m + 3) / 2`` weights: ``m (m + 5) / 2`` parameters. Every explicit
Runge--Kutta or multistep method with fixed coefficients -- a base solver, a fitted scale-time
solver, DDIM, DPM-Solver++ on any grid -- is linear in ``x_0`` and the velocities, so it is one
member of the family: :func:`trace` reads its coefficients off exactly, which is how a
non-stationary solver starts. Each step has its own coefficients, so there is no step-wise
order to keep: the family is *not* order-consistent, and it trains on the final-sample error
through the whole rollout (RMSE or PSNR), not on local errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import attrs
import torch
from torch import nn

from flowsolve.core.errors import FlowsolveTypeError, FlowsolveValueError
from flowsolve.core.solver_file import part_spec
from flowsolve.methods.base import BaseMethod
from flowsolve.methods.runge_kutta import Midpoint
from flowsolve.solvers.family_base import Family
from flowsolve.solvers.module import SolverModule, Trajectory
from flowsolve.solvers.parametric import ParametricSolver

FAMILY_NAME = "non-stationary"


class NonStationarySolver(SolverModule):
    """A solver with its own time and combination weights for each of its ``nfe`` evaluations.

    Parameters (float64): ``times`` ``(m,)``, clamped to ``[0, 1]`` where the field is called,
    and ``weights`` ``(m, m + 1)``, row ``k`` giving ``z_{k+1}`` over ``[x_0, v_0, ..., v_{m-1}]``
    (entries past ``v_k`` are masked). Both are stored divided by a scale fixed at
    initialisation (not trained), so Adam's steps (about ``lr`` per raw parameter whatever its
    size) are relative changes: weights per column (``weight_scale``: each velocity's
    coefficient size, which spans orders of magnitude on diffusion paths) and times per
    evaluation (``time_scale``: the gap to the nearest other evaluation time or end point, which
    on a log-SNR grid runs from ~0.1 down to ~1e-4 near the data). Without the time scale a
    learning rate that moves the coarse early times usefully jumps the last, finely spaced times
    past each other.

    Args:
        nfe: number of velocity evaluations ``m``.

    Example:
        >>> import torch, flowsolve
        >>> solver = flowsolve.NonStationary().at(nfe=6)  # Midpoint on a uniform grid, exactly
        >>> x1 = solver.sample(lambda t, x: -x, torch.randn(4, 3))
    """

    has_local_steps = False  # no per-step map: RMSE-Bound / LTE do not apply

    def __init__(self, nfe: int):
        super().__init__()
        if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
            raise FlowsolveValueError(f"nfe must be a positive int, got {nfe!r}")
        m = nfe
        self.params = nn.ParameterDict({
            "times": nn.Parameter(torch.zeros(m, dtype=torch.float64)),
            "weights": nn.Parameter(torch.zeros(m, m + 1, dtype=torch.float64)),
            "weight_scale": nn.Parameter(torch.ones(m + 1, dtype=torch.float64), requires_grad=False),
            "time_scale": nn.Parameter(torch.ones(m, dtype=torch.float64), requires_grad=False),
        })
        self.register_buffer("mask", torch.ones(m, m + 1, dtype=torch.float64).tril(1), persistent=False)
        self.metadata: dict = {}

    @property
    def nfe(self) -> int:
        return self.params["times"].numel()

    @property
    def n_steps(self) -> int:
        return self.nfe

    @property
    def num_params(self) -> int:
        m = self.nfe
        return m * (m + 5) // 2

    @property
    def label(self) -> str:
        return FAMILY_NAME

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(times, weights)``: the evaluation times and the ``(m, m + 1)`` combination weights."""
        return stored_coefficients(self.params, self.get_buffer("mask"))

    def set_coefficients(self, times: torch.Tensor, weights: torch.Tensor) -> None:
        """Set times and weights (e.g. from :func:`trace`); rescales the stored weights per column."""
        m = self.nfe
        times, weights = (torch.as_tensor(v, dtype=torch.float64).detach().cpu() for v in (times, weights))
        if times.shape != (m,) or weights.shape != (m, m + 1):
            raise FlowsolveValueError(f"need times ({m},) and weights ({m}, {m + 1}), got {tuple(times.shape)} and {tuple(weights.shape)}")
        mask = self.get_buffer("mask").cpu()
        if bool((weights * (1 - mask)).ne(0).any()):
            raise FlowsolveValueError("weights of z_{k+1} may only involve x_0 and v_0 .. v_k (lower triangle plus one)")
        scale = weights.abs().amax(0)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        scale[0] = 1.0  # x_0's weights stay as they are
        time_scale = _time_scales(times)
        with torch.no_grad():
            self.params["times"].copy_(times / time_scale)
            self.params["time_scale"].copy_(time_scale)
            self.params["weight_scale"].copy_(scale)
            self.params["weights"].copy_(weights / scale)

    @classmethod
    def upgrade_parameters(cls, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Parameters of a file written before ``time_scale`` existed: its times are unscaled."""
        if "time_scale" not in tensors and "times" in tensors:
            return {**tensors, "time_scale": torch.ones_like(tensors["times"])}
        return tensors

    def initialise(self, init, model=None) -> None:
        """Start from ``init``: any method :func:`trace` accepts, or a solver of this family at this NFE."""
        if isinstance(init, NonStationarySolver):
            if init.nfe != self.nfe:
                raise FlowsolveValueError(f"cannot start an NFE {self.nfe} non-stationary solver from one with NFE {init.nfe}")
            self.load_state_dict(init.state_dict())
            return
        self.set_coefficients(*trace(init, self.nfe, model))

    # -- sampling ----------------------------------------------------------------------------
    def _rollout(self, x0, return_intermediates):
        """The ``m`` evaluations; intermediates are the evaluation states ``z_k`` at ``t_k``, then
        the output at ``t = 1``."""
        times, weights = (v.to(device=x0.device, dtype=x0.dtype) for v in self.coefficients())
        times = times.clamp(0.0, 1.0)
        basis, states, z = [x0], [x0], x0
        for k in range(self.nfe):
            velocity = yield times[k], z
            basis.append(velocity)
            z = weights[k, 0] * x0
            for j in range(1, k + 2):
                z = z + weights[k, j] * basis[j]
            if return_intermediates:
                states.append(z)
        if not return_intermediates:
            return z
        stamps = torch.cat([times, times.new_ones(1)])
        return Trajectory(t=stamps, x=torch.stack(states))

    def family_spec(self) -> dict:
        # Which base the family started from does not matter to a fitted solver: it is not stored.
        return part_spec("solver family", FAMILY_NAME)

    def extra_repr(self) -> str:
        return f"nfe={self.nfe}, params={self.num_params}"


def stored_coefficients(params, mask: torch.Tensor, suffix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """``(times, weights)`` from stored parameters ``times``, ``weights`` and their fixed scales
    (names ending in ``suffix``, e.g. ``"_0"`` for a guidance-range solver's first anchor)."""
    weights = params["weights" + suffix] * params["weight_scale" + suffix] * mask
    return params["times" + suffix] * params["time_scale" + suffix], weights


# Smallest time scale: a repeated time (two stages at one time) has no gap of its own.
MIN_TIME_SCALE = 1e-6


def _time_scales(times: torch.Tensor) -> torch.Tensor:
    """Per evaluation time, the distance to the nearest *other* time among the evaluation times
    and the end points 0 and 1 (at least :data:`MIN_TIME_SCALE`)."""
    points = torch.cat([times, times.new_tensor([0.0, 1.0])]).unique()
    scales = []
    for t in times.tolist():
        gaps = (points - t).abs()
        gaps = gaps[gaps > 0]
        scales.append(float(gaps.min()) if gaps.numel() else 1.0)
    return torch.tensor(scales, dtype=torch.float64).clamp_min(MIN_TIME_SCALE)


# -- tracing a linear method -------------------------------------------------------------------
class _RecordingField:
    """A velocity field whose ``k``-th call returns basis vector ``e_{k+1}`` and records the
    time and the state's coefficients; it carries the model's scheduler and time range so that
    scheduler-based methods (DDIM, DPM-Solver++) pick the same grid as on the model."""

    def __init__(self, size: int, model=None):
        self.size = size
        self.times: list[float] = []
        self.states: list[torch.Tensor] = []
        for name in ("scheduler", "time_range"):
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    def __call__(self, t, z):
        if z.shape != (1, self.size) or torch.as_tensor(t).numel() != 1:
            raise FlowsolveValueError("trace: the method must call the field on the single traced state with a scalar time")
        k = len(self.times)
        if k + 1 >= self.size:
            raise FlowsolveValueError(f"trace: the method evaluates the field more than {self.size - 1} times")
        self.times.append(float(t))
        self.states.append(z[0].clone())
        return torch.nn.functional.one_hot(torch.tensor([k + 1]), self.size).to(z)


def _as_method(init, nfe: int, model) -> Callable:
    """``x0 -> x1`` of ``init``: a base solver (uniform grid), a parametric solver, a baseline
    object or a registered base-solver / baseline name."""
    if isinstance(init, str):
        # Names are resolved on demand: the training-free baselines and the plugin registry live
        # in layers above this one (fit and the CLI pass names through unchanged).
        from flowsolve.baselines import builtin_baselines

        baselines = builtin_baselines()
        if init in baselines:
            init = baselines[init]()
        else:
            from flowsolve.plugins.registry import base_solver

            init = base_solver(init)
    if isinstance(init, BaseMethod):
        return lambda u, x0: init.sample(u, x0, nfe)
    if isinstance(init, ParametricSolver):
        if init.nfe != nfe:
            raise FlowsolveValueError(f"cannot trace a solver with NFE {init.nfe} into NFE {nfe}")
        return lambda u, x0: init.sample(u, x0)
    if hasattr(init, "sample"):
        if getattr(init, "needs_scheduler", False) and model is None:
            raise FlowsolveValueError(f"tracing {init.name} needs the model (its scheduler sets the grid): pass model=")
        return lambda u, x0: init.sample(u, x0, nfe)[0]
    raise FlowsolveTypeError(
        f"cannot start a non-stationary solver from {type(init).__name__}; give a BaseSolver, a ParametricSolver, "
        "a baseline (e.g. flowsolve.baselines.DPMSolverPP2M()) or a base-solver / baseline name"
    )


def trace(init, nfe: int, model=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(times, weights)`` of a method that is linear in ``x_0`` and its velocities.

    The method runs once on a ``1 x (nfe + 1)`` coefficient vector: ``x_0 = e_0`` and the
    ``k``-th velocity ``e_{k+1}``, so every state it forms is its own coefficient vector.

    Args:
        init: see :meth:`NonStationarySolver.initialise`.
        nfe: evaluations the method must spend (an error if it spends another number).
        model: the model whose scheduler and time range scheduler-based baselines use.
    """
    method = _as_method(init, nfe, model)
    field = _RecordingField(nfe + 1, model)
    x0 = torch.nn.functional.one_hot(torch.tensor([0]), nfe + 1).to(torch.float64)
    output = method(field, x0)
    if len(field.times) != nfe:
        raise FlowsolveValueError(f"trace: the method spent {len(field.times)} evaluations, not nfe={nfe}")
    if not torch.equal(field.states[0], x0[0]):
        raise FlowsolveValueError(
            f"trace: the method first evaluates the field at {field.states[0].tolist()} x (x_0, v_0, ...), not at the "
            "noise x_0 itself (e.g. EDM's Heun starts from sigma_max * x_0); a non-stationary solver starts at x_0"
        )
    states = field.states[1:] + [output[0]]
    times, weights = torch.tensor(field.times, dtype=torch.float64), torch.stack(states).to(torch.float64)
    if not bool(torch.isfinite(weights).all()):
        raise FlowsolveValueError(
            f"trace: the method's coefficients are not finite (its evaluation times: "
            f"{[round(t, 6) for t in field.times]}); a repeated time or a step of zero length on the model's "
            "grid does that: check that the model's scheduler and time_range describe its real noise range"
        )
    return times, weights


@attrs.frozen
class NonStationary(Family):
    """The non-stationary family; ``at(nfe)`` reproduces ``base`` on a uniform grid exactly.

    Example:
        >>> import flowsolve
        >>> flowsolve.NonStationary().at(nfe=10).num_params  # m (m + 5) / 2
        75
    """

    base: BaseMethod = attrs.field(factory=Midpoint)
    name = FAMILY_NAME
    solver_class = NonStationarySolver

    has_local_steps = False
    conformance_checks = ("start", "contracts", "gradients", "order-consistency")
    # Times and weights are stored relative to their own scale, so lr is a relative change per
    # step; measured on digits-eps-vp at NFE 8 (300 steps of 32): test RMSE 0.042 / 0.028 / 0.042
    # at lr 1e-2 / 3e-2 / 1e-1 (DPM-Solver++(2M), the start: 0.150). At batch 4 on the animal
    # U-Net fit scales it to 1.1e-2 (sqrt rule), where the warm-up keeps the first steps from
    # overshooting (animals-eps-vp w = 2, NFE 10: test 0.080 vs 0.086 without, 0.084 at 3e-2).
    default_lr = 3e-2
    default_lr_schedule = "warmup-cosine"

    def at(self, nfe: int, init=None, model=None) -> NonStationarySolver:
        """The solver at ``nfe``, started as ``base`` on a uniform grid, or as ``init`` (see
        :meth:`NonStationarySolver.initialise`; then ``nfe`` need not suit ``base``)."""
        if init is None:
            self.base.n_steps(nfe)  # a clear error for an NFE the base cannot split into steps
        solver = NonStationarySolver(nfe)
        solver.initialise(self.base if init is None else init, model)
        return solver

    def new_solver(self, nfe: int) -> NonStationarySolver:
        return NonStationarySolver(nfe)

    def to_dict(self) -> dict:
        return {"name": FAMILY_NAME, "base": self.base.name}

    def to_spec(self) -> dict:
        return part_spec(self.kind, self.name, {"base": self.base.to_spec()})

    @classmethod
    def from_spec(cls, name: str, options: dict) -> NonStationary:
        return cls(**options)

    @property
    def label(self) -> str:
        return FAMILY_NAME if self.base == Midpoint() else f"{FAMILY_NAME} {self.base.name}"

    def fit(self, model, nfe: int, **options) -> NonStationarySolver:
        """Fit at ``nfe`` to ``model`` like :meth:`ParametricFamily.fit`; the loss defaults to
        :class:`~flowsolve.RMSE` (a full rollout) and ``init`` may be any method :func:`trace` accepts
        (e.g. ``"dpm-solver++(2m)"``, ``"ddim"``, a fitted scale-time solver)."""
        return cast(NonStationarySolver, super().fit(model, nfe, **options))
