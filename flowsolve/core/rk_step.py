"""The one explicit Runge--Kutta step every solver in flowsolve uses."""

from __future__ import annotations

from typing import Callable

import torch

from flowsolve.core.tableau import ButcherTableau

StageField = Callable[[int, torch.Tensor], torch.Tensor]


def rk_step(tableau: ButcherTableau, stage_field: StageField, x: torch.Tensor, h) -> torch.Tensor:
    """One step ``x + h * sum_k b_k K_k`` with ``K_k = stage_field(k, x + h * sum_l a_kl K_l)``.

    ``h`` is a float or a tensor broadcastable against ``x`` (per-sample step sizes).
    Costs ``tableau.stages`` calls of ``stage_field``.
    """
    a, b, _ = tableau.as_floats()
    slopes: list[torch.Tensor] = []
    for k in range(tableau.stages):
        y = x
        for weight, slope in zip(a[k][:k], slopes):
            if weight != 0.0:
                y = y + (h * weight) * slope
        slopes.append(stage_field(k, y))
    increment = None
    for weight, slope in zip(b, slopes):
        if weight != 0.0:
            term = weight * slope
            increment = term if increment is None else increment + term
    return x + h * increment
