"""The parametric solver: a transform x a Runge--Kutta base solver x ``n`` steps (paper sec. 2.1--2.2)."""

from __future__ import annotations

from collections.abc import Generator
from typing import NamedTuple, cast

import torch
from torch import nn

from flowsolve.core.broadcast import per_sample
from flowsolve.core.errors import FlowsolveTypeError, FlowsolveValueError
from flowsolve.core.field import VelocityField, call_field
from flowsolve.core.lipschitz import amplification, check_L_tau, field_lipschitz
from flowsolve.core.rk_step import rk_step
from flowsolve.core.solver_file import part_spec
from flowsolve.methods.base import BaseMethod
from flowsolve.methods.runge_kutta import BaseSolver
from flowsolve.solvers.module import SolverModule, Trajectory, check_state
from flowsolve.solvers.stepping import Request
from flowsolve.solvers.transforms import NodeValues, Transform

# The name a solver file stores for the transform x base family (see flowsolve.solvers.family).
TRANSFORM_X_BASE = "transform x base"
_check_state = check_state  # the former private name


class Nodes(NamedTuple):
    """Transform values at the grid nodes (all ``(G,)``, detached): ``r, t, dt, s, ds``."""

    r: torch.Tensor
    t: torch.Tensor
    dt: torch.Tensor
    s: torch.Tensor
    ds: torch.Tensor


class ParametricSolver(SolverModule):
    """A bespoke solver: ``n`` base-solver steps on the transformed field (eq. 16)

        ubar_r(x) = (ds_r / s_r) x + dt_r s_r u(t_r, x / s_r).

    Costs exactly ``nfe = n * stages`` velocity evaluations per sample. The learnable
    parameters (float64, whatever the model's dtype) are those of the transform; at
    identity initialisation the solver is the base solver on a uniform grid.

    Args:
        transform: how paths are re-timed / re-scaled.
        base: the Runge--Kutta base solver.
        n_steps: number of steps ``n``.

    Example:
        >>> import torch, flowsolve
        >>> solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=8)
        >>> x1 = solver.sample(lambda t, x: -x, torch.randn(16, 3))  # (16, 3), 8 evaluations
    """

    has_local_steps = True  # step(i, x) exists: local-error losses apply
    base: BaseSolver  # MultistepSolver steps with an Adams--Bashforth method instead

    def __init__(self, transform: Transform, base: BaseMethod, n_steps: int):
        super().__init__()
        self.transform = transform
        # The steps here are Runge--Kutta steps; MultistepSolver shares this constructor and
        # redeclares base as its Adams--Bashforth method.
        self.base = cast(BaseSolver, base)
        self.grid = base.node_grid(n_steps)
        self.params = nn.ParameterDict(
            {k: nn.Parameter(v) for k, v in transform.init_parameters(self.grid).items()}
        )
        self.metadata: dict = {}

    # -- sizes -------------------------------------------------------------------------------
    @property
    def history(self) -> int:
        """Previous states a step needs besides its own (a multistep base: order - 1)."""
        return self.base.history

    @property
    def label(self) -> str:
        return f"{self.transform.name} {self.base.name}"

    @property
    def n_steps(self) -> int:
        return self.grid.n_steps

    @property
    def nfe(self) -> int:
        return self.base.evaluations(self.n_steps)

    @property
    def num_params(self) -> int:
        return self.transform.num_params(self.grid)

    @property
    def step_size(self) -> float:
        return 1.0 / self.n_steps

    # -- node values -------------------------------------------------------------------------
    def node_values(self) -> NodeValues:
        """``t, dt, s, ds`` at the grid nodes, differentiable in the parameters."""
        return self.transform.values(dict(self.params), self.grid)

    def nodes(self) -> Nodes:
        """The grid ``r`` and the transform values there, detached, for inspection and plots."""
        with torch.no_grad():
            values = self.node_values()
        return Nodes(self.grid.r.clone(), *(v.detach().clone() for v in values))

    def out_of_range(self) -> list[str]:
        """Non-finite node values, or a scale that reached 0 (finite parameters can overflow to them)."""
        with torch.no_grad():
            values = self.node_values()
        bad = [f"node value {name} is non-finite" for name, v in zip(values._fields, values)
               if not bool(torch.isfinite(v).all())]
        if bool((values.s <= 0).any()):
            bad.append("the scale s reached 0")
        return bad

    def set_node_values(self, values: NodeValues) -> None:
        """Set the parameters so the transform takes the given node values (see :meth:`nodes`)."""
        params = self.transform.parameters_for(values, self.grid)
        with torch.no_grad():
            for name, value in params.items():
                self.params[name].copy_(value)

    def initialise_from(self, other: ParametricSolver) -> None:
        """Start from another solver of the same transform and base, at any step count.

        Same ``n``: its parameters are copied. Other ``n``: its node values are interpolated
        linearly in ``r`` onto this grid (e.g. start NFE 8 from a fitted NFE 10).
        """
        if other.transform != self.transform or other.base != self.base:
            raise FlowsolveValueError(
                f"cannot start {self.extra_repr()} from {other.extra_repr()}: transform and base must match"
            )
        if other.n_steps == self.n_steps:
            self.load_state_dict(other.state_dict())
            return
        r_old, *old_values = other.nodes()
        r = self.grid.r
        new = [_interpolate(r, r_old, v.cpu()) for v in old_values]  # the grids live on the CPU
        t, dt, s, ds = new
        t[0], t[-1], s[0] = 0.0, 1.0, 1.0
        if not self.transform.learns_time:
            t, dt = r.clone(), torch.ones_like(r)
        if not self.transform.learns_scale:
            s, ds = torch.ones_like(r), torch.zeros_like(r)
        self.set_node_values(NodeValues(t, dt, s, ds))

    def initialise(self, init, model=None) -> None:
        """Start from a fitted solver of this family (any NFE, see :meth:`initialise_from`) or from
        a named time schedule of ``model``'s scheduler (``"log-snr"``, ``"edm"``, ``"cosine"``,
        ``"uniform"``), optionally with DDIM's scale (``"log-snr+ddim"``, see
        :func:`flowsolve.paths.time_grids.start_from_schedule`, which :func:`~flowsolve.training.fit.fit`
        calls itself)."""
        if isinstance(init, ParametricSolver):
            self.initialise_from(init)
            return
        if not isinstance(init, str):
            raise FlowsolveTypeError(
                f"init must be a schedule name or a fitted ParametricSolver (e.g. flowsolve.load(path)), got {type(init).__name__}"
            )
        # Kept for callers of solver.initialise("log-snr", model): the schedules belong to the paths
        # layer above this one, so they are imported here, on demand (fit resolves names itself).
        from flowsolve.paths.time_grids import start_from_schedule

        start_from_schedule(self, init, model)

    def set_transform(self, time, scale) -> None:
        """Discretise a continuous transform on this solver's grid.

        Args:
            time: ``r -> t_r`` (tensor in, tensor out), increasing, ``t_0 = 0``, ``t_1 = 1``.
            scale: ``r -> s_r``, positive, ``s_0 = 1``.
            Derivatives are taken by autograd.
        """
        with torch.enable_grad():
            r = self.grid.r.clone().requires_grad_(True)
            t, s = time(r), scale(r)
            dt, ds = (_derivative(value, r) for value in (t, s))
        t, s = t.detach().clone(), s.detach().clone()
        t[0], t[-1], s[0] = 0.0, 1.0, 1.0  # exact boundary values despite round-off in time(r)
        self.set_node_values(NodeValues(t, dt, s, ds))

    def _coefficients(self, like: torch.Tensor) -> torch.Tensor:
        """Per node ``[t, ds/s, dt*s, 1/s, s]`` as ``(G, 5)`` on ``like``'s device and dtype."""
        t, dt, s, ds = self.node_values()
        table = torch.stack([t, ds / s, dt * s, 1.0 / s, s], dim=1)
        return table.to(device=like.device, dtype=like.dtype)

    def _stage_field(self, u, coefficients, stage_nodes, step_label, check_finite):
        """``ubar`` at the nodes ``stage_nodes[k]`` (0-dim or ``(batch,)`` node indices);
        ``step_label`` is the step number, or the ``(batch,)`` step indices."""

        def stage(k, y):
            where = f"in step {step_label}, stage {k}" if isinstance(step_label, int) else (
                lambda bad: f"in step {sorted(set(step_label[bad].tolist()))}, stage {k}"
            )
            return transformed_velocity(u, coefficients[stage_nodes[k]], y, where, check_finite)

        return stage

    # -- sampling ----------------------------------------------------------------------------
    def _evaluation_labels(self) -> list[str]:
        return [f"in step {i}, stage {k}" for i in range(self.n_steps) for k in range(self.base.stages)]

    def _rollout(self, x0, return_intermediates):
        """Algorithm 4: all steps in ``r``-space, one division by ``s_n`` at the end. Each step is
        :func:`~flowsolve.core.rk_step.rk_step`'s arithmetic, stage by stage, on ``ubar``."""
        coefficients = self._coefficients(x0)
        stage_index = self.grid.stage_index.tolist()
        start_index = self.grid.start_index.tolist()
        a, b, _ = self.base.tableau.as_floats()
        h = self.step_size
        xbar = x0  # s_0 = 1
        states = [x0]
        for i in range(self.n_steps):
            slopes = []
            for k, node in enumerate(stage_index[i]):
                y = xbar
                for weight, slope in zip(a[k][:k], slopes):
                    if weight != 0.0:
                        y = y + (h * weight) * slope
                slopes.append((yield from transformed_stage(coefficients[node], y)))
            increment = None
            for weight, slope in zip(b, slopes):
                if weight != 0.0:
                    term = weight * slope
                    increment = term if increment is None else increment + term
            xbar = xbar + h * increment
            if return_intermediates:
                states.append(xbar / coefficients[start_index[i + 1], 4])
        x_final = xbar / coefficients[start_index[-1], 4]
        if not return_intermediates:
            return x_final
        states[-1] = x_final
        return Trajectory(t=coefficients[self.grid.start_index.to(x0.device), 0], x=torch.stack(states))

    def step(self, i, x: torch.Tensor, u: VelocityField, *, check_finite: bool = True) -> torch.Tensor:
        """Algorithm 2's step: ``x_i -> x_{i+1} = RK(s_i x_i) / s_{i+1}`` (eq. 17, 19--20).

        Args:
            i: step index in ``[0, n)``, or a ``(batch,)`` LongTensor of per-sample indices
                (all steps of a batch in one call; ``u`` then gets per-sample times).
            x: ``(batch, ...)`` states at ``t_i``.
            u: velocity field.
        """
        index = self._step_index(i, x)
        coefficients = self._coefficients(x)
        index = index.to(x.device)
        stage_index, start_index = self.grid.stage_index.to(x.device), self.grid.start_index.to(x.device)
        stage_nodes = [stage_index[index, k] for k in range(self.base.stages)]
        start = per_sample(coefficients[start_index[index], 4], x)
        end = per_sample(coefficients[start_index[index + 1], 4], x)
        label = int(i) if index.dim() == 0 else index
        field = self._stage_field(u, coefficients, stage_nodes, label, check_finite)
        return rk_step(self.base.tableau, field, start * x, self.step_size) / end

    def _step_index(self, i, x: torch.Tensor) -> torch.Tensor:
        """``i`` as a 0-dim or ``(batch,)`` LongTensor, checked against ``x`` and the step count."""
        _check_state(x)
        index = torch.as_tensor(i, dtype=torch.long)
        if index.dim() > 1 or (index.dim() == 1 and index.shape[0] != x.shape[0]):
            raise FlowsolveValueError(f"i must be an int or a (batch,) tensor matching x's batch {x.shape[0]}, got shape {tuple(index.shape)}")
        if bool(((index < 0) | (index >= self.n_steps)).any()):
            raise FlowsolveValueError(f"step index must lie in [0, {self.n_steps}), got {index.tolist()}")
        return index

    # -- Lipschitz constants (appendix D) ------------------------------------------------------
    def step_lipschitz(self, L_tau: float = 1.0) -> torch.Tensor:
        """Per-step Lipschitz constants ``L_i`` of ``x -> step(i, x)``, ``(n,)`` float64, differentiable.

        With ``Lu(r) = |ds_r| / s_r + dt_r L_tau`` (lemma D.1), stage constants
        ``K_j = Lu(r_i + c_j h) (1 + h sum_{l<j} |a_jl| K_l)`` and
        ``L_i = (s_i / s_{i+1}) (1 + h sum_j |b_j| K_j)``; lemmas D.2 / D.3 for Euler / Midpoint.
        Valid when ``L_tau`` bounds the Lipschitz constant of ``u``.
        """
        check_L_tau(L_tau)
        _, dt, s, ds = self.node_values()
        node_bounds = field_lipschitz(dt, s, ds, L_tau)
        a, b, _ = self.base.tableau.as_floats()
        h = self.step_size
        stage_constants: list[torch.Tensor] = []
        for k in range(self.base.stages):
            growth: float | torch.Tensor = 1.0
            for weight, previous in zip(a[k][:k], stage_constants):
                growth = growth + h * abs(weight) * previous
            stage_constants.append(node_bounds[self.grid.stage_index[:, k]] * growth)
        total: float | torch.Tensor = 1.0
        for weight, constant in zip(b, stage_constants):
            total = total + h * abs(weight) * constant
        starts = self.grid.start_index
        return s[starts[:-1]] / s[starts[1:]] * total

    def error_amplification(self, L_tau: float = 1.0) -> torch.Tensor:
        """``M_i`` (``i = 1..n``): the product of the later steps' constants (eq. 25), differentiable."""
        return amplification(self.step_lipschitz(L_tau))

    # -- persistence -----------------------------------------------------------------------------
    def family_spec(self) -> dict:
        return part_spec("solver family", TRANSFORM_X_BASE,
                         {"transform": self.transform.to_spec(), "base": self.base.to_spec()})

    def extra_repr(self) -> str:
        return f"transform={self.transform!r}, base={self.base!r}, n_steps={self.n_steps}, nfe={self.nfe}"


def _derivative(value: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """d value / d r for an element-wise function of ``r`` (zero where it does not depend on ``r``)."""
    if not value.requires_grad:
        return torch.zeros_like(r).detach()
    (gradient,) = torch.autograd.grad(value.sum(), r, retain_graph=True, allow_unused=True)
    return torch.zeros_like(r).detach() if gradient is None else gradient


def _interpolate(r: torch.Tensor, knots: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of ``values`` given at increasing ``knots``, evaluated at ``r``."""
    right = torch.searchsorted(knots, r).clamp(1, knots.numel() - 1)
    left = right - 1
    weight = (r - knots[left]) / (knots[right] - knots[left])
    return values[left] + weight * (values[right] - values[left])


def transformed_stage(row: torch.Tensor, y: torch.Tensor) -> Generator[Request, torch.Tensor, torch.Tensor]:
    """``ubar_r(y)`` (eq. 16) as a rollout piece, from a coefficient row ``[t, ds/s, dt*s, 1/s, s]``:
    asks for ``u(t_r, y / s_r)`` (``yield``) and returns ``(ds_r / s_r) y + dt_r s_r u``, the
    arithmetic of :func:`transformed_velocity`."""
    drift, gain, inv_scale = (per_sample(row[..., j], y) for j in (1, 2, 3))
    velocity = yield row[..., 0], y * inv_scale
    return drift * y + gain * velocity


def transformed_velocity(u, row: torch.Tensor, y: torch.Tensor, where, check_finite: bool) -> torch.Tensor:
    """``ubar_r(y) = (ds_r / s_r) y + dt_r s_r u(t_r, y / s_r)`` (eq. 16) from a coefficient row
    ``[t, ds/s, dt*s, 1/s, s]`` (0-dim entries, or ``(batch,)`` ones for per-sample nodes)."""
    drift, gain, inv_scale = (per_sample(row[..., j], y) for j in (1, 2, 3))
    velocity = call_field(u, row[..., 0], y * inv_scale, where=where, check_finite=check_finite)
    return drift * y + gain * velocity
