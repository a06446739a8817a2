"""What ``flowsolve fit``'s defaults reach on a bundled model in their default time budget.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/fit_defaults.py --model animals-eps-vp [--guidance 2] [--nfe 8]
        [--cache .bench/fit-defaults] [--test-store .bench/animals/stores/animals-eps-vp-w0-rtol0.0001/test]

Runs ``flowsolve fit MODEL --nfe 8 --family non-stationary --init dpm-solver++(2m)`` with nothing
else given (15-minute budget: the path counts, batch and steps are planned from the model's
measured cost) in a fresh cache directory, so its ground truth is part of the time, and prints
the wall time, the plan, the validation RMSE at the start and at the best step, and their
ratio. With ``--test-store`` (a ground-truth store of held-out noise, e.g. the one
``benchmarks/animals.py`` writes) it also scores the fitted solver and its start there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import flowsolve  # noqa: E402
from flowsolve import zoo  # noqa: E402
from flowsolve.cli import main as cli_main  # noqa: E402
from flowsolve.training.metrics import per_sample_rms  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="animals-eps-vp")
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--nfe", type=int, default=8)
    parser.add_argument("--init", default="dpm-solver++(2m)", help="--init of the command (default the target's)")
    parser.add_argument("--cache", default=None, help="cache directory (default: a fresh one under .bench)")
    parser.add_argument("--test-store", default=None, help="held-out ground-truth store to score on (128 paths)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    tag = f"{args.model}" + ("" if args.guidance is None else f"-w{args.guidance:g}") + f"-nfe{args.nfe}"
    tag += "" if args.init == "dpm-solver++(2m)" else "-init-" + "".join(c if c.isalnum() else "_" for c in args.init)
    cache = Path(args.cache or f".bench/fit-defaults/{tag}")
    if args.cache is None and cache.exists():
        shutil.rmtree(cache)  # a fresh cache: the ground truth counts
    os.environ["FLOWSOLVE_CACHE"] = str(cache)
    output = cache / "solver.pt"
    command = ["fit", args.model, "--nfe", str(args.nfe), "--family", "non-stationary", "--init", args.init,
               "-o", str(output)] + ([] if args.guidance is None else ["--guidance", str(args.guidance)])
    print("flowsolve " + " ".join(command), flush=True)
    began = time.perf_counter()
    cli_main(command)
    seconds = time.perf_counter() - began

    solver = flowsolve.load(output)
    meta = solver.metadata
    history = meta["history"]
    start, best = history[0]["val_rmse"], meta["validation"]["rmse"]
    fit = meta["fit"]
    report = {
        "command": "flowsolve " + " ".join(command), "wall_seconds": seconds,
        "ground_truth_seconds": meta["timing"]["ground_truth_seconds"], "fit_seconds": meta["timing"]["fit_seconds"],
        "plan": {k: fit[k] for k in ("train_trajectories", "val_trajectories", "iterations", "batch_size",
                                      "validate_every")} | {"stopped_at": meta["stopped_at"]},
        "measured": meta.get("plan", {}), "val_start": start, "val_best": best, "val_ratio": start / best,
    }
    if args.test_store:
        u = zoo.load_model(args.model, guidance=args.guidance or 0.0)
        manifest = json.loads((Path(args.test_store) / "manifest.json").read_text())
        store = flowsolve.GroundTruthStore(args.test_store, u, seed=manifest["seed"], rtol=manifest["rtol"],
                                           atol=manifest["atol"], shard_size=manifest["shard_size"])
        test = store.load(128, progress=False)
        starts = meta.get("starts")  # several --init: the fit began from the best on validation
        chosen = args.init if starts is None else min(starts, key=starts.get)
        report["start"] = chosen
        start_solver = flowsolve.NonStationary().at(args.nfe, init=chosen, model=u)
        with torch.no_grad():
            field = test.field(u)
            report["test_start"], report["test_fitted"] = (
                float(per_sample_rms(s.sample(field, test.x0) - test.x1).mean()) for s in (start_solver, solver))
        report["test_ratio"] = report["test_start"] / report["test_fitted"]
    print(json.dumps(report, indent=1))
    (cache / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
