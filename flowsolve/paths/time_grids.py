"""Named time schedules of a Gaussian-path model, as continuous transforms ``r -> t_r``.

They start a bespoke solver from the grids training-free solvers use (Theorem 2.3 makes every
such grid a transform of the family): ``fit(..., init="log-snr")``. Each schedule is
normalised so that ``t_0 = 0`` and ``t_1 = 1`` exactly; the scale stays ``s = 1``.

``init="log-snr+ddim"`` adds the scale of the exponential integrators: with
``s_t = (alpha_0 + sigma_0) / (alpha_t + sigma_t)`` the scaled path ``s x_t`` is (up to a
constant) an FM-OT path in ``tau = alpha / (alpha + sigma)``, whose Euler step is exactly DDIM;
on an Euler base the node derivatives are set to the secants of ``tau`` so that the start *is*
DDIM on the schedule's grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from flowsolve.core.errors import FlowsolveValueError

# A layer above paths/: the model's noise range lives with the baselines' grids for now (it
# belongs in paths/; tests/test_layers.py lists this import as a known exception).
from flowsolve.paths.noise_grids import sigma_range
from flowsolve.paths.schedulers import Cosine, Scheduler
from flowsolve.solvers.transforms import NodeValues


def _pinned(curve: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``(curve(r) - curve(0)) / (curve(1) - curve(0))``: the same shape, ends at exactly 0 and 1."""

    def time(r):
        ends = curve(torch.tensor([0.0, 1.0], dtype=r.dtype, device=r.device))
        return (curve(r) - ends[0]) / (ends[1] - ends[0])

    return time


def log_snr(scheduler: Scheduler, sigma_max: float = 80.0, sigma_min: float = 0.002, *, model=None):
    """Uniform in log-SNR between ``1/sigma_max`` and ``1/sigma_min`` (DPM-Solver's grid), narrowed
    to the noise range ``model`` really has (:func:`~flowsolve.baselines.sigma_range`)."""
    sigma_max, sigma_min = sigma_range(model, scheduler, sigma_max, sigma_min)
    low, high = -math.log(sigma_max), -math.log(sigma_min)
    return _pinned(lambda r: scheduler.log_snr_inverse(low + r * (high - low)))


def edm(scheduler: Scheduler, sigma_max: float = 80.0, sigma_min: float = 0.002, rho: float = 7.0, *, model=None):
    """Karras et al.'s ``sigma`` schedule (rho = 7) mapped to the model's time, over the noise range
    ``model`` really has (:func:`~flowsolve.baselines.sigma_range`)."""
    sigma_max, sigma_min = sigma_range(model, scheduler, sigma_max, sigma_min)
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return _pinned(lambda r: scheduler.log_snr_inverse(-rho * torch.log(a + r * (b - a))))


def cosine(scheduler: Scheduler, *, model=None):
    """The cosine path's SNR profile in the model's time (exact at both ends).

    Needs a path that spans every SNR (``alpha_0 = 0`` and ``sigma_1 = 0``); VP does not.
    """
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    if float(scheduler.alpha(ends[0])) != 0 or float(scheduler.sigma(ends[1])) != 0:
        raise FlowsolveValueError(
            f"the cosine schedule needs a path from pure noise to clean data (alpha_0 = 0, sigma_1 = 0); "
            f"{scheduler!r} has alpha_0 = {float(scheduler.alpha(ends[0])):.3g}: use 'log-snr' or 'edm'"
        )
    path = Cosine()
    return _pinned(lambda r: scheduler.log_snr_inverse(path.log_snr(r.clamp(1e-12, 1 - 1e-12))))


def uniform(scheduler: Scheduler, *, model=None):
    """Uniform in the model's own time (DDIM's default grid)."""
    return lambda r: r


SCHEDULES = {"log-snr": log_snr, "edm": edm, "cosine": cosine, "uniform": uniform}


def ddim_scale(scheduler: Scheduler) -> Callable[[torch.Tensor], torch.Tensor]:
    """``t -> (alpha_0 + sigma_0) / (alpha_t + sigma_t)``: ``s_0 = 1`` and finite at both ends."""
    start = torch.tensor(0.0, dtype=torch.float64)
    total = float(scheduler.alpha(start) + scheduler.sigma(start))
    return lambda t: total / (scheduler.alpha(t) + scheduler.sigma(t))


def ddim_euler_derivatives(scheduler: Scheduler, t: torch.Tensor, h: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dt, ds)`` at the step points ``t`` (``n + 1`` of them) that make a scale-time Euler step
    exactly DDIM: ``ubar_i = (tau_{i+1} - tau_i) / h * (x1_hat - eps_hat)``; the last entry is unused."""
    alpha, sigma = scheduler.alpha(t), scheduler.sigma(t)
    d_alpha, d_sigma = scheduler.d_alpha(t[:-1]), scheduler.d_sigma(t[:-1])
    tau = alpha / (alpha + sigma)
    total = alpha[:-1] + sigma[:-1]
    d_tau = (d_alpha * sigma[:-1] - alpha[:-1] * d_sigma) / total**2
    d_scale = -float(alpha[0] + sigma[0]) * (d_alpha + d_sigma) / total**2
    dt = tau.diff() / h / d_tau
    ds = d_scale * dt
    return torch.cat([dt, dt[-1:]]), torch.cat([ds, ds[-1:]])


def schedule_time(name: str, scheduler: Scheduler, model=None):
    """The transform ``r -> t_r`` of schedule ``name`` for ``scheduler``, over the noise range of
    ``model`` (its ``time_range``) where given."""
    if name not in SCHEDULES:
        raise FlowsolveValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)} (each optionally with "
                         "'+ddim', e.g. 'log-snr+ddim') or pass a fitted solver")
    return SCHEDULES[name](scheduler, model=model)


def start_from_schedule(solver, spec: str, model) -> None:
    """Set ``solver`` (a :class:`~flowsolve.ParametricSolver`) to schedule ``spec`` of ``model``'s
    scheduler: ``"log-snr"`` etc. (time only), or ``"log-snr+ddim"`` (time and DDIM's scale)."""
    scheduler = getattr(model, "scheduler", None)
    if not isinstance(scheduler, Scheduler):
        raise FlowsolveValueError(f"init={spec!r} needs a Gaussian-path model carrying a flowsolve scheduler (.scheduler)")
    name, plus, scaling = spec.partition("+")
    if plus and scaling != "ddim":
        raise FlowsolveValueError(f"init={spec!r}: the only scaling is '+ddim' (e.g. 'log-snr+ddim')")
    learns = {"time": solver.transform.learns_time, "scale": solver.transform.learns_scale}
    # '+ddim' sets the scale and, for the exact DDIM start, the time derivatives: it needs both.
    missing = [what for what, needed in (("time", name != "uniform" or plus), ("scale", bool(plus)))
               if needed and not learns[what]]
    if missing:
        raise FlowsolveValueError(f"init={spec!r} sets the {' and '.join(missing)}; {solver.transform!r} does not learn it")
    time = schedule_time(name, scheduler, model)
    if not plus:
        solver.set_transform(time, torch.ones_like)
        return
    scale_of_t = ddim_scale(scheduler)
    solver.set_transform(time, lambda r: scale_of_t(time(r)))
    # Euler, or Adams-Bashforth 1: order 1 with one evaluation per step, at the step's start.
    euler_like = solver.base.order == 1 and solver.base.evaluations(solver.n_steps) == solver.n_steps
    if euler_like:  # secant derivatives: the start is exactly DDIM
        _, t, _, s, _ = solver.nodes()
        dt, ds = ddim_euler_derivatives(scheduler, t, solver.step_size)
        solver.set_node_values(NodeValues(t, dt, s, ds))
