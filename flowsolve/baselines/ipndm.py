"""iPNDM (the improved pseudo-numerical method of Zhang & Chen, 2023) on log-SNR and EDM grids.

The probability-flow ODE of a Gaussian path ``x = alpha x1 + sigma eps`` becomes, in DDIM's
variables ``y = x / alpha`` and ``s = sigma / alpha``, ``dy/ds = eps_hat(y, s)``: the part linear
in ``x`` is gone, and a step that holds the noise prediction fixed is DDIM's step, exact where
the prediction does not change. iPNDM integrates that ODE with the Adams--Bashforth formulas of
up to fourth order, applied with their coefficients for equal steps, whatever the grid:

    y_{i+1} = y_i + (s_{i+1} - s_i) sum_j c_j eps_{i-j},

``c = (1)``, ``(3/2, -1/2)``, ``(23/12, -16/12, 5/12)`` and ``(55/24, -59/24, 37/24, -9/24)``
for one to four predictions, the latest first. A step uses every prediction it has, up to four
(so the first three steps warm up at orders one to three); one model evaluation per step. In
``x``: ``x_{i+1} = (alpha_{i+1} / alpha_i) x_i + (sigma_{i+1} - alpha_{i+1} s_i) eps``, ``eps``
the blended prediction.

A step from pure noise (``alpha = 0``, ``s`` infinite at ``t = 0`` of a flow-matching path) is
DDIM's step ``x = alpha_1 x1_hat + sigma_1 eps_hat`` (the limit of the formula), and, as with
DPM-Solver++, no prediction is carried across it: the multistep history starts after it. A step
to clean data (``s = 0``) is an ordinary one of finite length in ``s``.
"""

from __future__ import annotations

import itertools

import attrs
import torch

from flowsolve.baselines.base import Baseline, predictions, scalar_time, scheduler_of
from flowsolve.paths.noise_grids import GRID_SPACINGS, solver_grid
from flowsolve.paths.schedulers import Scheduler

# Adams--Bashforth coefficients for equal steps, by the number of predictions used (latest first).
ADAMS_BASHFORTH = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)


@attrs.frozen
class IPNDM(Baseline):
    """iPNDM: the fourth-order Adams--Bashforth multistep method (with lower-order warm-up) on the
    noise prediction in DDIM's variables ``y = x / alpha``, ``s = sigma / alpha``; one NFE per
    step, on a grid of :func:`~flowsolve.paths.noise_grids.solver_grid` (``spacing``: log-SNR
    uniform by default, ``"edm"`` or ``"time-uniform"``). See the module docstring for the
    formula and the handling of the path's ends."""

    needs_scheduler = True

    spacing: str = attrs.field(default="log-snr", validator=attrs.validators.in_(GRID_SPACINGS))

    @property
    def name(self) -> str:
        return "ipndm" if self.spacing == "log-snr" else f"ipndm {self.spacing}"

    def sample(self, u, x0, nfe: int):
        scheduler = scheduler_of(u)
        times = solver_grid(u, scheduler, nfe, self.spacing)
        x = x0
        noises: list[torch.Tensor] = []  # the noise predictions of the steps so far, latest first
        for start, end in itertools.pairwise(times):
            t0, t1 = scalar_time(start, x0), scalar_time(end, x0)
            data, noise = predictions(u, scheduler, t0, x)
            if not bool(scheduler.alpha(t0) > 0):  # from pure noise: DDIM's step, and no history across it
                x = scheduler.alpha(t1) * data + scheduler.sigma(t1) * noise
                noises = []
                continue
            noises = [noise, *noises][:len(ADAMS_BASHFORTH)]
            blended = sum((c * e for c, e in zip(ADAMS_BASHFORTH[len(noises) - 1], noises)), torch.zeros_like(x))
            x = ddim_ode_step(scheduler, t0, t1, x, blended)
        return x, nfe


def ddim_ode_step(scheduler: Scheduler, t0: torch.Tensor, t1: torch.Tensor, x: torch.Tensor,
                  noise: torch.Tensor) -> torch.Tensor:
    """One step of ``dy/ds = eps`` (``y = x / alpha``, ``s = sigma / alpha``) from ``t0`` to ``t1``
    with the noise prediction held at ``noise``, in ``x``: ``(alpha1/alpha0) x + (sigma1 - alpha1
    sigma0/alpha0) noise`` (``alpha0 > 0``)."""
    alpha0, sigma0 = scheduler.alpha(t0), scheduler.sigma(t0)
    alpha1, sigma1 = scheduler.alpha(t1), scheduler.sigma(t1)
    return alpha1 / alpha0 * x + (sigma1 - alpha1 * sigma0 / alpha0) * noise


BASELINES = {
    "ipndm": IPNDM,
    "ipndm edm": lambda: IPNDM("edm"),
}
