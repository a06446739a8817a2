"""One solver over a range of guidance scales against one solver per scale.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/guidance_range.py [--nfe 6] [--iterations 300]

The model is exact: a class-conditional Gaussian mixture (:class:`ConditionalGaussianMixture`,
16 dimensions, 8 classes, FM-OT path) under classifier-free guidance, so the ground truth is
the dopri5 solution of a closed-form field. Fitted (``fit``'s defaults for the family, budget
options below):

- per scale ``w`` in 0, 1, 2, 3, 4: a non-stationary solver on paths with random labels at that ``w``;
- once: a :class:`GuidanceRange` solver with anchors 0, 2, 4 on paths whose labels *and*
  scales (uniform in [0, 4]) are drawn per path.

All start from DPM-Solver++(2M). Each is scored on held-out paths at every ``w`` in 0..4 and at
the in-between scales 0.5 and 2.5, which no per-scale solver was fitted to.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import flowsolve  # noqa: E402
from flowsolve.models.conditioning import GuidanceScales, Labels  # noqa: E402
from flowsolve.models.gaussian_mixture import ConditionalGaussianMixture, GaussianMixtureFlow  # noqa: E402

SCALES = (0.0, 1.0, 2.0, 3.0, 4.0)
EVALUATED = (0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 4.0)


def guided(net: ConditionalGaussianMixture, weight: float, distribution):
    model = flowsolve.ClassifierFreeGuidance(net, weight, null_condition=torch.tensor([net.null_label]),
                                             distribution=distribution)
    return flowsolve.adapt(model, "fm-ot")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nfe", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--test", type=int, default=256)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    net = ConditionalGaussianMixture(GaussianMixtureFlow.random(dim=16, components=8, seed=0, spread=1.5))
    labels = Labels(8)
    budget = dict(iterations=args.iterations, batch_size=32, train_trajectories=512, val_trajectories=128,
                  dtype=torch.float64, init="dpm-solver++(2m)", progress=False)
    solvers = {}
    for w in SCALES:
        solvers[f"per-scale w={w:g}"] = flowsolve.NonStationary().fit(guided(net, w, labels), args.nfe, **budget)
    ranged_model = guided(net, 0.0, labels & GuidanceScales(SCALES[0], SCALES[-1]))
    solvers["guidance-range [0, 2, 4]"] = flowsolve.GuidanceRange(anchors=(0.0, 2.0, 4.0)).fit(ranged_model, args.nfe,
                                                                                             **budget)
    rows = {name: [] for name in ["dpm-solver++(2m)", *solvers]}
    for w in EVALUATED:
        u = guided(net, w, labels)
        test = flowsolve.GroundTruthStore(None, u, dtype=torch.float64, seed=11, shard_size=args.test).load(args.test)
        start = flowsolve.NonStationary().at(args.nfe, init="dpm-solver++(2m)", model=u)
        rows["dpm-solver++(2m)"].append(flowsolve.evaluate(start, u, test)["rmse"])
        for name, solver in solvers.items():
            rows[name].append(flowsolve.evaluate(solver, u, test)["rmse"])
    print(f"RMSE on {args.test} held-out paths, NFE {args.nfe} (rows: solver; columns: guidance scale it is run at)")
    print("| solver | " + " | ".join(f"w={w:g}" for w in EVALUATED) + " |")
    print("|---|" + "---|" * len(EVALUATED))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    per_scale = [rows[f"per-scale w={w:g}"][EVALUATED.index(w)] for w in SCALES]
    ranged = [rows["guidance-range [0, 2, 4]"][EVALUATED.index(w)] for w in SCALES]
    print("guidance-range / per-scale solver at its own scale: "
          + ", ".join(f"w={w:g}: {r / p:.2f}" for w, r, p in zip(SCALES, ranged, per_scale)))


if __name__ == "__main__":
    main()
