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

from flowsolve.core.field import VelocityField, call_field
from flowsolve.methods.runge_kutta import BaseSolver
from flowsolve.paths.schedulers import Scheduler


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


def model_time_range(u) -> tuple[float, float]:
    """The times ``(low, high)`` at which ``u`` is really evaluated: ``u.time_range`` where the model
    has one (adapters hold a network at the ends of it, e.g. an eps-VP model stops at s = 1e-3),
    else ``(0, 1)``."""
    low, high = (float(v) for v in getattr(u, "time_range", (0.0, 1.0)))
    if not 0 <= low < high <= 1:
        raise ValueError(f"the model's time_range must satisfy 0 <= low < high <= 1, got {(low, high)}")
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
        raise ValueError(
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


GRID_SPACINGS = ("log-snr", "edm", "time-uniform")


def _spaced_noise_levels(sigma_max: float, sigma_min: float, count: int, spacing: str, rho: float) -> list[float]:
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
        raise ValueError(f"unknown grid spacing {spacing!r}; choose one of {GRID_SPACINGS}")
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
        times = times_at_noise(u, scheduler, _spaced_noise_levels(sigma_max, sigma_min, inner_count, spacing, rho))
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


@attrs.frozen
class DDIM:
    """Deterministic DDIM: ``x_{i+1} = alpha_{i+1} x1_hat_i + sigma_{i+1} eps_hat_i``; one NFE per step,
    on a grid uniform in ``t`` (the model's own time) over the times the model covers
    (:func:`uniform_time_grid`; ``i / nfe`` for most models)."""

    needs_scheduler = True

    name = "ddim"

    def sample(self, u, x0, nfe: int):
        scheduler = _scheduler_of(u)
        times = uniform_time_grid(u, nfe)
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
    uniform by default, ``"edm"`` or ``"time-uniform"``) over the model's noise range; on a path
    to clean data the last step returns the data prediction, on one that ends above zero noise
    it lands on that end."""

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
    variables ``y = x / alpha``, ``s = sigma / alpha``; the last step is Euler. ``k`` steps cost
    ``2k - 1`` NFE, so an even budget uses one evaluation less.

    The schedule spans the model's noise range (:func:`sigma_range`: ``sigma_max`` / ``sigma_min``
    narrowed to the path's own ends and the model's time range). The last step lands on the
    path's end at ``t = 1`` (``s = 0`` for a path to clean data) and the output is ``x = alpha_1 y``
    there; where that end is ``sigma_min`` itself, the schedule's last point is it.
    """

    needs_scheduler = True

    sigma_max: float = 80.0
    sigma_min: float = 0.002
    rho: float = 7.0
    name = "edm-heun"

    def noise_levels(self, u, scheduler: Scheduler, nfe: int) -> list[float]:
        """The ``k + 1`` values of ``s`` that the ``k = (nfe + 1) // 2`` steps go through: EDM's schedule
        from ``sigma_max`` to ``sigma_min``, then the path's end at ``t = 1`` unless that is ``sigma_min``."""
        sigma_max, sigma_min = sigma_range(u, scheduler, self.sigma_max, self.sigma_min)
        path_end = scheduler.noise_range()[1]
        steps = max((nfe + 1) // 2, 1)
        ends_at_sigma_min = path_end == sigma_min  # the model reaches t = 1 inside EDM's range
        count = steps + 1 if ends_at_sigma_min else steps
        levels = _spaced_noise_levels(sigma_max, sigma_min, count, "edm", self.rho)
        return levels if ends_at_sigma_min else levels + [path_end]

    def sample(self, u, x0, nfe: int):
        scheduler = _scheduler_of(u)
        sigmas = self.noise_levels(u, scheduler, nfe)
        times = times_at_noise(u, scheduler, sigmas[:-1])  # where the field is evaluated

        def denoised(i, y):
            t = _time(times[i], x0)
            return predictions(u, scheduler, t, scheduler.alpha(t) * y)[0]

        # On the path's own start y = x0 / alpha_0 exactly; past EDM's sigma_max it starts from sigma_max * noise.
        y = x0 / scheduler.alpha(_time(0.0, x0)) if times[0] == 0 else sigmas[0] * x0
        used = 0
        for i, (s0, s1) in enumerate(zip(sigmas[:-1], sigmas[1:])):
            slope = (y - denoised(i, y)) / s0
            used += 1
            proposal = y + (s1 - s0) * slope
            if i + 2 < len(sigmas):  # Heun's correction on every step but the last
                slope = (slope + (proposal - denoised(i + 1, proposal)) / s1) / 2
                used += 1
                proposal = y + (s1 - s0) * slope
            y = proposal
        return scheduler.alpha(_time(1.0, x0)) * y, used


def builtin_baselines() -> dict[str, Callable[[], object]]:
    from flowsolve.methods.runge_kutta import RK4, Euler, Heun, Midpoint

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
