"""Sampling cost of a bespoke solver against its NFE: overhead over the bare network calls.

    OMP_NUM_THREADS=1 python benchmarks/sampling_overhead.py [--batch 256] [--nfe 10]

Times (median of repeats, one thread) on the bundled digits-fm-ot network: the NFE network
calls alone, plain Midpoint, and fitted-form ScaleTime x Midpoint, ScaleTime x AB2 and
non-stationary solvers, same noise.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import flowsolve
from flowsolve.plugins.registry import model


def median_seconds(function, repeats: int) -> float:
    function()  # warm-up
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--nfe", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    u = model("digits-fm-ot")
    x0 = torch.randn(args.batch, 64, generator=torch.Generator().manual_seed(0))
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=args.nfe)
    multistep = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.AdamsBashforth(2)).at(nfe=args.nfe)
    non_stationary = flowsolve.NonStationary().at(nfe=args.nfe)
    with torch.no_grad():
        for p in [*solver.parameters(), *multistep.parameters(), *non_stationary.parameters()]:
            p.add_(0.01 * torch.randn_like(p))  # non-identity coefficients, as after fitting
    times = torch.linspace(0, 1, args.nfe)

    def network_only():
        with torch.no_grad():
            for t in times:
                u(t, x0)

    rows = {
        f"{args.nfe} network calls alone": median_seconds(network_only, args.repeats),
        f"Midpoint, {args.nfe} NFE": median_seconds(lambda: flowsolve.Midpoint().sample(u, x0, args.nfe), args.repeats),
        f"bespoke ScaleTime x Midpoint, {args.nfe} NFE": median_seconds(lambda: solver.sample(u, x0), args.repeats),
        f"bespoke ScaleTime x AB2, {args.nfe} NFE": median_seconds(lambda: multistep.sample(u, x0), args.repeats),
        f"non-stationary, {args.nfe} NFE": median_seconds(lambda: non_stationary.sample(u, x0), args.repeats),
    }
    base = next(iter(rows.values()))
    print(f"| batch {args.batch} | ms | ratio to network calls |\n|---|---|---|")
    for name, seconds in rows.items():
        print(f"| {name} | {1e3 * seconds:.2f} | {seconds / base:.3f} |")


if __name__ == "__main__":
    main()
