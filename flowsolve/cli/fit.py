"""``flowsolve fit``: fit a bespoke solver to a model and write it to a solver file."""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

from flowsolve.cli.cache import checkpoint_path, trajectory_store
from flowsolve.cli.errors import CommandLineError
from flowsolve.cli.model_loading import load_model
from flowsolve.cli.options import (
    DEFAULT_DTYPE,
    ModelOptions,
    add_model_arguments,
    positive_float,
    positive_int,
)

# Options handed to ParametricFamily.fit only when given, so that fit's own defaults apply otherwise.
FIT_OPTIONS = ("iterations", "batch_size", "lr", "train_trajectories", "val_trajectories")
# An image U-Net on a laptop CPU gets a fit that improves on its start in this time.
DEFAULT_MINUTES = 15.0


def _minutes(text: str) -> float | None:
    """``--minutes``: a positive number, or ``none`` for no budget."""
    return None if text.strip().lower() == "none" else positive_float(text)


def add_parser(commands) -> None:
    """Add the ``fit`` command to the sub-command parsers ``commands``."""
    parser = commands.add_parser("fit", help="fit a bespoke solver to a model")
    add_model_arguments(parser)
    parser.add_argument("--nfe", type=positive_int, required=True, help="evaluation budget of the solver")
    parser.add_argument("--base", default="midpoint", help="base solver name (default midpoint)")
    parser.add_argument("--transform", help="transform name (default scale-time)")
    parser.add_argument("--family", help="a registered solver family instead of transform x base (e.g. non-stationary)")
    parser.add_argument("--loss", help="loss name, see `flowsolve plugins` (default: fit's choice for the family)")
    parser.add_argument("--init", help="start from: a solver file, a schedule (log-snr, edm, cosine, uniform; "
                                       "+ddim adds DDIM's scale, e.g. log-snr+ddim) or, for non-stationary, a "
                                       "baseline / base-solver name (e.g. dpm-solver++(2m)); several, "
                                       "comma-separated, to start from the best on the validation paths")
    parser.add_argument("--iterations", type=positive_int, help="Adam steps (default: flowsolve.fit's)")
    parser.add_argument("--batch-size", type=positive_int, help="paths per Adam step (default: flowsolve.fit's)")
    parser.add_argument("--lr", type=positive_float, help="Adam's step size (default: the family's)")
    parser.add_argument("--train-trajectories", type=positive_int,
                        help="ground-truth paths to train on (default: flowsolve.fit's)")
    parser.add_argument("--val-trajectories", type=positive_int,
                        help="ground-truth paths to validate on (default: flowsolve.fit's)")
    parser.add_argument("--minutes", type=_minutes, default=DEFAULT_MINUTES,
                        help=f"wall-time budget of the whole command (default {DEFAULT_MINUTES:g}): path counts, "
                             "batch and steps not given are sized from the model's measured cost to fit in it, and "
                             "training stops there (validated and checkpointed; rerun to continue); 'none' for "
                             "fit's full sizes and no limit")
    parser.add_argument("--autocast", choices=("bfloat16", "float16"),
                        help="run the network of the training rollouts under torch.autocast in this dtype "
                             "(GPUs with low-precision units; the ground truth stays in --dtype)")
    parser.add_argument("-o", "--output", default="solver.pt", help="solver file to write (default solver.pt)")
    parser.add_argument("--checkpoint", type=Path,
                        help="progress file (default: in the cache, one per model and settings)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Fit, write ``--output`` and print the validation score (under torchrun: rank 0 only)."""
    import torch

    from flowsolve.plugins.registry import lookup
    from flowsolve.training.distributed import current

    torch.set_num_threads(args.threads)
    options = ModelOptions.from_args(args)
    model = load_model(options)
    store = trajectory_store(model, 0, options)
    family = _family(args)
    fit_options = {name: getattr(args, name) for name in FIT_OPTIONS if getattr(args, name) is not None}
    if args.loss is not None:
        fit_options["loss"] = lookup("loss", args.loss)()
    # One checkpoint per model and settings: rerunning an interrupted command resumes it.
    checkpoint = args.checkpoint or checkpoint_path(_run_name(store, family, args))
    started = time.perf_counter()
    solver = family.fit(model, nfe=args.nfe, store=store, progress=not args.quiet, checkpoint=checkpoint,
                        init=_init(args.init), device=store.device, dtype=store.dtype, max_minutes=args.minutes,
                        autocast=None if args.autocast is None else getattr(torch, args.autocast), **fit_options)
    if not current().is_main:  # under torchrun, rank 0 writes the file and reports
        return 0
    solver.save(args.output)
    best = solver.metadata["validation"]
    print(f"fitted {family.label} at NFE {args.nfe} to {args.model} in {time.perf_counter() - started:.1f}s: "
          f"validation RMSE {best['rmse']:.5f}, PSNR {best['psnr']:.2f} dB -> {args.output}")
    return 0


def _family(args: argparse.Namespace):
    """``--family``, or ``--transform`` x ``--base``."""
    from flowsolve.plugins.registry import base_solver, lookup
    from flowsolve.solvers.family import compose

    if args.family is not None:
        if args.transform is not None:
            raise CommandLineError(
                f"--transform belongs to transform x base families; the {args.family} family has none"
            )
        return lookup("solver family", args.family)(base=base_solver(args.base))
    return compose(lookup("transform", args.transform or "scale-time")(), base_solver(args.base))


def _init(spec: str | None):
    """``--init``: a solver file, or a name (schedule, baseline, base solver) the family resolves;
    several, comma-separated, to start from the best of them on the validation paths."""
    from flowsolve.persistence import load

    if spec is None:
        return None
    starts = [load(part) if Path(part).exists() else part for part in _init_parts(spec)]
    return starts[0] if len(starts) == 1 else starts


def _init_parts(spec: str) -> list[str]:
    """The comma-separated parts of ``--init`` (a file whose name has a comma stays whole)."""
    return [spec] if Path(spec).exists() else [part.strip() for part in spec.split(",") if part.strip()]


def _run_name(store, family, args: argparse.Namespace) -> str:
    """The checkpoint's name: the model, family and NFE, and every setting the user gave.

    A setting left to fit's default is left out of the name, so fit's defaults live in fit alone.
    """
    given = [("loss", args.loss)] + [(name, getattr(args, name)) for name in FIT_OPTIONS]
    settings = "".join(f"-{name.replace('_', '-')}-{value}" for name, value in given if value is not None)
    init = "" if args.init is None else "-init-" + _init_key(args.init)
    precision = "" if args.dtype in (None, DEFAULT_DTYPE) else f"-{args.dtype}"
    precision += "" if args.autocast is None else f"-autocast-{args.autocast}"
    return f"{store.key['model']}-{family.label.replace(' ', '-')}-nfe{args.nfe}{settings}{init}{precision}"


def _init_key(spec: str) -> str:
    """A file-name-safe key of ``--init``: the names, or solver files' content hashes."""
    keys = []
    for part in _init_parts(spec):
        path = Path(part)
        if path.exists():
            keys.append("file-" + hashlib.sha256(path.read_bytes()).hexdigest()[:16])
        else:
            keys.append("".join(c if c.isalnum() or c in "+-." else "_" for c in part))
    return "+or+".join(keys)
