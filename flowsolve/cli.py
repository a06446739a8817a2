"""The ``flowsolve`` command line."""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    import torch

    from . import Euler, Midpoint, RK4, ScaleTime, compose
    from .gaussian_mixture import GaussianMixtureFlow
    from .metrics import psnr, rmse
    from .ground_truth import solve_reference

    torch.set_num_threads(1)
    flow = GaussianMixtureFlow.random(dim=64, components=10, seed=0)
    x0 = torch.randn(args.samples, 64, generator=torch.Generator().manual_seed(1))
    reference = solve_reference(flow, x0)
    print(f"exact Gaussian-mixture flow (FM-OT, 64 dims, 10 components), {args.samples} samples vs dopri5")
    print(f"{'solver':<28}{'NFE':>5}{'RMSE':>12}{'PSNR':>9}")
    for nfe in (4, 8, 16):
        for name, base in (("euler", Euler()), ("midpoint", Midpoint()), ("rk4", RK4())):
            if nfe % base.stages:
                continue
            x1 = base.sample(flow, x0, nfe)
            print(f"{name:<28}{nfe:>5}{rmse(x1, reference):>12.5f}{psnr(x1, reference):>9.2f}")
    solver = compose(ScaleTime(), Midpoint()).at(nfe=8)
    print(f"\n{solver.extra_repr()}: {solver.num_params} parameters (identity-initialised)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowsolve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="compare solvers on the exact Gaussian-mixture flow")
    demo.add_argument("--samples", type=int, default=256, help="number of noise samples (default 256)")
    demo.set_defaults(run=_demo)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
