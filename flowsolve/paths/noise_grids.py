"""The grids training-free solvers run on: the model's noise range, times at given noise
levels, and grids spaced in log-SNR, EDM's ``sigma^(1/rho)`` or the model's time."""

from __future__ import annotations

import math

import torch

from flowsolve.core.errors import FlowsolveValueError
from flowsolve.paths.schedulers import Scheduler

GRID_SPACINGS = ("log-snr", "edm", "time-uniform")


def model_time_range(u) -> tuple[float, float]:
    """The times ``(low, high)`` at which ``u`` is really evaluated: ``u.time_range`` where the model
    has one (adapters hold a network at the ends of it, e.g. an eps-VP model stops at s = 1e-3),
    else ``(0, 1)``."""
    low, high = (float(v) for v in getattr(u, "time_range", (0.0, 1.0)))
    if not 0 <= low < high <= 1:
        raise FlowsolveValueError(f"the model's time_range must satisfy 0 <= low < high <= 1, got {(low, high)}")
    return low, high


def sigma_range(u, scheduler: Scheduler, sigma_max: float = 80.0, sigma_min: float = 0.002) -> tuple[float, float]:
    """The model's noise range ``(sigma_max, sigma_min)`` in EDM's ``sigma = sigma_t / alpha_t``.

    Both ends come from the path itself at the ends of the times the model is evaluated at
    (:func:`model_time_range`); ``sigma_max`` / ``sigma_min`` only apply where the path goes
    beyond them (e.g. to pure noise, ``sigma/alpha = inf``, or to clean data, ``0``). A discrete
    schedule or a model trained on truncated times ends inside them, and then its own end counts:
    a grid never asks for a noise level the model does not have.
    """
    start, end = scheduler.noise_range(*model_time_range(u))
    sigma_max, sigma_min = min(sigma_max, start), max(sigma_min, end)
    if not sigma_max > sigma_min:
        raise FlowsolveValueError(
            f"empty noise range: the model spans sigma/alpha from {start:.4g} to {end:.4g}, which leaves "
            f"[{sigma_min:.4g}, {sigma_max:.4g}]; pass a sigma_max above sigma_min (or check the model's "
            "scheduler and time_range)"
        )
    return sigma_max, sigma_min


def times_at_noise(u, scheduler: Scheduler, sigmas) -> list[float]:
    """The model's times where ``sigma/alpha`` equals each of ``sigmas``; the ends of the path and of
    the model's time range map to their times exactly (no bisection round-off next to t = 0 or 1)."""
    low, high = model_time_range(u)
    exact = dict(zip(scheduler.noise_range(0.0, 1.0), (0.0, 1.0)))
    exact.update(zip(scheduler.noise_range(low, high), (low, high)))
    return [exact[s] if s in exact else float(scheduler.log_snr_inverse(torch.tensor(-math.log(s), dtype=torch.float64)))
            for s in sigmas]


def spaced_noise_levels(sigma_max: float, sigma_min: float, count: int, spacing: str, rho: float) -> list[float]:
    """``count`` values of ``sigma/alpha`` from exactly ``sigma_max`` down to exactly ``sigma_min`` (just
    ``sigma_max`` for one), uniform in log-SNR or in ``sigma^(1/rho)``."""
    fractions = [i / max(count - 1, 1) for i in range(count)]
    if spacing == "log-snr":
        levels = [math.exp(math.log(sigma_max) + (math.log(sigma_min) - math.log(sigma_max)) * f) for f in fractions]
    else:
        a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
        levels = [(a + (b - a) * f) ** rho for f in fractions]
    levels[0] = sigma_max  # exact ends despite round-off: they map to the model's end times exactly
    if count > 1:
        levels[-1] = sigma_min
    return levels


def solver_grid(u, scheduler: Scheduler, steps: int, spacing: str = "log-snr", rho: float = 7.0) -> list[float]:
    """``steps + 1`` strictly increasing times from ``t = 0`` to ``t = 1`` for a training-free solver.

    The inner points span the model's noise range (:func:`sigma_range`): from the path's
    ``sigma/alpha`` at ``t = 0`` (EDM's 80 where that is infinite) to EDM's 0.002, or to the
    model's own end where that is higher, narrowed to the model's time range. A first
    step from ``t = 0`` / a last step to ``t = 1`` is added only where the range starts after
    ``t = 0`` / ends before ``t = 1``: where the model's range reaches ``t = 1`` (a path ending
    above zero noise) its last inner point is ``t = 1`` itself, with no zero-length step.
    ``spacing`` places the inner points uniformly in log-SNR (DPM-Solver), in
    ``sigma^(1/rho)`` (EDM/Karras) or in the model's time.
    """
    if spacing not in GRID_SPACINGS:
        raise FlowsolveValueError(f"unknown grid spacing {spacing!r}; choose one of {GRID_SPACINGS}")
    if steps < 2:
        return [0.0, 1.0]
    path_start = scheduler.noise_range()[0]
    sigma_max, sigma_min = sigma_range(u, scheduler, sigma_max=path_start if math.isfinite(path_start) else 80.0)
    first, last = times_at_noise(u, scheduler, [sigma_max, sigma_min])
    step_in, step_out = first > 0, last < 1  # extra steps 0 -> first and last -> 1
    inner_count = steps + 1 - step_in - step_out  # >= 1
    if spacing == "time-uniform":
        times = [first + (last - first) * i / max(inner_count - 1, 1) for i in range(inner_count)]
    else:
        times = times_at_noise(u, scheduler, spaced_noise_levels(sigma_max, sigma_min, inner_count, spacing, rho))
    return [0.0] * step_in + times + [1.0] * step_out


def uniform_time_grid(u, steps: int) -> list[float]:
    """``steps + 1`` times from 0 to 1, uniform in the model's time, that evaluate the model only at
    the times it covers (:func:`model_time_range`): a first step from ``t = 0`` to where it starts
    if that is later, and uniform steps from there; where the model stops before the last step
    would start, the evaluations spread over its range and the last step stretches to ``t = 1``."""
    low, high = model_time_range(u)
    lead_in = low > 0
    count = steps - lead_in  # steps from `low` on, each starting with an evaluation
    if count < 1:
        return [0.0, 1.0]
    if count == 1 or (1 - low) / count <= (high - low) / (count - 1):
        starts = [low + (1 - low) * i / count for i in range(count)]
    else:
        starts = [low + (high - low) * i / (count - 1) for i in range(count)]
    return [0.0] * lead_in + starts + [1.0]
