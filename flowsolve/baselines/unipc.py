"""UniPC (Zhao et al., 2023), variant B(h) = e^h - 1 ("bh2"), on log-SNR and EDM grids."""

from __future__ import annotations

import itertools
import math

import attrs
import torch

from flowsolve.baselines.base import Baseline, predictions, scalar_time, scheduler_of
from flowsolve.baselines.dpm_solver import exponential_step, finite_history
from flowsolve.paths.noise_grids import GRID_SPACINGS, solver_grid


@attrs.frozen
class UniPC(Baseline):
    """UniPC (Zhao et al., 2023) in the data prediction with ``B(h) = e^h - 1`` ("bh2"): a
    multistep predictor (UniP) of ``order`` and a corrector (UniC) that raises each step's order by
    one with the model evaluation the next step starts from, so one NFE per step; the last step
    goes uncorrected. On a grid of :func:`~flowsolve.paths.noise_grids.solver_grid` (``spacing``).

    As with DPM-Solver++, a step uses as many earlier data predictions as it has (up to
    ``order - 1``) and none across a step of infinite log-SNR length, where it is a plain
    first-order step without corrector: on a path to clean data the last step returns the data
    prediction."""

    needs_scheduler = True

    order: int = attrs.field(default=2, validator=attrs.validators.in_((2, 3)))
    spacing: str = attrs.field(default="log-snr", validator=attrs.validators.in_(GRID_SPACINGS))

    @property
    def name(self) -> str:
        order = "" if self.order == 2 else f" order-{self.order}"
        return f"unipc-bh2{order}" if self.spacing == "log-snr" else f"unipc-bh2{order} {self.spacing}"

    def sample(self, u, x0, nfe: int):
        scheduler = scheduler_of(u)
        times = solver_grid(u, scheduler, nfe, self.spacing)
        x = x0
        data, _ = predictions(u, scheduler, scalar_time(times[0], x0), x)
        datas: list[torch.Tensor] = []  # the earlier steps' data predictions and log-SNR lengths, oldest first
        steps: list[torch.Tensor] = []
        for index, (start, end) in enumerate(itertools.pairwise(times)):
            t0, t1 = scalar_time(start, x0), scalar_time(end, x0)
            h = scheduler.log_snr(t1) - scheduler.log_snr(t0)  # +inf on the first / last step of FM paths
            usable = min(finite_history(h, steps), self.order - 1)
            # Differences of the earlier predictions to this one, over their log-SNR offset in steps of h.
            offsets = [-sum(steps[-i:]) / h for i in range(1, usable + 1)]
            differences = [(datas[-i] - data) / offset for i, offset in enumerate(offsets, start=1)]
            predictor, corrector = bh2_weights(h, offsets)
            predicted = exponential_step(scheduler, t0, t1, x, data + weighted(predictor, differences, data))
            if index == len(times) - 2:
                return predicted, nfe
            following, _ = predictions(u, scheduler, t1, predicted)
            if torch.isfinite(h):
                correction = weighted(corrector[:-1], differences, data) + corrector[-1] * (following - data)
                x = exponential_step(scheduler, t0, t1, x, data + correction)
            else:  # from pure noise: a plain first-order step
                x = predicted
            datas, steps = [*datas, data][1 - self.order:], [*steps, h][1 - self.order:]
            data = following
        return x, nfe


def weighted(weights: list[torch.Tensor], differences: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """``sum(w d)`` (zero for none)."""
    return sum((w * d for w, d in zip(weights, differences)), torch.zeros_like(like))


def bh2_weights(h: torch.Tensor, offsets: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """UniPC's predictor and corrector weights for a step of log-SNR length ``h`` (finite) with
    earlier predictions at log-SNR offsets ``offsets`` (in units of ``h``, negative), for
    ``B(h) = e^h - 1`` in the data prediction (``e^-h - 1`` in this step's sign): the predictor's
    ``len(offsets)``, the corrector's one more, its last for the next step's prediction."""
    order = len(offsets) + 1
    if not torch.isfinite(h):
        return [], []  # a first-order step, uncorrected
    hh = -h
    b_h = torch.expm1(hh)
    # b_k = k! phi_k(hh) / B(h), phi_k by the recurrence phi_{k+1} = phi_k / hh - 1 / (k+1)!
    phi = b_h / hh - 1
    b = []
    for k in range(1, order + 1):
        b.append(phi * math.factorial(k) / b_h)
        phi = phi / hh - 1 / math.factorial(k + 1)
    nodes = [*offsets, torch.ones_like(h)]
    vandermonde = torch.stack([torch.stack([node**k for node in nodes]) for k in range(order)])
    if order == 1:
        predictor: list[torch.Tensor] = []
    elif order == 2:
        predictor = [torch.full_like(h, 0.5)]  # the paper's simplification (= DPM-Solver++(2M)'s step)
    else:
        predictor = list(torch.linalg.solve(vandermonde[:-1, :-1], torch.stack(b[:-1])))
    corrector = [torch.full_like(h, 0.5)] if order == 1 else list(torch.linalg.solve(vandermonde, torch.stack(b)))
    return predictor, corrector


BASELINES = {
    "unipc-bh2": UniPC,
    "unipc-bh2 edm": lambda: UniPC(spacing="edm"),
}
