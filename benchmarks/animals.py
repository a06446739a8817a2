"""Learned solvers against the strongest free solvers on the bundled animal U-Nets.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/animals.py --model animals-fm-ot --guidance 2 --nfe 8 10 \\
        [--train 128 --val 32 --test 128 --iterations 250 --batch 4 --rtol 1e-4] [--out .bench/animals]

For one model and guidance weight ``w`` (labels drawn uniformly, one per path):

1. ground truth (dopri5) for the fit's validation + training paths (noise seed 0) and for the
   held-out test paths (noise seed 1), kept in on-disk stores (an interrupted run resumes);
2. every registered baseline at every NFE on the test paths, with RMSE/PSNR and, when the
   quality metric is installed, FD-classifier and class accuracy (and the same for the
   ground truth itself);
3. per NFE, a non-stationary solver fitted with ``fit``'s defaults except the budget options
   given here, started from the best of DPM-Solver++(2M/3M), UniPC, iPNDM, Midpoint and Heun
   *on the validation paths* (checkpointed: a rerun continues), scored on the test paths;
4. a summary: per NFE the learned solver's RMSE against the best of DPM-Solver++(2M)/(3M),
   UniPC and iPNDM (each on its best grid, chosen on the test paths, which favours the
   baselines) and against the best of every baseline, the ratios, and per-class RMSE.

Everything is cached under ``--out`` (JSON rows, solver files); rerunning prints the tables.
Timings are wall seconds on this machine with one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import flowsolve  # noqa: E402
from flowsolve import zoo  # noqa: E402
from flowsolve.plugins.registry import registry  # noqa: E402
from flowsolve.training.evaluation import BEST_GRID_FAMILIES, _best_grid_rows, compare, save_rows, table  # noqa: E402
from flowsolve.training.metrics import per_sample_rms  # noqa: E402

STRONG_BASELINES = ("dpm-solver++(2m)", "dpm-solver++(3m)", "unipc-bh2", "ipndm")
STARTS_ALSO = ("midpoint", "heun")


def quality_metric():
    try:
        from flowsolve.training.quality import SampleQuality
        return SampleQuality.animals()
    except Exception as error:  # the metric is optional here: RMSE alone still answers the question
        print(f"(no FD-classifier: {error})", file=sys.stderr)
        return None


def strong(method: str) -> bool:
    return any(method == name or method.startswith(name + " ") for name in STRONG_BASELINES)


def cached(path: Path, compute):
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    tmp.replace(path)
    return value


def best_starts_on(u, paths, nfe: int, count: int) -> list[str]:
    """The ``count`` starts (strong baselines, or Midpoint / Heun on a uniform grid, which win on
    flow-matching models) with the lowest RMSE on ``paths`` at ``nfe``: a validation choice."""
    candidates = {k: v for k, v in registry().baselines().items() if strong(k) or k in STARTS_ALSO}
    rows = [r for r in compare(u, paths, [nfe], baselines=candidates) if not r["method"].endswith(" best grid")]
    return [r["method"] for r in sorted(rows, key=lambda r: r["rmse"])[:count]]


def safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "+-." else "_" for c in name)


def per_class_rmse(solver, u, paths) -> dict[int, float]:
    with torch.no_grad():
        errors = per_sample_rms(solver.sample(paths.field(u), paths.x0) - paths.x1)
    labels = paths.conditions["labels"]
    return {int(k): float(errors[labels == k].mean()) for k in labels.unique()}


def baselines_at(u, test, nfes: list[int], quality, path: Path) -> list[dict]:
    """Every registered baseline at every NFE in ``nfes`` (plus their best-grid rows), cached in
    ``path``; a rerun computes only the (baseline, NFE) pairs the cache lacks."""
    rows = json.loads(path.read_text()) if path.exists() else []
    rows = [r for r in rows if not r["method"].endswith(" best grid")]
    done = {(r["method"], r["budget"]) for r in rows}
    registered = registry().baselines()
    for nfe in nfes:
        missing = {k: v for k, v in registered.items() if (k, nfe) not in done}
        if missing:
            wants_truth = quality is not None and ("ground truth", None) not in done
            new = compare(u, test, [nfe], baselines=missing, quality=quality)
            rows += [r for r in new if not r["method"].endswith(" best grid")
                     and (r["method"] != "ground truth" or wants_truth)]
            done = {(r["method"], r["budget"]) for r in rows}
    rows += [r for family in BEST_GRID_FAMILIES for r in _best_grid_rows(rows, family)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1))
    tmp.replace(path)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="animals-fm-ot", choices=zoo.CONDITIONAL_MODEL_NAMES)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--nfe", type=int, nargs="*", default=[8, 10], help="NFEs to fit (none: baselines only)")
    parser.add_argument("--baseline-nfe", type=int, nargs="+", default=[4, 6, 8, 10, 12, 16])
    parser.add_argument("--train", type=int, default=128)
    parser.add_argument("--val", type=int, default=32)
    parser.add_argument("--test", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=250)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--validate-every", type=int, default=25)
    parser.add_argument("--starts", type=int, default=1,
                        help="fit from this many of the best starts and keep the best on validation")
    parser.add_argument("--lr", type=float, default=None, help="default: fit's")
    parser.add_argument("--rtol", type=float, default=1e-4, help="dopri5 rtol = atol of the ground truth")
    parser.add_argument("--shard", type=int, default=32)
    parser.add_argument("--out", default=".bench/animals")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    tag = f"{args.model}-w{args.guidance:g}"
    out = Path(args.out) / tag
    u = zoo.load_model(args.model, guidance=args.guidance)
    stores = Path(args.out) / "stores" / f"{tag}-rtol{args.rtol:g}"
    gt_options = dict(rtol=args.rtol, atol=args.rtol, shard_size=args.shard)
    fit_store = flowsolve.GroundTruthStore(stores / "fit", u, seed=0, **gt_options)
    test_store = flowsolve.GroundTruthStore(stores / "test", u, seed=1, **gt_options)
    started = time.perf_counter()
    validation = fit_store.load(args.val, progress=True)
    fit_store.load(args.train, start=args.val, progress=True)
    test = test_store.load(args.test, progress=True)
    print(f"{tag}: ground truth ready ({time.perf_counter() - started:.0f}s this run; dopri5 "
          f"{test.evaluations:.0f} evaluations per path)", flush=True)

    quality = quality_metric()
    baseline_rows = baselines_at(u, test, sorted(set(args.baseline_nfe) | set(args.nfe)), quality,
                                 out / f"baselines-test{args.test}.json")
    learned_rows = []
    for nfe in args.nfe:
        def fit_and_score(nfe=nfe):
            options = dict(iterations=args.iterations, batch_size=args.batch, validate_every=args.validate_every,
                           train_trajectories=args.train, val_trajectories=args.val, store=fit_store, progress=True)
            if args.lr is not None:
                options["lr"] = args.lr
            began = time.perf_counter()
            fitted = []
            for rank, start in enumerate(best_starts_on(u, validation, nfe, args.starts)):
                name = f"non-stationary-nfe{nfe}" + ("" if rank == 0 else f"-{safe(start)}")  # the first keeps its old name
                fitted.append(flowsolve.NonStationary().fit(u, nfe=nfe, init=start, checkpoint=out / f"{name}.ckpt",
                                                            **options))
                fitted[-1].save(out / f"{name}.pt")
            solver = min(fitted, key=lambda s: s.metadata["validation"]["rmse"])
            init = solver.metadata["fit"]["init"]
            seconds = time.perf_counter() - began
            [row] = [r for r in compare(u, test, [], solvers=[("bespoke non-stationary", solver)], baselines={},
                                        quality=quality) if r["method"] != "ground truth"]
            history = solver.metadata["history"]
            return {**row, "init": init, "starts": args.starts, "fit_seconds": seconds, "val_start": history[0]["val_rmse"],
                    "val_best": solver.metadata["validation"]["rmse"], "per_class_rmse": per_class_rmse(solver, u, test)}
        starts = "" if args.starts == 1 else f"-starts{args.starts}"
        learned_rows.append(cached(out / f"non-stationary-nfe{nfe}{starts}-test{args.test}.json", fit_and_score))

    rows = baseline_rows + [{k: v for k, v in r.items() if k in ("method", "budget", "nfe", "rmse", "psnr", "fd",
                                                                   "accuracy")} for r in learned_rows]
    nfes = sorted(set(args.baseline_nfe) | set(args.nfe))
    print(f"\n{tag}: RMSE / PSNR on {args.test} held-out paths\n" + table(rows, nfes))
    save_rows(rows, nfes, out, f"{tag}", f"{args.model}, guidance {args.guidance:g}")
    print(f"\n{tag}: learned vs the best of {', '.join(STRONG_BASELINES)} (any grid)")
    for learned in learned_rows:
        nfe = learned["budget"]
        at_nfe = [r for r in baseline_rows if r["budget"] == nfe and r["nfe"] <= nfe]
        best = min((r for r in at_nfe if strong(r["method"])), key=lambda r: r["rmse"])
        best_any = min(at_nfe, key=lambda r: r["rmse"])
        extra = "".join(f", {k} {learned[k]:.3g} vs {best_any[k]:.3g}" for k in ("fd", "accuracy") if k in learned)
        print(f"  NFE {nfe}: {learned['rmse']:.4f} vs {best['method']} {best['rmse']:.4f} -> "
              f"{best['rmse'] / learned['rmse']:.2f}x; vs best of all {best_any['method']} {best_any['rmse']:.4f} -> "
              f"{best_any['rmse'] / learned['rmse']:.2f}x{extra}; start {learned['init']}, validation "
              f"{learned['val_start']:.4f} -> {learned['val_best']:.4f}, fit {learned['fit_seconds']:.0f}s")
    truth = [r for r in baseline_rows if r["method"] == "ground truth"]
    if truth:
        print(f"  ground truth: FD {truth[0].get('fd', float('nan')):.3g}, accuracy {truth[0].get('accuracy', float('nan')):.3f}")


if __name__ == "__main__":
    main()
