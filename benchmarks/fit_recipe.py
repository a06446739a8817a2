"""Learning rate and schedule of a non-stationary fit on a bundled U-Net (docs/fitting.md's table).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/fit_recipe.py [--model animals-eps-vp --guidance 2 --nfe 10
        --init unipc-bh2 --iterations 150 --batch 4] [--out .bench/fit-recipe]

Uses the ground-truth stores of ``benchmarks/animals.py`` (run that first: training + validation
paths with noise seed 0, 128 test paths with seed 1, dopri5 rtol = atol = 1e-4) and fits the same
start with each (lr, schedule) pair below, validating every 25 steps. Prints the validation
curve and the test RMSE of the best-on-validation parameters; results are cached per pair.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import flowsolve  # noqa: E402
from flowsolve import zoo  # noqa: E402
from flowsolve.training.metrics import per_sample_rms  # noqa: E402

RECIPES = (("3e-2", "cosine"), ("3e-2", "warmup-cosine"), ("1e-2", "cosine"), ("1e-2", "warmup-cosine"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="animals-eps-vp")
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--nfe", type=int, default=10)
    parser.add_argument("--init", default="unipc-bh2")
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--stores", default=".bench/animals/stores")
    parser.add_argument("--out", default=".bench/fit-recipe")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    tag = f"{args.model}-w{args.guidance:g}"
    u = zoo.load_model(args.model, guidance=args.guidance)
    root = Path(args.stores) / f"{tag}-rtol0.0001"
    options = dict(rtol=1e-4, atol=1e-4, shard_size=32)
    fit_store = flowsolve.GroundTruthStore(root / "fit", u, seed=0, **options)
    test = flowsolve.GroundTruthStore(root / "test", u, seed=1, **options).load(128, progress=False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for lr, schedule in RECIPES:
        name = f"{tag}-nfe{args.nfe}-{args.init}-lr{lr}-{schedule}-it{args.iterations}-b{args.batch}"
        result = out / f"{name}.json"
        if not result.exists():
            solver = flowsolve.NonStationary().fit(
                u, nfe=args.nfe, init=args.init, store=fit_store, lr=float(lr), lr_schedule=schedule,
                iterations=args.iterations, batch_size=args.batch, validate_every=25, train_trajectories=128,
                val_trajectories=32, checkpoint=out / f"{name}.ckpt", progress=True)
            with torch.no_grad():
                test_rmse = float(per_sample_rms(solver.sample(test.field(u), test.x0) - test.x1).mean())
            curve = [round(r["val_rmse"], 4) for r in solver.metadata["history"]]
            result.write_text(json.dumps({"lr": lr, "schedule": schedule, "validation": curve, "test": test_rmse}))
        found = json.loads(result.read_text())
        print(f"lr {lr}, {schedule:13s}: validation {' '.join(f'{v:.3f}' for v in found['validation'])}; "
              f"test {found['test']:.4f}", flush=True)


if __name__ == "__main__":
    main()
