"""A discrete DDPM/DDIM noise schedule (a diffusers ``alphas_cumprod`` table) as a continuous scheduler.

A diffusers scheduler defines the variance-preserving path only at its integer training
timesteps ``k = 0 .. N-1``::

    x_k = sqrt(abar_k) * data + sqrt(1 - abar_k) * noise,   abar_k = alphas_cumprod[k]

(``k = 0`` is the least noisy step, ``k = N-1`` the noisiest). :class:`DiscreteVP` extends it
to continuous flow time ``t`` (t = 0 noise, t = 1 data) by

* the time map ``k(t) = (N - 1) * (1 - t)``: ``t = 0`` is step ``N - 1`` and ``t = 1`` is
  step ``0``, so both end points are trained timesteps and no time maps outside the trained
  range (times outside ``[0, 1]`` are clamped onto it);
* interpolation of ``L(k) = log abar`` between the integer steps, through every tabulated value:

  - ``"cubic"`` (default): monotone piecewise-cubic Hermite (PCHIP, Fritsch-Carlson slopes:
    the harmonic mean of the neighbouring differences inside, a limited three-point formula at
    the ends). ``L`` is continuously differentiable and stays between its neighbouring table
    values on every segment, so it is monotone and never reaches 0.
  - ``"linear"``: piecewise linear (each ``beta_k`` held constant over its step). Its
    derivative jumps at every integer step, which costs high-order and adaptive solvers
    accuracy and steps (measured: dopri5 at rtol 1e-7 took 13x longer and was still 2e-3 off,
    while the two interpolations' exact solutions agree to ~2e-5);

* ``alpha(t) = exp(L / 2)``, ``sigma(t) = sqrt(1 - exp(L))``: variance preserving.

Derivatives are exact for the chosen interpolant: ``dL/dt = -(N - 1) dL/dk``. For
``"linear"`` the derivative at an integer step is that of the segment on the noise side
(larger ``k``), i.e. the left limit in ``t``.

Unlike flowsolve's ideal paths the end points are not exactly noise and data:
``alpha(0) = sqrt(abar_{N-1})`` is small but positive (about 0.006 for the usual linear betas)
and ``sigma(1) = sqrt(1 - abar_0) = sqrt(beta_0)`` (0.01 for the usual betas). Both are values
the network was trained at, and every coefficient is finite on ``[0, 1]``.
"""

from __future__ import annotations

import torch

from flowsolve.core.errors import FlowsolveValueError
from flowsolve.paths import schedulers

# Floor for alphas_cumprod: zero-terminal-SNR schedules (rescale_betas_zero_snr) end at exactly 0,
# whose logarithm is -inf; the floor keeps every coefficient finite (alpha(0) = 1e-6 then).
MIN_ALPHAS_CUMPROD = 1e-12
INTERPOLATIONS = ("cubic", "linear")


def _pchip_slopes(values: list[float]) -> list[float]:
    """Fritsch-Carlson slopes of monotone cubic Hermite interpolation on a unit-spaced grid."""
    d = [b - a for a, b in zip(values[:-1], values[1:])]
    if len(d) == 1:
        return [d[0], d[0]]
    slopes = [0.0] * len(values)
    for i in range(1, len(values) - 1):
        left, right = d[i - 1], d[i]
        slopes[i] = 2 * left * right / (left + right) if left * right > 0 else 0.0

    def end(first: float, second: float) -> float:
        slope = (3 * first - second) / 2
        if slope * first <= 0:
            return 0.0
        if first * second < 0 and abs(slope) > abs(3 * first):
            return 3 * first
        return slope

    slopes[0] = end(d[0], d[1])
    slopes[-1] = end(d[-1], d[-2])
    return slopes


class DiscreteVP(schedulers.Scheduler):
    """The VP path of a discrete ``alphas_cumprod`` table, on continuous time (see the module doc).

    Args:
        alphas_cumprod: the ``(N,)`` table (``N >= 2``), non-increasing, in ``[0, 1]``.
        interpolation: ``"cubic"`` (monotone cubic Hermite of ``log abar``) or ``"linear"``.
        name: label used in reprs and reports.

    Example:
        >>> import torch
        >>> betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
        >>> path = DiscreteVP(torch.cumprod(1 - betas, 0))
        >>> round(float(path.sigma(torch.tensor(1.0))), 4)
        0.01
    """

    name = "discrete-vp"

    def __init__(self, alphas_cumprod, interpolation: str = "cubic", name: str = "discrete-vp"):
        table = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64).reshape(-1)
        if table.numel() < 2:
            raise FlowsolveValueError(f"alphas_cumprod needs at least 2 timesteps, got {table.numel()}")
        if not bool(torch.isfinite(table).all()) or bool((table > 1).any()) or bool((table < 0).any()):
            raise FlowsolveValueError("alphas_cumprod must hold finite values in [0, 1]")
        if bool((table[1:] > table[:-1]).any()):
            raise FlowsolveValueError("alphas_cumprod must be non-increasing in the timestep (more noise at larger k)")
        if float(table[0]) >= 1:
            raise FlowsolveValueError("alphas_cumprod[0] must be below 1 (beta_0 > 0): sigma would vanish at t = 1")
        if interpolation not in INTERPOLATIONS:
            raise FlowsolveValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        self.interpolation = interpolation
        self.log_alphas_cumprod = torch.log(table.clamp(min=MIN_ALPHAS_CUMPROD))
        if interpolation == "cubic":
            self.log_slopes = torch.tensor(_pchip_slopes(self.log_alphas_cumprod.tolist()), dtype=torch.float64)
        else:
            self.log_slopes = self.log_alphas_cumprod.diff()
        self.num_train_timesteps = table.numel()
        self.name = name
        self._on_device: dict = {}

    # --- time map ---------------------------------------------------------------------------
    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        """The fractional training timestep ``k(t) = (N - 1)(1 - t)``, ``t`` clamped to ``[0, 1]``."""
        t = torch.as_tensor(t)
        return (self.num_train_timesteps - 1) * (1 - t.clamp(0.0, 1.0))

    def time(self, timestep: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`timestep`: the flow time of a (fractional) training timestep."""
        return 1 - torch.as_tensor(timestep) / (self.num_train_timesteps - 1)

    def _tables(self, device):
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = (self.log_alphas_cumprod.to(device), self.log_slopes.to(device))
        return self._on_device[key]

    def _locate(self, t: torch.Tensor):
        """``L = log abar`` at ``t`` and ``dL/dt``, in float64 (differentiable in ``t``)."""
        t64 = torch.as_tensor(t).to(torch.float64)
        values, slopes = self._tables(t64.device)
        k = self.timestep(t64)
        j = k.detach().floor().clamp(0, self.num_train_timesteps - 2).to(torch.long)
        w = k - j
        left, right = values[j], values[j + 1]
        if self.interpolation == "linear":
            log_abar = left + w * slopes[j]
            per_step = slopes[j]
        else:
            m0, m1 = slopes[j], slopes[j + 1]
            w2, w3 = w * w, w * w * w
            log_abar = (2 * w3 - 3 * w2 + 1) * left + (w3 - 2 * w2 + w) * m0 + (3 * w2 - 2 * w3) * right + (w3 - w2) * m1
            per_step = (6 * w2 - 6 * w) * (left - right) + (3 * w2 - 4 * w + 1) * m0 + (3 * w2 - 2 * w) * m1
        return log_abar, -(self.num_train_timesteps - 1) * per_step

    @staticmethod
    def _out(value: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t)
        return value.to(t.dtype) if t.is_floating_point() else value

    # --- flowsolve Scheduler interface ----------------------------------------------------------
    def alphas_cumprod(self, t: torch.Tensor) -> torch.Tensor:
        """Interpolated ``abar`` at flow time ``t``."""
        return self._out(torch.exp(self._locate(t)[0]), t)

    def alpha(self, t):
        return self._out(torch.exp(self._locate(t)[0] / 2), t)

    def sigma(self, t):
        return self._out(torch.sqrt(-torch.expm1(self._locate(t)[0])), t)

    def d_alpha(self, t):
        log_abar, rate = self._locate(t)
        return self._out(torch.exp(log_abar / 2) * rate / 2, t)

    def d_sigma(self, t):
        log_abar, rate = self._locate(t)
        return self._out(-torch.exp(log_abar) * rate / (2 * torch.sqrt(-torch.expm1(log_abar))), t)

    def sigma_d_sigma(self, t):
        log_abar, rate = self._locate(t)
        return self._out(-torch.exp(log_abar) * rate / 2, t)

    def log_snr(self, t):
        log_abar = self._locate(t)[0]
        return self._out(log_abar / 2 - torch.log(-torch.expm1(log_abar)) / 2, t)

    def d_log_snr(self, t):
        log_abar, rate = self._locate(t)
        # d/dt [L/2 - log(1 - e^L)/2] = (dL/dt / 2) / (1 - e^L)
        return self._out(rate / 2 / -torch.expm1(log_abar), t)

    def is_variance_preserving(self) -> bool:
        return True

    def __repr__(self) -> str:
        return (f"DiscreteVP(name={self.name!r}, num_train_timesteps={self.num_train_timesteps}, "
                f"interpolation={self.interpolation!r})")


def linear_betas_alphas_cumprod(beta_start: float, beta_end: float, steps: int) -> torch.Tensor:
    """The ``(steps,)`` float64 ``alphas_cumprod`` of betas linear from ``beta_start`` to
    ``beta_end`` (the DDPM schedule, diffusers' ``beta_schedule="linear"``)."""
    betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)
