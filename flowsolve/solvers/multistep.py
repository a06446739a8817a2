"""The parametric solver of an Adams--Bashforth base: the steps share slopes of the transformed field.

The method itself (coefficients, start-up rule) is :class:`~flowsolve.methods.adams.AdamsBashforth`;
here it steps in ``r``-space on ``ubar`` (eq. 16).
"""

from __future__ import annotations

import torch

from flowsolve.core.broadcast import per_sample
from flowsolve.core.errors import FlowsolveValueError
from flowsolve.core.lipschitz import check_L_tau, field_lipschitz
from flowsolve.methods.adams import _ADAMS_BASHFORTH, AdamsBashforth
from flowsolve.solvers.module import Trajectory
from flowsolve.solvers.parametric import ParametricSolver, transformed_stage, transformed_velocity

__all__ = ["_ADAMS_BASHFORTH", "AdamsBashforth", "MultistepSolver"]  # AdamsBashforth: its former home


class MultistepSolver(ParametricSolver):
    """A transform x Adams--Bashforth solver: the steps share slopes, so a step needs the states
    at the previous step points (``history`` of them) besides its own."""

    base: AdamsBashforth  # type: ignore[assignment]  # not a Runge--Kutta method: steps share slopes

    def _slope(self, u, coefficients, node, xbar, label, check_finite):
        """``ubar`` at node index ``node`` (0-dim or per-sample) on the r-space states ``xbar``."""
        return transformed_velocity(u, coefficients[node], xbar, f"in step {label}", check_finite)

    def _evaluation_labels(self) -> list[str]:
        heun = self.base.step_coefficients(self.n_steps)[1].tolist()
        return [f"in step {i}" for i in range(self.n_steps) for _ in range(2 if heun[i] != 0.0 else 1)]

    def _rollout(self, x0, return_intermediates):
        """The steps of :func:`~flowsolve.methods.adams.adams_bashforth_rollout` (same arithmetic) on
        ``ubar`` in ``r``-space, one division by ``s_n`` at the end."""
        coefficients = self._coefficients(x0)
        beta, heun = (v.tolist() for v in self.base.step_coefficients(self.n_steps))  # constants: no device syncs
        h, xbar, slopes = 1.0 / self.n_steps, x0, []
        states = [x0]
        for i in range(self.n_steps):
            slopes.append((yield from transformed_stage(coefficients[i], xbar)))
            increment = sum(b * slopes[i - j] for j, b in enumerate(beta[i]) if b != 0.0)
            if heun[i] != 0.0:
                increment = increment + heun[i] * (yield from transformed_stage(coefficients[i + 1], xbar + h * slopes[i]))
            xbar = xbar + h * increment
            if return_intermediates:
                states.append(xbar / coefficients[i + 1, 4])
        x_final = xbar / coefficients[-1, 4]
        if not return_intermediates:
            return x_final
        states[-1] = x_final
        return Trajectory(t=coefficients[:, 0], x=torch.stack(states))

    def step(self, i, x, u, *, previous=None, check_finite: bool = True) -> torch.Tensor:
        """One step from exact states: ``x`` at ``t_i`` and ``previous[j - 1]`` at ``t_{i-j}`` for
        ``j = 1 .. min(i, history)`` (unused where ``i - j < 0``: the start-up rule applies there).
        ``i`` is an int or a ``(batch,)`` LongTensor of per-sample steps."""
        index = self._step_index(i, x).to(x.device)
        previous = list(previous or [])
        needed = min(self.history, int(index.max()))
        if len(previous) < needed:
            raise FlowsolveValueError(f"{self.base.name} step {int(index.max())} needs the states at the {needed} previous step "
                             f"points (previous=[x(t_(i-1)), ...]), got {len(previous)}")
        coefficients = self._coefficients(x)
        beta, heun = (v.to(device=x.device, dtype=x.dtype) for v in self.base.step_coefficients(self.n_steps))
        scale = lambda node: per_sample(coefficients[node, 4], x)
        h, label = self.step_size, int(i) if index.dim() == 0 else "per sample"
        xbar = scale(index) * x
        current = self._slope(u, coefficients, index, xbar, label, check_finite)
        increment = per_sample(beta[index, 0], x) * current
        for j in range(1, needed + 1):
            weight = per_sample(torch.where(index >= j, beta[index, j], torch.zeros_like(beta[index, j])), x)
            node = (index - j).clamp_min(0)
            increment = increment + weight * self._slope(u, coefficients, node, scale(node) * previous[j - 1],
                                                         label, check_finite)
        if bool((heun[index] != 0).any()):
            predicted = self._slope(u, coefficients, index + 1, xbar + h * current, label, check_finite)
            increment = increment + per_sample(heun[index], x) * predicted
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
        check_L_tau(L_tau)
        _, dt, s, ds = self.node_values()
        node_bounds = field_lipschitz(dt, s, ds, L_tau)
        beta = self.base.step_coefficients(self.n_steps)[0].abs().tolist()
        n, h = self.n_steps, self.step_size
        # Adjoint of the recurrence: G_k = dE_n / dE_k, from G_n = 1 backwards (O(n * order)).
        # E_k enters E_{k+1} with 1 + h beta_k0 Lu_k and E_{k+j+1} with h beta_(k+j)j Lu_k.
        sensitivity = {n: node_bounds.new_ones(())}  # by step index; filled from n down to 1
        for k in range(n - 1, 0, -1):
            total = sensitivity[k + 1] * (1 + h * beta[k][0] * node_bounds[k])
            for j in range(1, len(beta[k])):
                if k + j <= n - 1 and beta[k + j][j] != 0.0:
                    total = total + sensitivity[k + j + 1] * h * beta[k + j][j] * node_bounds[k]
            sensitivity[k] = total
        return torch.stack([sensitivity[k] for k in range(1, n + 1)]) * s[1:n + 1] / s[n]
