"""Ground-truth solutions with torchdiffeq's adaptive dopri5 (DESIGN.md §5)."""

from __future__ import annotations

import torch
import torchdiffeq

from .velocity import VelocityField


def clamp_time(field: VelocityField) -> VelocityField:
    """Guard a field so it never sees ``t`` outside ``[0, 1]``: dopri5 probes past the end point."""

    def guarded(t, x):
        return field(t.clamp(0.0, 1.0), x)

    guarded.accepts_batched_time = getattr(field, "accepts_batched_time", False)
    return guarded


def solve_reference(u: VelocityField, x0: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-5) -> torch.Tensor:
    """``x(1)`` from ``x0`` by dopri5 at the given tolerances (no dense storage)."""
    with torch.no_grad():
        times = torch.tensor([0.0, 1.0], dtype=x0.dtype, device=x0.device)
        return torchdiffeq.odeint(clamp_time(u), x0, times, method="dopri5", rtol=rtol, atol=atol)[-1]
