"""DPM-Solver++(3M) (Lu et al., 2022) on log-SNR and EDM grids."""

from __future__ import annotations

import itertools

import attrs
import torch

from flowsolve.baselines.base import Baseline, predictions, scalar_time, scheduler_of
from flowsolve.baselines.dpm_solver import (
    exponential_step,
    finite_history,
    second_order_data,
)
from flowsolve.paths.noise_grids import GRID_SPACINGS, solver_grid


@attrs.frozen
class DPMSolverPP3M(Baseline):
    """DPM-Solver++(3M) (Lu et al., 2022): third-order multistep exponential integrator in the
    data prediction, one NFE per step, on the grids of :class:`~flowsolve.baselines.DPMSolverPP2M`
    (``spacing``: log-SNR uniform by default, ``"edm"`` or ``"time-uniform"``).

    A step uses as many earlier data predictions as it has (first order on the first step, second
    order, DPM-Solver++(2M)'s, on the second), and, like the 2M solver, none across a step of
    infinite log-SNR length: on a path to clean data the last step returns the data prediction,
    on one that ends above zero noise it lands on that end at full order."""

    needs_scheduler = True

    spacing: str = attrs.field(default="log-snr", validator=attrs.validators.in_(GRID_SPACINGS))

    @property
    def name(self) -> str:
        return "dpm-solver++(3m)" if self.spacing == "log-snr" else f"dpm-solver++(3m) {self.spacing}"

    def sample(self, u, x0, nfe: int):
        scheduler = scheduler_of(u)
        times = solver_grid(u, scheduler, nfe, self.spacing)
        x = x0
        datas: list[torch.Tensor] = []  # the earlier steps' data predictions and log-SNR lengths, oldest first
        steps: list[torch.Tensor] = []
        for start, end in itertools.pairwise(times):
            t0, t1 = scalar_time(start, x0), scalar_time(end, x0)
            data, _ = predictions(u, scheduler, t0, x)
            h = scheduler.log_snr(t1) - scheduler.log_snr(t0)  # +inf on the first / last step of FM paths
            usable = finite_history(h, steps)
            if usable == 0:
                blended = data
            elif usable == 1:
                blended = second_order_data(data, datas[-1], h, steps[-1])
            else:
                blended = third_order_data(data, datas[-1], datas[-2], h, steps[-1], steps[-2])
            x = exponential_step(scheduler, t0, t1, x, blended)
            datas, steps = [*datas, data][-2:], [*steps, h][-2:]
        return x, nfe


def third_order_data(data: torch.Tensor, previous: torch.Tensor, before: torch.Tensor, h: torch.Tensor,
                     previous_h: torch.Tensor, before_h: torch.Tensor) -> torch.Tensor:
    """The data prediction that makes :func:`~flowsolve.baselines.dpm_solver.exponential_step`
    DPM-Solver++(3M)'s step of log-SNR length ``h``: the first and second log-SNR differences of
    ``data`` and the two earlier predictions (``previous`` a step ``previous_h`` earlier, ``before``
    one ``before_h`` before that) weighted by ``phi_2 / phi_1`` and ``phi_3 / phi_1``."""
    r0, r1 = previous_h / h, before_h / h
    d1_0, d1_1 = (data - previous) / r0, (previous - before) / r1
    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    phi_1 = torch.expm1(-h)
    phi_2 = phi_1 / h + 1
    phi_3 = phi_2 / h - 0.5
    # x1 = (sigma1/sigma0) x - alpha1 (phi_1 D - phi_2 d1 + phi_3 d2)
    return data - phi_2 / phi_1 * d1 + phi_3 / phi_1 * d2


BASELINES = {
    "dpm-solver++(3m)": DPMSolverPP3M,
    "dpm-solver++(3m) edm": lambda: DPMSolverPP3M("edm"),
}
