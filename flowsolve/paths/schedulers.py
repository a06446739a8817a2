"""Gaussian-path schedulers ``x_t = sigma_t x_0 + alpha_t x_1`` (t = 0 noise, t = 1 data).

Each offers ``alpha, sigma`` and their time derivatives, the signal-to-noise ratio
``snr = alpha / sigma``, its logarithm and their inverses. Built-ins have closed forms;
:class:`Custom` takes any ``alpha(t), sigma(t)`` pair (derivatives by autograd).

Example:
    >>> import torch
    >>> from flowsolve import schedulers
    >>> float(schedulers.FMOT().snr_inverse(torch.tensor(1.0)))
    0.5
"""

from __future__ import annotations

import math
from typing import Callable

import attrs
import torch

from flowsolve.core.errors import FlowsolveValueError


class Scheduler:
    """Base class; subclasses define ``alpha, sigma, d_alpha, d_sigma`` (tensor in, tensor out)."""

    name: str = "scheduler"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def d_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return _autograd_derivative(self.alpha, t)

    def d_sigma(self, t: torch.Tensor) -> torch.Tensor:
        return _autograd_derivative(self.sigma, t)

    def sigma_d_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """``sigma_t * sigma'_t``, finite even where ``sigma'`` is not (VP at t = 1)."""
        return self.sigma(t) * self.d_sigma(t)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio ``alpha_t / sigma_t``, increasing in ``t``."""
        return self.alpha(t) / self.sigma(t)

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        return torch.log(self.alpha(t)) - torch.log(self.sigma(t))

    def d_log_snr(self, t: torch.Tensor) -> torch.Tensor:
        return self.d_alpha(t) / self.alpha(t) - self.d_sigma(t) / self.sigma(t)

    def log_snr_inverse(self, log_snr: torch.Tensor) -> torch.Tensor:
        """The ``t`` with ``log_snr(t) = log_snr`` (bisection in float64; subclasses use closed forms)."""
        log_snr = torch.as_tensor(log_snr)
        target = log_snr.detach().to(torch.float64)
        low, high = torch.zeros_like(target), torch.ones_like(target)
        for _ in range(60):
            middle = (low + high) / 2
            below = self.log_snr(middle) < target
            low, high = torch.where(below, middle, low), torch.where(below, high, middle)
        time = ((low + high) / 2).to(log_snr.dtype)
        if not log_snr.requires_grad:
            return time
        # Bisection has no gradient; schedules need dt/dr: add dt/dlambda = 1 / lambda'(t) (value unchanged).
        slope = self.d_log_snr(time.detach())
        usable = torch.isfinite(slope) & (slope > 0)
        inverse_slope = torch.where(usable, 1 / torch.where(usable, slope, torch.ones_like(slope)), torch.zeros_like(slope))
        return time + (log_snr - log_snr.detach()) * inverse_slope

    def snr_inverse(self, snr: torch.Tensor) -> torch.Tensor:
        """The ``t`` with ``snr(t) = snr``."""
        return self.log_snr_inverse(torch.log(torch.as_tensor(snr)))

    def noise_range(self, start: float = 0.0, end: float = 1.0) -> tuple[float, float]:
        """``sigma / alpha`` at times ``start`` and ``end`` (float64): the path's noise-to-signal
        ratio at both ends. ``inf`` where the path is pure noise (``alpha = 0``), ``0`` where it
        reaches clean data (``sigma = 0``); a discrete or truncated schedule gives finite ends."""
        times = torch.tensor([start, end], dtype=torch.float64)
        high, low = (self.sigma(times) / self.alpha(times)).tolist()
        if not high > low >= 0:  # also catches NaN
            raise FlowsolveValueError(
                f"{self!r}: sigma/alpha is {high:.4g} at t = {start:.4g} and {low:.4g} at t = {end:.4g}; a path must "
                "go from more noise to less (alpha increasing, sigma decreasing, both >= 0 and not both 0)"
            )
        return high, low

    def is_variance_preserving(self) -> bool:
        """``alpha^2 + sigma^2 = 1`` on a grid of times."""
        t = torch.linspace(0, 1, 101, dtype=torch.float64)
        return bool(torch.allclose(self.alpha(t) ** 2 + self.sigma(t) ** 2, torch.ones_like(t), atol=1e-9))


def _autograd_derivative(function: Callable, t: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        point = t.detach().clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(function(point).sum(), point)
    return gradient


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

    def log_snr_inverse(self, log_snr):
        return torch.sigmoid(torch.as_tensor(log_snr))


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

    def log_snr_inverse(self, log_snr):
        return 2 / math.pi * torch.atan(torch.exp(torch.as_tensor(log_snr)))


@attrs.frozen
class VP(Scheduler):
    """Variance preserving (eq. 85): ``alpha_t = xi(1 - t)``, ``sigma_t = sqrt(1 - alpha_t^2)``,
    ``xi(s) = exp(-s^2 (B - b) / 4 - s b / 2)`` with ``B = beta_max``, ``b = beta_min``.

    Note ``alpha_0 = xi(1) > 0`` (about 0.0066 for the defaults): ``t = 0`` is almost, not
    exactly, pure noise.
    """

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
        return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)

    def sigma_d_sigma(self, t):
        return -self.alpha(t) * self.d_alpha(t)

    def log_snr_inverse(self, log_snr):
        # alpha^2 = sigmoid(2 lambda); solve (B - b)/4 s^2 + b/2 s + log(alpha) = 0 for s >= 0.
        log_alpha = -0.5 * torch.nn.functional.softplus(-2 * torch.as_tensor(log_snr))
        a, b = (self.beta_max - self.beta_min) / 4, self.beta_min / 2
        s = (-b + torch.sqrt(b * b - 4 * a * log_alpha)) / (2 * a)
        return 1 - s


class Custom(Scheduler):
    """Any path ``alpha(t), sigma(t)``; derivatives by autograd unless given.

    Args:
        alpha, sigma: tensor -> tensor, with ``alpha`` increasing from ~0 to 1 and ``sigma``
            decreasing from 1 to ~0 (so the SNR is monotone).
        d_alpha, d_sigma: optional closed-form derivatives.
        name: label used in fingerprints and reports.

    Example:
        >>> import torch
        >>> quadratic = Custom(lambda t: t**2, lambda t: 1 - t**2, name="quadratic")
        >>> float(quadratic.d_alpha(torch.tensor(0.5)))
        1.0
    """

    def __init__(self, alpha, sigma, d_alpha=None, d_sigma=None, name: str = "custom"):
        self._alpha, self._sigma, self._d_alpha, self._d_sigma = alpha, sigma, d_alpha, d_sigma
        self.name = name

    def alpha(self, t):
        return self._alpha(t)

    def sigma(self, t):
        return self._sigma(t)

    def d_alpha(self, t):
        return self._d_alpha(t) if self._d_alpha else _autograd_derivative(self._alpha, t)

    def d_sigma(self, t):
        return self._d_sigma(t) if self._d_sigma else _autograd_derivative(self._sigma, t)

    def __repr__(self) -> str:
        return f"Custom(name={self.name!r})"


BUILTIN_SCHEDULERS: dict[str, type[Scheduler]] = {cls.name: cls for cls in (FMOT, Cosine, VP)}
