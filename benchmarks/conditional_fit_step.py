"""Is a fit over class labels slower per step than an unconditional fit at the same batch size?

Usage::

    OMP_NUM_THREADS=1 python benchmarks/conditional_fit_step.py [--model animals-fm-ot] [--batch 4] [--steps 6]

Times ``loss.backward`` (one Adam step's work) of a non-stationary solver at NFE 8 on the
animal U-Net, on the same ground-truth batch, three ways: the unconditional model (null label),
the conditional model with one label per path bound (what fitting over labels runs), and with
guidance (w = 2: one batched call of twice the rows per evaluation). The paths are straight
lines from noise to a fixed image: the cost of a step does not depend on how accurate they are.
Steps alternate between the settings so a busy machine slows all of them alike; the median of
``--steps`` is reported, as a ratio to the unconditional step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import flowsolve  # noqa: E402
from flowsolve import zoo  # noqa: E402
from flowsolve.training.ground_truth import GroundTruth  # noqa: E402
from flowsolve.training.losses import RMSE  # noqa: E402


def straight_paths(batch: int, shape, labels=None) -> GroundTruth:
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, *shape, generator=generator)
    x1 = torch.randn(batch, *shape, generator=generator).clamp(-1, 1)
    times = torch.linspace(0, 1, 3, dtype=torch.float64).expand(batch, -1)
    fractions = times.to(x0.dtype)[..., None, None, None]
    states = (1 - fractions) * x0[:, None] + fractions * x1[:, None]
    velocities = (x1 - x0)[:, None].expand_as(states)
    return GroundTruth(x0, times, states, velocities, conditions=None if labels is None else {"labels": labels})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="animals-fm-ot", choices=zoo.CONDITIONAL_MODEL_NAMES)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--nfe", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    plain, guided = zoo.load_model(args.model), zoo.load_model(args.model, guidance=2.0)
    shape = plain.sample_shape
    labels = torch.arange(args.batch) % 10
    settings = {
        "unconditional (null label)": (plain, straight_paths(args.batch, shape)),
        "one label per path": (plain, straight_paths(args.batch, shape, labels)),
        "labels + guidance w=2": (guided, straight_paths(args.batch, shape, labels)),
    }
    solver = flowsolve.NonStationary().at(args.nfe, init="dpm-solver++(2m)", model=plain)
    loss = RMSE()
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    for step in range(args.steps + 1):
        for name, (model, paths) in settings.items():
            solver.zero_grad(set_to_none=True)
            started = time.perf_counter()
            loss.backward(solver, paths.field(model), paths)
            if step:  # the first round warms up
                seconds[name].append(time.perf_counter() - started)
    base = statistics.median(seconds["unconditional (null label)"])
    print(f"{args.model}, non-stationary NFE {args.nfe}, batch {args.batch}: median seconds per step over {args.steps}")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"  {name:28s} {median:7.3f}s  {median / base:5.2f}x")


if __name__ == "__main__":
    main()
