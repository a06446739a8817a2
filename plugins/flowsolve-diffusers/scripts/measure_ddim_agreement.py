"""Measure how far diffusers' DDIM (eta = 0) lands from the adapted ODE's solution, per step count.

Usage: OMP_NUM_THREADS=1 python scripts/measure_ddim_agreement.py [--raw-time-embedding]

Prints relative RMSE between DDIM(steps) and a dopri5 solve (rtol = atol = 1e-7) of the
'diffusers' adapter from the same N(0, I) noise, on the tiny random UNet of the tests. DDIM is
a first-order solver of the same ODE, so error x steps should stay about constant.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import flowsolve
from flowsolve.training.ground_truth import solve_reference

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_diffusers_adapter import (  # noqa: E402
    ddim_sample,
    make_scheduler,
    make_unet,
    noise,
    relative_rmse,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw-time-embedding", action="store_true",
                        help="keep the random UNet's 1 rad/step timestep frequency (the tests drop it)")
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 100, 250, 500, 1000])
    args = parser.parse_args()
    torch.set_num_threads(1)
    unet = make_unet(smooth_in_time=not args.raw_time_embedding)
    x0 = noise()
    print(f"{'prediction':<14}{'steps':>6}{'rel. RMSE':>12}{'x steps':>10}")
    for prediction_type in ("epsilon", "v_prediction"):
        scheduler = make_scheduler(prediction_type)
        u = flowsolve.adapt(unet, "diffusers", scheduler=scheduler)
        start = time.perf_counter()
        with torch.no_grad():
            reference = solve_reference(u, x0, rtol=1e-7, atol=1e-7)
        print(f"# {prediction_type}: dopri5 reference in {time.perf_counter() - start:.1f} s, "
              f"RMS {float(reference.pow(2).mean().sqrt()):.3g}")
        for steps in args.steps:
            error = relative_rmse(ddim_sample(unet, scheduler, x0, steps), reference)
            print(f"{prediction_type:<14}{steps:>6}{error:>12.3e}{error * steps:>10.3f}")


if __name__ == "__main__":
    main()
