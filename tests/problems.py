"""Closed-form test problems: velocity fields with known solutions."""

import torch


class LinearSystem:
    """``dx/dt = M x``; ``x(t) = expm(t M) x0``. Lipschitz constant ``||M||_2``."""

    def __init__(self, matrix: torch.Tensor):
        self.matrix = matrix

    def __call__(self, t, x):
        return x @ self.matrix.to(x).T

    def solution(self, x0, t=1.0):
        return x0 @ torch.linalg.matrix_exp(t * self.matrix.to(x0)).T

    @property
    def lipschitz(self) -> float:
        return float(torch.linalg.matrix_norm(self.matrix, ord=2))


class Logistic:
    """``dx/dt = x (1 - x)`` per coordinate; ``x(t) = x0 e^t / (1 - x0 + x0 e^t)``."""

    def __call__(self, t, x):
        return x * (1 - x)

    def solution(self, x0, t=1.0):
        e = torch.exp(torch.as_tensor(t, dtype=x0.dtype))
        return x0 * e / (1 - x0 + x0 * e)


class TimeDependent:
    """``dx/dt = cos(t) x``; ``x(t) = x0 exp(sin t)``: exercises the time argument."""

    def __call__(self, t, x):
        return torch.cos(t) * x

    def solution(self, x0, t=1.0):
        return x0 * torch.exp(torch.sin(torch.as_tensor(t, dtype=x0.dtype)))


def random_matrix(dim: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(dim, dim, generator=generator, dtype=dtype) / dim**0.5


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
