"""Training-free solvers users compare against, at equal NFE (issue: the main job).

Each baseline samples ``u`` from ``x0`` with a budget of evaluations and reports the number it
really used. The Gaussian-path ones need the model's scheduler (``u.scheduler``, as adapters
and :class:`GaussianMixtureFlow` carry) to turn velocities into data / noise predictions.
"""

from __future__ import annotations

import math
from typing import Callable

import attrs
import torch

from .base_solvers import BaseSolver
from .schedulers import Scheduler
from .velocity import VelocityField, call_field


def predictions(u: VelocityField, scheduler: Scheduler, t: torch.Tensor, x: torch.Tensor):
    """``(x1_hat, eps_hat)`` from one velocity evaluation: ``x = sigma eps + alpha x1`` and
    ``u = sigma' eps + alpha' x1`` solved as a 2x2 system (DESIGN.md §6)."""
    velocity = call_field(u, t, x, where=f"at t = {float(t):.4g}")
    alpha, sigma, d_alpha, d_sigma = scheduler.alpha(t), scheduler.sigma(t), scheduler.d_alpha(t), scheduler.d_sigma(t)
    determinant = d_sigma * alpha - sigma * d_alpha
    return (d_sigma * x - sigma * velocity) / determinant, (alpha * velocity - d_alpha * x) / determinant


def _scheduler_of(u) -> Scheduler:
    scheduler = getattr(u, "scheduler", None)
    if not isinstance(scheduler, Scheduler):
        raise TypeError(
            "this baseline needs a Gaussian-path model: the velocity field must carry a flowsolve scheduler as "
            "`.scheduler` (adapters and GaussianMixtureFlow do)"
        )
    return scheduler


def _time(value: float, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(value, dtype=like.dtype, device=like.device)


@attrs.frozen
class UniformGrid:
    """A Runge--Kutta base solver on a uniform grid (``Euler``, ``Midpoint``, ``Heun``, ``RK4``)."""

    base: BaseSolver

    @property
    def name(self) -> str:
        return self.base.name

    def sample(self, u, x0, nfe: int):
        """``(x1, nfe)``, or ``(None, 0)`` when ``nfe`` is not a whole number of steps."""
        if nfe % self.base.stages:
            return None, 0
        return self.base.sample(u, x0, nfe), nfe


def sigma_range(u, scheduler: Scheduler, sigma_max: float = 80.0, sigma_min: float = 0.002) -> tuple[float, float]:
    """EDM's ``sigma = sigma_t / alpha_t`` range, narrowed to the times the model is really evaluated
    at (``u.time_range``; e.g. an eps-VP model stops at s = 1e-3)."""
    low, high = (torch.tensor(v, dtype=torch.float64) for v in getattr(u, "time_range", (0.0, 1.0)))
    if float(high) < 1:
        sigma_min = max(sigma_min, float(1 / scheduler.snr(high)))
    if float(low) > 0:
        sigma_max = min(sigma_max, float(1 / scheduler.snr(low)))
    return sigma_max, sigma_min


GRID_SPACINGS = ("log-snr", "edm", "time-uniform")


def solver_grid(u, scheduler: Scheduler, steps: int, spacing: str = "log-snr", rho: float = 7.0) -> list[float]:
    """``steps + 1`` times from ``t = 0`` to ``t = 1`` for a training-free solver.

    The inner points span the model's own noise range: from its start (``sigma/alpha`` at ``t = 0``,
    or EDM's ``sigma_max = 80`` where that is infinite, with a first step from ``t = 0``) to the
    last time it is evaluated at (:func:`sigma_range`), and a last step lands on ``t = 1``.
    ``spacing`` places them uniformly in log-SNR (DPM-Solver), in ``sigma^(1/rho)`` (EDM/Karras)
    or in the model's time.
    """
    if spacing not in GRID_SPACINGS:
        raise ValueError(f"unknown grid spacing {spacing!r}; choose one of {GRID_SPACINGS}")
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    start_ratio = float(1 / scheduler.snr(ends[0]))  # sigma/alpha at t = 0: inf where alpha_0 = 0
    sigma_max, sigma_min = sigma_range(u, scheduler, sigma_max=start_ratio if math.isfinite(start_ratio) else 80.0)
    starts_inside = start_ratio <= sigma_max
    inner_count = steps + 1 - (1 if starts_inside else 2)  # points besides t = 0 (if it is no inner point) and t = 1
    if inner_count < 1:
        return [0.0, 1.0]
    fractions = [i / max(inner_count - 1, 1) for i in range(inner_count)]
    if spacing == "log-snr":
        low, high = -math.log(sigma_max), -math.log(sigma_min)
        levels = [low + (high - low) * f for f in fractions]
    elif spacing == "edm":
        a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
        levels = [-rho * math.log(a + (b - a) * f) for f in fractions]
    else:
        first, last = (float(scheduler.log_snr_inverse(torch.tensor(-math.log(v), dtype=torch.float64)))
                       for v in (sigma_max, sigma_min))
        times = [first + (last - first) * f for f in fractions]
        levels = None
    if levels is not None:
        times = [float(scheduler.log_snr_inverse(torch.tensor(v, dtype=torch.float64))) for v in levels]
    if starts_inside:
        times[0] = 0.0
    else:
        times = [0.0] + times
    return times + [1.0]


@attrs.frozen
class DDIM:
    """Deterministic DDIM: ``x_{i+1} = alpha_{i+1} x1_hat_i + sigma_{i+1} eps_hat_i``; one NFE per step,
    on a grid uniform in ``t`` (the model's own time)."""

    needs_scheduler = True

    name = "ddim"

    def sample(self, u, x0, nfe: int):
        scheduler = _scheduler_of(u)
        times = [i / nfe for i in range(nfe + 1)]
        x = x0
        for start, end in zip(times[:-1], times[1:]):
            data, noise = predictions(u, scheduler, _time(start, x0), x)
            end = _time(end, x0)
            x = scheduler.alpha(end) * data + scheduler.sigma(end) * noise
        return x, nfe


@attrs.frozen
class DPMSolverPP2M:
    """DPM-Solver++(2M) (Lu et al., 2022): second-order multistep exponential integrator in the
    data prediction, one NFE per step, on a grid of :func:`solver_grid` (``spacing``: log-SNR
    uniform by default, ``"edm"`` or ``"time-uniform"``) over the model's valid range; the last
    step returns the data prediction."""

    needs_scheduler = True

    spacing: str = attrs.field(default="log-snr", validator=attrs.validators.in_(GRID_SPACINGS))

    @property
    def name(self) -> str:
        return "dpm-solver++(2m)" if self.spacing == "log-snr" else f"dpm-solver++(2m) {self.spacing}"

    def sample(self, u, x0, nfe: int):
        scheduler = _scheduler_of(u)
        times = solver_grid(u, scheduler, nfe, self.spacing)
        x, previous, previous_h = x0, None, None
        for start, end in zip(times[:-1], times[1:]):
            t0, t1 = _time(start, x0), _time(end, x0)
            data, _ = predictions(u, scheduler, t0, x)
            h = scheduler.log_snr(t1) - scheduler.log_snr(t0)  # +inf on the first / last step of FM paths
            if previous is None or not torch.isfinite(h) or not torch.isfinite(previous_h):
                blended = data
            else:
                ratio = previous_h / h
                blended = (1 + 1 / (2 * ratio)) * data - previous / (2 * ratio)
            sigma0, sigma1, alpha1 = scheduler.sigma(t0), scheduler.sigma(t1), scheduler.alpha(t1)
            # x1 = (sigma1/sigma0) x - alpha1 (e^-h - 1) D, with e^-h = sigma1 alpha0 / (alpha1 sigma0)
            x = sigma1 / sigma0 * x + (alpha1 - sigma1 * scheduler.alpha(t0) / sigma0) * blended
            previous, previous_h = data, h
        return x, nfe


@attrs.frozen
class EDMHeun:
    """Karras et al. (2022): Heun on the EDM time schedule (rho = 7) in the variance-exploding
    variables ``y = x / alpha``, ``s = sigma / alpha``; the last step (to s = 0) is Euler.
    ``k`` steps cost ``2k - 1`` NFE, so an even budget uses one evaluation less. The sigma range
    is narrowed to the times the model is evaluated at (:func:`sigma_range`)."""

    needs_scheduler = True

    sigma_max: float = 80.0
    sigma_min: float = 0.002
    rho: float = 7.0
    name = "edm-heun"

    def sample(self, u, x0, nfe: int):
        scheduler = _scheduler_of(u)
        sigma_max, sigma_min = sigma_range(u, scheduler, self.sigma_max, self.sigma_min)
        steps = max((nfe + 1) // 2, 1)
        if steps == 1:
            sigmas = [sigma_max, 0.0]
        else:
            a, b = sigma_max ** (1 / self.rho), sigma_min ** (1 / self.rho)
            sigmas = [(a + i / (steps - 1) * (b - a)) ** self.rho for i in range(steps)] + [0.0]

        def denoised(s, y):
            t = scheduler.snr_inverse(torch.tensor(1 / s, dtype=torch.float64)).to(device=x0.device, dtype=x0.dtype)
            return predictions(u, scheduler, t, scheduler.alpha(t) * y)[0]

        y, used = sigma_max * x0, 0  # EDM starts from sigma_max * noise
        for s0, s1 in zip(sigmas[:-1], sigmas[1:]):
            slope = (y - denoised(s0, y)) / s0
            used += 1
            proposal = y + (s1 - s0) * slope
            if s1 > 0:
                slope = (slope + (proposal - denoised(s1, proposal)) / s1) / 2
                used += 1
                proposal = y + (s1 - s0) * slope
            y = proposal
        return y, used


def builtin_baselines() -> dict[str, Callable[[], object]]:
    from .base_solvers import RK4, Euler, Heun, Midpoint

    return {
        "euler": lambda: UniformGrid(Euler()),
        "midpoint": lambda: UniformGrid(Midpoint()),
        "heun": lambda: UniformGrid(Heun()),
        "rk4": lambda: UniformGrid(RK4()),
        "edm-heun": EDMHeun,
        "dpm-solver++(2m)": DPMSolverPP2M,
        "dpm-solver++(2m) edm": lambda: DPMSolverPP2M("edm"),
        "dpm-solver++(2m) time-uniform": lambda: DPMSolverPP2M("time-uniform"),
        "ddim": DDIM,
    }
