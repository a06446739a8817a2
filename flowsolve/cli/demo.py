"""``flowsolve demo``: fit bespoke solvers to a bundled model and compare them with the baselines."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from flowsolve.cli.cache import trajectory_store
from flowsolve.cli.model_loading import resolve_model
from flowsolve.cli.options import nfe_list, positive_int


def add_parser(commands) -> None:
    """Add the ``demo`` command to the sub-command parsers ``commands``."""
    parser = commands.add_parser("demo", help="fit bespoke solvers to a bundled model and compare with baselines")
    parser.add_argument("--model", help="registered model (default digits-fm-ot, else gmm-fm-ot)")
    parser.add_argument("--nfe", type=nfe_list, default=[8, 10], help="NFEs to fit (default 8,10)")
    parser.add_argument("--iterations", type=positive_int, help="Adam steps per fit (default: flowsolve.fit's)")
    parser.add_argument("--test", type=positive_int, default=1024, help="held-out test paths (default 1024)")
    parser.add_argument("--out", default="flowsolve-demo", help="output directory (default flowsolve-demo)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Fit scale-time and time-only midpoint solvers at each NFE, then print and write the comparison."""
    import torch

    from flowsolve.methods.runge_kutta import Midpoint
    from flowsolve.plugins.registry import registry
    from flowsolve.solvers.family import compose
    from flowsolve.solvers.transforms import ScaleTime, TimeOnly
    from flowsolve.training.evaluation import compare, image_grid, save_rows, table
    from flowsolve.training.losses import RMSE

    torch.set_num_threads(args.threads)
    name = args.model or ("digits-fm-ot" if "digits-fm-ot" in registry().models() else "gmm-fm-ot")
    model = resolve_model(name)
    out = Path(args.out)
    started = time.perf_counter()
    reference = trajectory_store(model, 1).load(args.test, progress=not args.quiet)
    print(f"{name}: ground truth for {args.test} test paths in {time.perf_counter() - started:.1f}s")
    # The demo's models are small, so the direct RMSE loss (lowest RMSE, memory growing with n)
    # is affordable; `flowsolve fit` defaults to the paper's memory-flat RMSE-Bound.
    fit_options = {} if args.iterations is None else {"iterations": args.iterations}
    solvers = []
    # The time-only solver is the paper's ablation: a learned time grid without scaling.
    for transform in (TimeOnly(), ScaleTime()):
        for nfe in args.nfe:
            started = time.perf_counter()
            solver = compose(transform, Midpoint()).fit(
                model, nfe=nfe, loss=RMSE(), store=trajectory_store(model, 0), progress=not args.quiet,
                **fit_options,
            )
            solver.save(out / f"{transform.name}-{name}-nfe{nfe}.pt")
            print(f"fitted {transform.name} midpoint at NFE {nfe} in {time.perf_counter() - started:.1f}s")
            label = "bespoke scale-time midpoint" if transform.name == "scale-time" else "learned time-only midpoint"
            solvers.append((label, solver))
    bespoke = solvers[-1][1]  # scale-time at the last --nfe, the NFE of the sample grid
    rows = compare(model, reference, args.nfe, solvers)
    print("\nRMSE / PSNR (dB) against dopri5 ground truth on held-out noise:\n" + table(rows, args.nfe))
    paths = save_rows(rows, args.nfe, out, f"demo-{name}", name)
    with torch.no_grad():
        x0, truth = reference.x0[:64], reference.x1[:64]
        nfe = args.nfe[-1]
        grid = [("ground truth (dopri5)", truth), (f"midpoint, {nfe} NFE", Midpoint().sample(model, x0, nfe)),
                (f"bespoke, {nfe} NFE", bespoke.sample(model, x0))]
    image_grid(grid, out / f"demo-{name}-samples.png")
    print("wrote " + ", ".join(str(p) for p in paths + [out / f"demo-{name}-samples.png"]))
    return 0
