"""Moving a solver's parameters away from the identity, reproducibly."""

import torch


def randomize_parameters(solver, seed: int, spread: float = 0.3) -> None:
    """Move every parameter away from the identity (non-identity but well-behaved transform)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in solver.params.items():
            noise = torch.rand(p.shape, generator=generator, dtype=p.dtype) * 2 - 1
            if name in ("time_increments", "time_derivative"):
                p.copy_(1 + spread * noise)
            else:
                p.copy_(spread * noise)
