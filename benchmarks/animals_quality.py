"""Sample quality of the animal U-Nets at the data's own sample size: FD-classifier and accuracy.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/animals_quality.py [--model animals-fm-ot] [--guidance 2] \\
        [--samples 500] [--nfe 40]

FD depends on the number of samples (its bias falls like 1/n), so the model is compared with
the data at equal n: ``--samples`` class-balanced samples (labels 0..9 in turn) against the
shipped held-out statistics, next to the data's own FD at that n (training images against the
held-out statistics) and the split-half FD of the held-out data (500 against 500). The samples
come from Heun on a uniform grid at ``--nfe`` (a stand-in for the dopri5 solution, whose cost
is ~140 evaluations per path; the script prints Heun's RMSE against dopri5 on a few paths).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import flowsolve  # noqa: E402
from flowsolve import zoo  # noqa: E402
from flowsolve.training.metrics import per_sample_rms  # noqa: E402
from flowsolve.training.quality import SampleQuality  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="animals-fm-ot", choices=zoo.CONDITIONAL_MODEL_NAMES)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--nfe", type=int, default=40)
    parser.add_argument("--check", type=int, default=8, help="paths on which Heun is compared with dopri5")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    u = zoo.load_model(args.model, guidance=args.guidance)
    quality = SampleQuality.animals()
    labels = torch.arange(args.samples) % 10
    x0 = torch.randn(args.samples, *u.sample_shape, generator=torch.Generator().manual_seed(3))
    started = time.perf_counter()
    samples = torch.cat([flowsolve.Heun().sample(u.bind({"labels": labels[i:i + 50]}), x0[i:i + 50], args.nfe)
                         for i in range(0, args.samples, 50)])
    seconds = time.perf_counter() - started
    check = flowsolve.ground_truth(u, x0[: args.check], conditions={"labels": labels[: args.check]}, rtol=1e-4, atol=1e-4)
    heun_error = float(per_sample_rms(samples[: args.check] - check.x1).mean())
    found = quality(samples, labels)
    reference = quality.reference
    floor = quality.data_floor_fd(args.samples)
    print(f"{args.model}, guidance {args.guidance:g}: {args.samples} samples, Heun {args.nfe} NFE ({seconds:.0f}s; "
          f"RMSE to dopri5 on {args.check} paths {heun_error:.4f})")
    print(f"  FD-classifier {found['fd']:.3f}, class accuracy {found['accuracy']:.3f}")
    print(f"  data: split-half FD {reference.split_half_fd:.3f} (500 vs 500); training images at n = {args.samples}: "
          f"{floor if floor is None else round(floor, 3)}; classifier held-out accuracy {reference.held_out_accuracy:.3f}")


if __name__ == "__main__":
    main()
