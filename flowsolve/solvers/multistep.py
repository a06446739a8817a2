"""Adams--Bashforth multistep bases in ``r``-space: one velocity evaluation per step.

On the transformed field ``ubar`` (eq. 16) with uniform steps ``h = 1/n`` in ``r``:

    xbar_{i+1} = xbar_i + h sum_j beta_j ubar(r_{i-j}, xbar_{i-j}),

AB2 ``beta = (3/2, -1/2)``, AB3 ``beta = (23/12, -4/3, 5/12)``. The field is only needed at the
step points ``r_i``, so a transform has Euler's node values (``4n - 1`` scale-time parameters).

Start-up rule (keeps the global order ``k``; a start-up step may have local error ``O(h^k)``):
AB2 takes an Euler first step (``n`` NFE); AB3 takes a Heun first step (its second stage at
``r_1``) and an AB2 second step (``n + 1`` NFE).
"""

from __future__ import annotations

from fractions import Fraction as F

import attrs
import torch
import torch.utils.checkpoint

from flowsolve.core.field import call_field
from flowsolve.core.tableau import ButcherTableau
from flowsolve.methods.runge_kutta import BaseSolver
from flowsolve.solvers.parametric import ParametricSolver, _per_sample

_ADAMS_BASHFORTH = {1: [F(1)], 2: [F(3, 2), F(-1, 2)], 3: [F(23, 12), F(-4, 3), F(5, 12)]}


class AdamsBashforth(BaseSolver):
    """Adams--Bashforth of order 1 (= Euler), 2 or 3 with the start-up rule of :mod:`flowsolve.multistep`.

    ``tableau`` only describes where the field is evaluated (the step points, ``c = [0]``).

    Example:
        >>> import torch, flowsolve
        >>> ab2 = flowsolve.AdamsBashforth(2)
        >>> x1 = ab2.sample(lambda t, x: -x, torch.ones(2, 3), nfe=10)  # 10 steps, 10 evaluations
        >>> flowsolve.compose(flowsolve.ScaleTime(), ab2).at(nfe=10).num_params  # 4n - 1
        39
    """

    is_multistep = True

    def __init__(self, order: int = 2):
        if order not in _ADAMS_BASHFORTH:
            raise ValueError(f"Adams-Bashforth order must be 1, 2 or 3, got {order!r}")
        self.ab_order = order
        self.tableau = ButcherTableau(f"ab{order}", a=[[0]], b=[1], c=[0], order=1)

    @property
    def order(self) -> int:
        return self.ab_order

    @property
    def stages(self) -> int:
        return 1

    @property
    def startup_evaluations(self) -> int:
        """Evaluations beyond one per step spent by the start-up rule (AB3's Heun first step)."""
        return 1 if self.ab_order == 3 else 0

    def evaluations(self, n_steps: int) -> int:
        return n_steps + (self.startup_evaluations if n_steps >= 1 else 0)

    def n_steps(self, nfe: int) -> int:
        if isinstance(nfe, bool) or not isinstance(nfe, int):
            raise TypeError(f"nfe must be an int, got {type(nfe).__name__} {nfe!r}")
        least = 1 + self.startup_evaluations
        if nfe < least:
            raise ValueError(f"{self.name} needs nfe >= {least} (one evaluation per step"
                             + (", plus one for its Heun start-up step)" if self.startup_evaluations else ")"))
        return nfe - self.startup_evaluations

    def step_coefficients(self, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``beta`` per step, ``(n, order)`` (column ``j`` weighs the slope ``j`` steps back), and
        ``(n,)`` weights of the Heun start-up stage (AB3's first step only)."""
        k = self.ab_order
        beta = torch.zeros(n_steps, k, dtype=torch.float64)
        heun = torch.zeros(n_steps, dtype=torch.float64)
        for i in range(n_steps):
            if k == 3 and i == 0:
                beta[i, 0], heun[i] = 0.5, 0.5
                continue
            used = _ADAMS_BASHFORTH[min(k, i + 1)]
            beta[i, : len(used)] = torch.tensor([float(b) for b in used], dtype=torch.float64)
        return beta, heun

    def node_grid(self, n_steps: int):
        grid = super().node_grid(n_steps)
        if self.startup_evaluations and n_steps == 1:  # the Heun stage evaluates at r_1 = 1: learn t, s there too
            return attrs.evolve(grid, eval_index=torch.arange(grid.size))
        return grid

    def parametric_solver(self, transform, n_steps: int) -> ParametricSolver:
        return MultistepSolver(transform, self, n_steps)

    def sample(self, u, x0, nfe: int, *, check_finite: bool = True) -> torch.Tensor:
        """Integrate on a uniform grid in ``t`` with ``nfe`` evaluations (the identity transform)."""
        from flowsolve.solvers.transforms import ScaleTime

        return self.parametric_solver(ScaleTime(), self.n_steps(nfe)).sample(u, x0, check_finite=check_finite)

    def to_dict(self) -> dict:
        return {"name": self.name, "multistep": "adams-bashforth", "order": self.ab_order}

    def __eq__(self, other) -> bool:
        return isinstance(other, AdamsBashforth) and other.ab_order == self.ab_order

    def __hash__(self) -> int:
        return hash(("adams-bashforth", self.ab_order))

    def __repr__(self) -> str:
        return f"AdamsBashforth({self.ab_order})"


class MultistepSolver(ParametricSolver):
    """A transform x Adams--Bashforth solver: the steps share slopes, so a step needs the states
    at the previous step points (``history`` of them) besides its own."""

    @property
    def history(self) -> int:
        return self.base.ab_order - 1

    def _slope(self, u, coefficients, node, xbar, label, check_finite):
        """``ubar`` at node index ``node`` (0-dim or per-sample) on the r-space states ``xbar``."""
        row = coefficients[node]
        drift, gain, inv_scale = (_per_sample(row[..., j], xbar) for j in (1, 2, 3))
        velocity = call_field(u, row[..., 0], xbar * inv_scale, where=f"in step {label}", check_finite=check_finite)
        return drift * xbar + gain * velocity

    def _sample(self, u, x0, return_intermediates, check_finite, checkpoint_steps):
        coefficients = self._coefficients(x0)
        beta, heun = (v.tolist() for v in self.base.step_coefficients(self.n_steps))  # constants: no device syncs

        def slope(node, y, step):
            if checkpoint_steps and torch.is_grad_enabled():  # recompute the field's activations in backward
                return torch.utils.checkpoint.checkpoint(
                    self._slope, u, coefficients, node, y, step, check_finite, use_reentrant=False)
            return self._slope(u, coefficients, node, y, step, check_finite)

        h, xbar, slopes, states = self.step_size, x0, [], [x0]
        for i in range(self.n_steps):
            slopes.append(slope(i, xbar, i))
            increment = sum(b * slopes[i - j] for j, b in enumerate(beta[i]) if b != 0.0)
            if heun[i] != 0.0:
                increment = increment + heun[i] * slope(i + 1, xbar + h * slopes[i], i)
            xbar = xbar + h * increment
            if return_intermediates:
                states.append(xbar / coefficients[i + 1, 4])
        x_final = xbar / coefficients[-1, 4]
        if not return_intermediates:
            return x_final
        states[-1] = x_final
        return _trajectory(coefficients, states)

    def step(self, i, x, u, *, previous=None, check_finite: bool = True) -> torch.Tensor:
        """One step from exact states: ``x`` at ``t_i`` and ``previous[j - 1]`` at ``t_{i-j}`` for
        ``j = 1 .. min(i, history)`` (unused where ``i - j < 0``: the start-up rule applies there).
        ``i`` is an int or a ``(batch,)`` LongTensor of per-sample steps."""
        index = self._step_index(i, x).to(x.device)
        previous = list(previous or [])
        needed = min(self.history, int(index.max()))
        if len(previous) < needed:
            raise ValueError(f"{self.base.name} step {int(index.max())} needs the states at the {needed} previous step "
                             f"points (previous=[x(t_(i-1)), ...]), got {len(previous)}")
        coefficients = self._coefficients(x)
        beta, heun = (v.to(device=x.device, dtype=x.dtype) for v in self.base.step_coefficients(self.n_steps))
        scale = lambda node: _per_sample(coefficients[node, 4], x)  # noqa: E731
        h, label = self.step_size, int(i) if index.dim() == 0 else "per sample"
        xbar = scale(index) * x
        current = self._slope(u, coefficients, index, xbar, label, check_finite)
        increment = _per_sample(beta[index, 0], x) * current
        for j in range(1, needed + 1):
            weight = _per_sample(torch.where(index >= j, beta[index, j], torch.zeros_like(beta[index, j])), x)
            node = (index - j).clamp_min(0)
            increment = increment + weight * self._slope(u, coefficients, node, scale(node) * previous[j - 1],
                                                         label, check_finite)
        if bool((heun[index] != 0).any()):
            predicted = self._slope(u, coefficients, index + 1, xbar + h * current, label, check_finite)
            increment = increment + _per_sample(heun[index], x) * predicted
        return (xbar + h * increment) / scale(index + 1)

    def step_lipschitz(self, L_tau: float = 1.0) -> torch.Tensor:
        raise NotImplementedError(
            f"a {self.base.name} step depends on {self.history + 1} states, so it has no one-state Lipschitz "
            "constant; error_amplification(L_tau) gives the RMSE-Bound weights"
        )

    def error_amplification(self, L_tau: float = 1.0) -> torch.Tensor:
        """``M_i`` (``i = 1..n``), differentiable: a unit error in ``x_i`` grows to at most ``M_i`` in ``x_n``.

        In ``r``-space the errors obey ``e_{k+1} <= e_k + h sum_j |beta_j| Lu_{k-j} e_{k-j}``
        with ``Lu(r) = |ds_r| / s_r + dt_r L_tau`` (lemma D.1); ``M_i`` runs this recurrence from
        ``e_i = 1`` and converts with ``s_i / s_n``. For AB1 it is lemma D.2's product.
        """
        if not L_tau >= 0:
            raise ValueError(f"L_tau must be a non-negative number, got {L_tau!r}")
        t, dt, s, ds = self.node_values()
        field_lipschitz = ds.abs() / s + dt * L_tau
        beta = self.base.step_coefficients(self.n_steps)[0].abs().tolist()
        n, h = self.n_steps, self.step_size
        # Adjoint of the recurrence: G_k = dE_n / dE_k, from G_n = 1 backwards (O(n * order)).
        # E_k enters E_{k+1} with 1 + h beta_k0 Lu_k and E_{k+j+1} with h beta_(k+j)j Lu_k.
        sensitivity = [None] * n + [field_lipschitz.new_ones(())]
        for k in range(n - 1, 0, -1):
            total = sensitivity[k + 1] * (1 + h * beta[k][0] * field_lipschitz[k])
            for j in range(1, len(beta[k])):
                if k + j <= n - 1 and beta[k + j][j] != 0.0:
                    total = total + sensitivity[k + j + 1] * h * beta[k + j][j] * field_lipschitz[k]
            sensitivity[k] = total
        return torch.stack(sensitivity[1:]) * s[1:n + 1] / s[n]


def _trajectory(coefficients, states):
    from flowsolve.solvers.parametric import Trajectory

    return Trajectory(t=coefficients[:, 0], x=torch.stack(states))
