"""Named time schedules of a Gaussian-path model, as continuous transforms ``r -> t_r``.

They start a bespoke solver from the grids training-free solvers use (Theorem 2.3 makes every
such grid a transform of the family): ``fit(..., init="log-snr")``. Each schedule is
normalised so that ``t_0 = 0`` and ``t_1 = 1`` exactly; the scale stays ``s = 1``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .schedulers import Cosine, Scheduler


def _pinned(curve: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``(curve(r) - curve(0)) / (curve(1) - curve(0))``: the same shape, ends at exactly 0 and 1."""

    def time(r):
        ends = curve(torch.tensor([0.0, 1.0], dtype=r.dtype, device=r.device))
        return (curve(r) - ends[0]) / (ends[1] - ends[0])

    return time


def log_snr(scheduler: Scheduler, sigma_max: float = 80.0, sigma_min: float = 0.002):
    """Uniform in log-SNR between ``1/sigma_max`` and ``1/sigma_min`` (DPM-Solver's grid)."""
    low, high = -math.log(sigma_max), -math.log(sigma_min)
    return _pinned(lambda r: scheduler.log_snr_inverse(low + r * (high - low)))


def edm(scheduler: Scheduler, sigma_max: float = 80.0, sigma_min: float = 0.002, rho: float = 7.0):
    """Karras et al.'s ``sigma`` schedule (rho = 7) mapped to the model's time."""
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return _pinned(lambda r: scheduler.log_snr_inverse(-rho * torch.log(a + r * (b - a))))


def cosine(scheduler: Scheduler):
    """The cosine path's SNR profile in the model's time (exact at both ends).

    Needs a path that spans every SNR (``alpha_0 = 0`` and ``sigma_1 = 0``); VP does not.
    """
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    if float(scheduler.alpha(ends[0])) != 0 or float(scheduler.sigma(ends[1])) != 0:
        raise ValueError(
            f"the cosine schedule needs a path from pure noise to clean data (alpha_0 = 0, sigma_1 = 0); "
            f"{scheduler!r} has alpha_0 = {float(scheduler.alpha(ends[0])):.3g}: use 'log-snr' or 'edm'"
        )
    path = Cosine()
    return _pinned(lambda r: scheduler.log_snr_inverse(path.log_snr(r.clamp(1e-12, 1 - 1e-12))))


SCHEDULES = {"log-snr": log_snr, "edm": edm, "cosine": cosine}


def schedule_time(name: str, scheduler: Scheduler):
    """The transform ``r -> t_r`` of schedule ``name`` for ``scheduler``."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)} or pass a fitted solver")
    return SCHEDULES[name](scheduler)
