"""DPM-Solver++(2M) (Lu et al., 2022) on log-SNR, EDM and time-uniform grids."""

from __future__ import annotations

import itertools

import attrs
import torch

from flowsolve.baselines.base import Baseline, predictions, scalar_time, scheduler_of
from flowsolve.paths.noise_grids import GRID_SPACINGS, solver_grid


@attrs.frozen
class DPMSolverPP2M(Baseline):
    """DPM-Solver++(2M) (Lu et al., 2022): second-order multistep exponential integrator in the
    data prediction, one NFE per step, on a grid of :func:`~flowsolve.paths.noise_grids.solver_grid`
    (``spacing``: log-SNR uniform by default, ``"edm"`` or ``"time-uniform"``) over the model's
    noise range; on a path to clean data the last step returns the data prediction, on one that
    ends above zero noise it lands on that end."""

    needs_scheduler = True

    spacing: str = attrs.field(default="log-snr", validator=attrs.validators.in_(GRID_SPACINGS))

    @property
    def name(self) -> str:
        return "dpm-solver++(2m)" if self.spacing == "log-snr" else f"dpm-solver++(2m) {self.spacing}"

    def sample(self, u, x0, nfe: int):
        scheduler = scheduler_of(u)
        times = solver_grid(u, scheduler, nfe, self.spacing)
        x = x0
        previous: torch.Tensor | None = None  # the last step's data prediction and log-SNR step
        previous_h: torch.Tensor | None = None
        for start, end in itertools.pairwise(times):
            t0, t1 = scalar_time(start, x0), scalar_time(end, x0)
            data, _ = predictions(u, scheduler, t0, x)
            h = scheduler.log_snr(t1) - scheduler.log_snr(t0)  # +inf on the first / last step of FM paths
            if previous is None or previous_h is None or not torch.isfinite(h) or not torch.isfinite(previous_h):
                blended = data
            else:
                ratio = previous_h / h
                blended = (1 + 1 / (2 * ratio)) * data - previous / (2 * ratio)
            sigma0, sigma1, alpha1 = scheduler.sigma(t0), scheduler.sigma(t1), scheduler.alpha(t1)
            # x1 = (sigma1/sigma0) x - alpha1 (e^-h - 1) D, with e^-h = sigma1 alpha0 / (alpha1 sigma0)
            x = sigma1 / sigma0 * x + (alpha1 - sigma1 * scheduler.alpha(t0) / sigma0) * blended
            previous, previous_h = data, h
        return x, nfe


BASELINES = {
    "dpm-solver++(2m)": DPMSolverPP2M,
    "dpm-solver++(2m) edm": lambda: DPMSolverPP2M("edm"),
    "dpm-solver++(2m) time-uniform": lambda: DPMSolverPP2M("time-uniform"),
}
