"""Gaussian-path schedulers ``x_t = sigma_t x_0 + alpha_t x_1`` (t = 0 noise, t = 1 data).

All take and return tensors; derivatives are closed forms.
"""

from __future__ import annotations

import math

import attrs
import torch


class Scheduler:
    """``alpha_t``, ``sigma_t`` and their time derivatives, with ``alpha_0 = sigma_1 = 0`` (up to the VP
    scheduler's tiny ``alpha_0``) and ``alpha_1 = sigma_0 = 1``."""

    name: str

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def d_alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def d_sigma(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio ``alpha_t / sigma_t`` (increasing in ``t``)."""
        return self.alpha(t) / self.sigma(t)


@attrs.frozen
class FMOT(Scheduler):
    """Flow matching, optimal transport path: ``alpha = t``, ``sigma = 1 - t`` (eq. 82)."""

    name = "fm-ot"

    def alpha(self, t):
        return t

    def sigma(self, t):
        return 1 - t

    def d_alpha(self, t):
        return torch.ones_like(t)

    def d_sigma(self, t):
        return -torch.ones_like(t)


@attrs.frozen
class Cosine(Scheduler):
    """Cosine path: ``alpha = sin(pi t / 2)``, ``sigma = cos(pi t / 2)`` (eq. 83)."""

    name = "cosine"

    def alpha(self, t):
        return torch.sin(math.pi / 2 * t)

    def sigma(self, t):
        return torch.cos(math.pi / 2 * t)

    def d_alpha(self, t):
        return math.pi / 2 * torch.cos(math.pi / 2 * t)

    def d_sigma(self, t):
        return -math.pi / 2 * torch.sin(math.pi / 2 * t)


@attrs.frozen
class VP(Scheduler):
    """Variance preserving (eq. 85): ``alpha_t = xi(1 - t)``, ``sigma_t = sqrt(1 - alpha_t^2)``,
    ``xi(s) = exp(-s^2 (B - b) / 4 - s b / 2)``."""

    beta_max: float = 20.0
    beta_min: float = 0.1
    name = "vp"

    def _log_xi(self, s):
        return -(s**2) * (self.beta_max - self.beta_min) / 4 - s * self.beta_min / 2

    def alpha(self, t):
        return torch.exp(self._log_xi(1 - t))

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(2 * self._log_xi(1 - t)))

    def d_alpha(self, t):
        s = 1 - t
        # d/dt xi(1 - t) = -xi'(s) = xi(s) (s (B - b) / 2 + b / 2)
        return self.alpha(t) * (s * (self.beta_max - self.beta_min) / 2 + self.beta_min / 2)

    def d_sigma(self, t):
        alpha = self.alpha(t)
        return -alpha * self.d_alpha(t) / self.sigma(t)
