"""Training-free solvers on paths that end above zero noise (issue: correct on foreign models).

Two exact Gaussian-mixture models whose noise range is not EDM's default [0.002, 80]: a VP
score model with constant beta on diffusion times tau in [1e-3, 10] (sigma/alpha = 0.03 at
t = 1), and a DDPM linear-beta table (sigma = sqrt(beta_0) at its last step). Prints the RMSE
against dopri5 of every scheduler-based baseline at NFE 6 / 8 / 10 and of the named schedules
used by ``init=`` (scale-time Midpoint at NFE 8, before fitting).

    OMP_NUM_THREADS=1 python benchmarks/noise_range.py
"""

from __future__ import annotations

import torch

import flowsolve
from flowsolve import schedulers
from flowsolve.baselines import builtin_baselines
from flowsolve.training.metrics import rmse
from flowsolve_diffusers.schedule import DiscreteVP

NFES = (6, 8, 10)
BASELINES = ("dpm-solver++(2m)", "dpm-solver++(2m) edm", "dpm-solver++(2m) time-uniform", "edm-heun", "ddim")


def constant_beta_vp() -> schedulers.Scheduler:
    def tau(t):
        return 1e-3 + (10 - 1e-3) * (1 - t)

    return schedulers.Custom(lambda t: torch.exp(-tau(t) / 2), lambda t: torch.sqrt(-torch.expm1(-tau(t))),
                             name="vp-constant-beta")


def main() -> None:
    torch.set_num_threads(1)
    paths = {"constant-beta VP, tau in [1e-3, 10]": constant_beta_vp(),
             "DDPM linear-beta table": DiscreteVP(torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0))}
    x0 = torch.randn(256, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    print(f"{'model':38s} {'method':30s} " + " ".join(f"NFE {n:>2d}" for n in NFES))
    for label, scheduler in paths.items():
        u = flowsolve.GaussianMixtureFlow.random(dim=4, components=3, seed=0, scheduler=scheduler, spread=0.5)
        reference = flowsolve.ground_truth(u, x0, rtol=1e-10, atol=1e-10).x1
        for name in BASELINES:
            scores = [rmse(builtin_baselines()[name]().sample(u, x0, nfe)[0], reference) for nfe in NFES]
            print(f"{label:38s} {name:30s} " + " ".join(f"{s:6.4f}" for s in scores))
        for schedule in ("log-snr", "edm"):
            solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=8)
            solver.initialise(schedule, u)
            print(f"{label:38s} {'init=' + schedule + ' (NFE 8)':30s} {rmse(solver.sample(u, x0), reference):6.4f}")


if __name__ == "__main__":
    main()
