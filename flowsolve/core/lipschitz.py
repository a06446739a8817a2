"""Lipschitz algebra of parametric solvers (paper appendix D), shared by every solver family.

A step's local error grows by the Lipschitz constants of the later steps; these functions turn
node values of a transform into those constants. They hold no solver: the solvers and the
RMSE-Bound loss call them with their own node values.
"""

from __future__ import annotations

import torch

from flowsolve.core.errors import FlowsolveValueError


def check_L_tau(L_tau) -> None:
    """Refuse an ``L_tau`` that is not a non-negative number (NaN included)."""
    if not L_tau >= 0:
        raise FlowsolveValueError(f"L_tau must be a non-negative number, got {L_tau!r}")


def field_lipschitz(dt: torch.Tensor, s: torch.Tensor, ds: torch.Tensor, L_tau: float) -> torch.Tensor:
    """Per-node bound ``Lu(r) = |ds_r| / s_r + dt_r L_tau`` of the transformed field's Lipschitz
    constant (lemma D.1), valid when ``L_tau`` bounds the Lipschitz constant of ``u``."""
    return ds.abs() / s + dt * L_tau


def amplification(step_lipschitz: torch.Tensor) -> torch.Tensor:
    """``M`` for each step's local error: the product of the later steps' constants (eq. 25)."""
    later = torch.cat([step_lipschitz[1:], step_lipschitz.new_ones(1)])
    return torch.flip(torch.cumprod(torch.flip(later, [0]), 0), [0])
