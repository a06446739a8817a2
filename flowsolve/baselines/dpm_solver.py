"""DPM-Solver++(2M) (Lu et al., 2022) on log-SNR, EDM and time-uniform grids."""

from __future__ import annotations

import itertools

import attrs
import torch

from flowsolve.baselines.base import Baseline, predictions, scalar_time, scheduler_of
from flowsolve.paths.noise_grids import GRID_SPACINGS, solver_grid
from flowsolve.paths.schedulers import Scheduler


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
                blended = second_order_data(data, previous, h, previous_h)
            x = exponential_step(scheduler, t0, t1, x, blended)
            previous, previous_h = data, h
        return x, nfe


def second_order_data(data: torch.Tensor, previous: torch.Tensor, h: torch.Tensor,
                      previous_h: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++(2M)'s data prediction for a step of log-SNR length ``h`` (finite): ``data``
    extrapolated linearly in log-SNR through ``previous``, the one a step ``previous_h`` earlier,
    to the step's midpoint, ``data + (h / previous_h) (data - previous) / 2``."""
    ratio = previous_h / h
    return (1 + 1 / (2 * ratio)) * data - previous / (2 * ratio)


def finite_history(h: torch.Tensor, earlier_steps: list[torch.Tensor]) -> int:
    """How many earlier data predictions a multistep step of log-SNR length ``h`` can use: none
    where ``h`` is infinite (the first / last step of a flow-matching path, to or from infinite
    log-SNR: there the step is first order), else one per earlier step, latest first, up to the
    first of infinite length (``earlier_steps`` the earlier steps' lengths, oldest first)."""
    if not torch.isfinite(h):
        return 0
    count = 0
    for earlier in reversed(earlier_steps):
        if not torch.isfinite(earlier):
            break
        count += 1
    return count


def exponential_step(scheduler: Scheduler, t0: torch.Tensor, t1: torch.Tensor, x: torch.Tensor,
                     data: torch.Tensor) -> torch.Tensor:
    """One step of the exponential integrator in the data prediction from ``t0`` to ``t1`` with the
    data prediction held at ``data`` over the step: ``(sigma1/sigma0) x - alpha1 (e^-h - 1) data``,
    ``h`` the step in log-SNR. The multistep solvers (DPM-Solver++, UniPC) differ only in the
    ``data`` they blend from earlier predictions. Written without ``h``, so it stays finite at
    the ends of a flow-matching path (``alpha0 = 0``: the step from pure noise; ``sigma1 = 0``:
    the step to the data, which returns ``data``)."""
    sigma0, sigma1, alpha1 = scheduler.sigma(t0), scheduler.sigma(t1), scheduler.alpha(t1)
    # e^-h = sigma1 alpha0 / (alpha1 sigma0)
    return sigma1 / sigma0 * x + (alpha1 - sigma1 * scheduler.alpha(t0) / sigma0) * data


BASELINES = {
    "dpm-solver++(2m)": DPMSolverPP2M,
    "dpm-solver++(2m) edm": lambda: DPMSolverPP2M("edm"),
    "dpm-solver++(2m) time-uniform": lambda: DPMSolverPP2M("time-uniform"),
}
