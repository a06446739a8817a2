"""Deterministic DDIM (Song et al., 2021)."""

from __future__ import annotations

import itertools

import attrs

from flowsolve.baselines.base import Baseline, predictions, scalar_time, scheduler_of
from flowsolve.paths.noise_grids import uniform_time_grid


@attrs.frozen
class DDIM(Baseline):
    """Deterministic DDIM: ``x_{i+1} = alpha_{i+1} x1_hat_i + sigma_{i+1} eps_hat_i``; one NFE per step,
    on a grid uniform in ``t`` (the model's own time) over the times the model covers
    (:func:`~flowsolve.paths.noise_grids.uniform_time_grid`; ``i / nfe`` for most models)."""

    needs_scheduler = True

    name = "ddim"

    def sample(self, u, x0, nfe: int):
        scheduler = scheduler_of(u)
        times = uniform_time_grid(u, nfe)
        x = x0
        for start, end in itertools.pairwise(times):
            data, noise = predictions(u, scheduler, scalar_time(start, x0), x)
            t_end = scalar_time(end, x0)
            x = scheduler.alpha(t_end) * data + scheduler.sigma(t_end) * noise
        return x, nfe


BASELINES = {"ddim": DDIM}
