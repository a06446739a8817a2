"""Bespoke solvers on the bundled digits models against every baseline (the README's table).

    OMP_NUM_THREADS=1 python benchmarks/digits_models.py [--nfe 8,10] [--loss rmse]

For each model: fit ScaleTime x Midpoint at each NFE (ground truth noise seed 0), then compare
with the baselines on 1024 held-out paths (noise seed 1), via the same code as `flowsolve eval`.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

import flowsolve
from flowsolve.plugins.registry import lookup, model
from flowsolve.training.evaluation import compare, table
from flowsolve.training.store import GroundTruthStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="digits-fm-ot,digits-fm-cs,digits-eps-vp")
    parser.add_argument("--nfe", default="8,10")
    parser.add_argument("--loss", default="rmse")
    parser.add_argument("--iterations", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    nfes = [int(v) for v in args.nfe.split(",")]
    for name in args.models.split(","):
        u = model(name)
        with tempfile.TemporaryDirectory() as directory:
            train = GroundTruthStore(f"{directory}/train", u)
            test = GroundTruthStore(f"{directory}/test", u, seed=1).load(1024, progress=False)
            solvers = []
            for nfe in nfes:
                started = time.perf_counter()
                solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).fit(
                    u, nfe=nfe, loss=lookup("loss", args.loss)(), iterations=args.iterations, store=train, progress=False)
                solvers.append(("bespoke scale-time midpoint", solver))
                print(f"{name}: fitted NFE {nfe} in {time.perf_counter() - started:.1f}s", flush=True)
            rows = compare(u, test, nfes, solvers)
        print(f"\n### {name} (RMSE / PSNR dB vs dopri5, 1024 held-out paths; loss {args.loss})\n")
        print(table(rows, nfes) + "\n", flush=True)


if __name__ == "__main__":
    main()
