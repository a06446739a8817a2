"""How many ground-truth paths does a fit need? Validation and test RMSE against training paths.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/ground_truth_paths.py [--model digits-eps-vp] [--nfe 8] \\
        [--paths 16 32 64 128 256 512] [--iterations 300]

Ground truth dominates the cost of fitting a real network (hundreds of network calls per
path), so the fewer paths a fit needs, the cheaper it is. Fits a non-stationary solver
(``fit``'s defaults, started from DPM-Solver++(2M)) on the first N training paths of one store
for each N, with the same 128 validation paths, and scores it on 512 held-out test paths.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import flowsolve  # noqa: E402
from flowsolve.plugins.registry import model  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="digits-eps-vp")
    parser.add_argument("--nfe", type=int, default=8)
    parser.add_argument("--paths", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", default=".bench/ground-truth-paths")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    u = model(args.model)
    store = flowsolve.GroundTruthStore(f"{args.out}/{args.model}-fit", u, shard_size=128)
    test = flowsolve.GroundTruthStore(f"{args.out}/{args.model}-test", u, seed=1, shard_size=128).load(512)
    start = flowsolve.NonStationary().at(args.nfe, init="dpm-solver++(2m)", model=u)
    print(f"{args.model}, non-stationary NFE {args.nfe} from DPM-Solver++(2M) (test RMSE "
          f"{flowsolve.evaluate(start, u, test)['rmse']:.4f}), {args.iterations} steps, batch {args.batch}")
    print("| training paths | best validation RMSE | test RMSE | fit seconds |\n|---|---|---|---|")
    for paths in args.paths:
        began = time.perf_counter()
        solver = flowsolve.NonStationary().fit(u, nfe=args.nfe, init="dpm-solver++(2m)", store=store,
                                               train_trajectories=paths, val_trajectories=128,
                                               iterations=args.iterations, batch_size=min(args.batch, paths),
                                               progress=False)
        seconds = time.perf_counter() - began
        print(f"| {paths} | {solver.metadata['validation']['rmse']:.4f} | "
              f"{flowsolve.evaluate(solver, u, test)['rmse']:.4f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
