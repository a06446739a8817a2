"""``flowsolve eval``: compare fitted solvers with the training-free baselines against ground truth."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flowsolve.cli.cache import trajectory_store
from flowsolve.cli.model_loading import check_solver_fits_model, load_model
from flowsolve.cli.options import (
    ModelOptions,
    add_model_arguments,
    nfe_list,
    positive_int,
)

DEFAULT_NFES = [4, 6, 8, 10, 16, 20]
QUALITY_MODEL_PREFIX = "animals-"  # registered models whose samples the FD-classifier scores


def add_parser(commands) -> None:
    """Add the ``eval`` command to the sub-command parsers ``commands``."""
    parser = commands.add_parser("eval", help="compare solvers with the baselines against ground truth")
    add_model_arguments(parser)
    parser.add_argument("solvers", nargs="*", help="solver files to include")
    parser.add_argument("--nfe", type=nfe_list, default=DEFAULT_NFES,
                        help=f"comma-separated NFEs (default {','.join(map(str, DEFAULT_NFES))})")
    parser.add_argument("--test", type=positive_int, default=1024, help="held-out test paths (default 1024)")
    parser.add_argument("--out", default="flowsolve-eval", help="directory for the table, CSV and plot")
    parser.set_defaults(run=run)


def quality_for(spec: str):
    """The sample-quality metric of model ``spec`` (FD-classifier and class accuracy): the shipped
    animal classifier for the registered ``animals-*`` models, else ``None``. Also ``None``, with a
    note on stderr, when the metric cannot be loaded (its module or weight file missing)."""
    if ":" in spec or not spec.startswith(QUALITY_MODEL_PREFIX):
        return None
    try:
        from flowsolve.training.quality import SampleQuality

        return SampleQuality.animals()
    except (ImportError, OSError) as error:  # the metric is optional: RMSE / PSNR are reported without it
        print(f"flowsolve: no FD-classifier for {spec} ({error}); reporting RMSE / PSNR only", file=sys.stderr)
        return None


def quality_note(quality, n: int) -> str:
    """What to compare the FD-classifier of ``n`` samples with."""
    floor = getattr(quality, "data_floor_fd", lambda n: None)(n)
    note = f"FD-classifier of {n} samples is biased upwards at small n: compare rows with the ground truth's"
    return note + (f" and with real data's own FD at this n ({floor:.3g})." if floor is not None else ".")


def run(args: argparse.Namespace) -> int:
    """Print the RMSE / PSNR table (and FD-classifier / class accuracy for the animals models) and
    write it (Markdown, CSV, plot) into ``--out``."""
    import torch

    from flowsolve.persistence import load
    from flowsolve.training.evaluation import compare, save_rows, table

    torch.set_num_threads(args.threads)
    options = ModelOptions.from_args(args)
    model = load_model(options)
    solvers = []
    for path in args.solvers:  # every file is read and checked before the ground truth is solved
        solver = load(path)
        check_solver_fits_model(solver, model, path, options)
        solvers.append((f"bespoke {solver.label} ({Path(path).name})", solver))
    quality = quality_for(args.model)
    # Seed 1: noise never seen by `flowsolve fit` (seed 0).
    reference = trajectory_store(model, 1, options).load(args.test, progress=not args.quiet)
    nfes = sorted(set(args.nfe) | {s.nfe for _, s in solvers})
    rows = compare(model, reference, nfes, solvers, quality=quality)
    print(table(rows, nfes))
    if quality is not None:
        print(quality_note(quality, len(reference)))
    paths = save_rows(rows, nfes, Path(args.out), f"eval-{args.model.replace(':', '_')}", args.model)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
