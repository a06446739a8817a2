"""``flowsolve demo``: fit bespoke solvers to a bundled model and compare them with the baselines."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import cast

import attrs

from flowsolve.cli.cache import cache_directory, trajectory_store
from flowsolve.cli.evaluate import quality_for, quality_note
from flowsolve.cli.model_loading import model_key, resolve_model, sample_shape_of
from flowsolve.cli.options import ModelOptions, nfe_list, positive_int

# The first one registered is the default model.
DEMO_MODELS = ("animals-fm-ot", "digits-fm-ot", "gmm-fm-ot")
BASELINE_NFES = [4, 6, 8, 10, 12, 16]
DEFAULT_GUIDANCE = 2.0  # of a class-conditional model, when --guidance is not given


@attrs.frozen
class DemoSettings:
    """How much work the demo does for one kind of model.

    Attributes:
        test: held-out test paths.
        train, val: the fits' training and validation paths (``None``: fit's defaults).
        iterations, batch_size, lr: the fits' Adam loop (``None``: fit's defaults).
        transforms: names of the transforms fitted (composed with the midpoint method).
        tolerance: dopri5 ``rtol = atol`` of the ground truth and its stores' shard size
            (``None``: the library's tolerances in ``flowsolve.cli.cache.trajectory_store``'s stores).
        shard_size: paths per store shard (paths solved together) with ``tolerance``.
    """

    test: int
    train: int | None = None
    val: int | None = None
    iterations: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    transforms: tuple[str, ...] = ("time-only", "scale-time")
    tolerance: float | None = None
    shard_size: int = 256


# Small models (the digits MLP, the analytic mixture): fit's own defaults, a large test set.
SMALL_MODEL = DemoSettings(test=1024)
# A guided conditional U-Net costs ~18 ms per evaluation and sample on one CPU thread and dopri5
# spends ~140 evaluations per path (at rtol = atol = 1e-4): sized so that the whole demo (ground
# truth, every registered baseline at 6 NFEs, two fits) takes under 5 minutes of one core (baselines
# ~45%, ground truth ~30%, fits ~20%); its numbers are rough (FD of 8 samples!): raise --test,
# --train, --val, --iterations for real ones. The fits keep fit's learning rate: larger ones overfit
# these few paths (lower validation, higher test RMSE).
CONDITIONAL_UNET = DemoSettings(test=8, train=16, val=8, iterations=10, batch_size=4, transforms=("scale-time",),
                                tolerance=1e-4, shard_size=8)


def add_parser(commands) -> None:
    """Add the ``demo`` command to the sub-command parsers ``commands``."""
    parser = commands.add_parser("demo", help="fit bespoke solvers to a bundled model and compare with baselines")
    parser.add_argument("--model", help=f"registered model (default: the first registered of {', '.join(DEMO_MODELS)})")
    parser.add_argument("--guidance", type=float, metavar="W",
                        help=f"classifier-free guidance weight of a class-conditional model (default {DEFAULT_GUIDANCE:g})")
    parser.add_argument("--nfe", type=nfe_list, default=[8, 10], help="NFEs to fit (default 8,10)")
    parser.add_argument("--baseline-nfe", type=nfe_list, default=BASELINE_NFES,
                        help=f"NFEs of the baselines (default {','.join(map(str, BASELINE_NFES))}; the fitted NFEs are added)")
    parser.add_argument("--iterations", type=positive_int,
                        help=f"Adam steps per fit (default: {CONDITIONAL_UNET.iterations} for a conditional U-Net, "
                             "else flowsolve.fit's)")
    parser.add_argument("--test", type=positive_int,
                        help=f"held-out test paths (default {CONDITIONAL_UNET.test} for a conditional U-Net, "
                             f"else {SMALL_MODEL.test})")
    parser.add_argument("--train", type=positive_int,
                        help=f"training paths per fit (default {CONDITIONAL_UNET.train} for a conditional U-Net, "
                             "else flowsolve.fit's)")
    parser.add_argument("--val", type=positive_int,
                        help=f"validation paths per fit (default {CONDITIONAL_UNET.val} for a conditional U-Net, "
                             "else flowsolve.fit's)")
    parser.add_argument("--out", default="flowsolve-demo", help="output directory (default flowsolve-demo)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def default_model() -> str:
    """The first of :data:`DEMO_MODELS` that is registered."""
    from flowsolve.plugins.registry import registry

    registered = registry().models()
    return next((name for name in DEMO_MODELS if name in registered), DEMO_MODELS[-1])


def load_demo_model(name: str, guidance: float | None):
    """Model ``name`` and its guidance weight: ``guidance`` when given, :data:`DEFAULT_GUIDANCE` for a
    registered class-conditional model, else ``None`` (a ``module:object`` model is taken as it is)."""
    from flowsolve.models.conditioning import distribution_of

    if guidance is not None:
        return resolve_model(name, guidance=guidance), guidance
    model = resolve_model(name)
    if ":" in name or distribution_of(model) is None:
        return model, None
    return resolve_model(name, guidance=DEFAULT_GUIDANCE), DEFAULT_GUIDANCE


def settings_for(model, args: argparse.Namespace) -> DemoSettings:
    """The demo's settings for ``model`` (a conditional U-Net or a small model), with the options given."""
    from flowsolve.models.conditioning import distribution_of

    base = CONDITIONAL_UNET if distribution_of(model) is not None else SMALL_MODEL
    given = {name: getattr(args, name) for name in ("test", "train", "val", "iterations")}
    return attrs.evolve(base, **{name: value for name, value in given.items() if value is not None})


def demo_store(model, seed: int, settings: DemoSettings):
    """The cached ground truth of ``model`` with noise ``seed`` (0: fits, 1: test), at the settings' tolerance.

    The library's tolerances use :func:`~flowsolve.cli.cache.trajectory_store`'s store; others get a
    store of their own, next to it, named after the tolerance and shard size.
    """
    from flowsolve.training.store import GroundTruthStore

    if settings.tolerance is None:
        return trajectory_store(model, seed)
    options = ModelOptions()
    name = f"{model_key(model, options)}-seed{seed}-tol{settings.tolerance:g}-shard{settings.shard_size}"
    return GroundTruthStore(cache_directory() / "stores" / name, model, sample_shape=sample_shape_of(model, options),
                            seed=seed, rtol=settings.tolerance, atol=settings.tolerance,
                            shard_size=settings.shard_size)


def _transform(name: str):
    from flowsolve.solvers.transforms import ScaleTime, TimeOnly

    return {"scale-time": ScaleTime(), "time-only": TimeOnly()}[name]


def _label(transform: str) -> str:
    # The time-only solver is the paper's ablation: a learned time grid without scaling.
    return "bespoke scale-time midpoint" if transform == "scale-time" else f"learned {transform} midpoint"


def run(args: argparse.Namespace) -> int:
    """Fit midpoint solvers at each NFE, then print and write the comparison with every baseline."""
    import torch

    from flowsolve.methods.runge_kutta import Midpoint
    from flowsolve.solvers.family import compose
    from flowsolve.training.evaluation import (
        class_grid,
        compare,
        image_grid,
        save_rows,
        table,
    )
    from flowsolve.training.losses import RMSE

    began, cpu = time.perf_counter(), time.process_time()
    torch.set_num_threads(args.threads)
    name = args.model or default_model()
    model, guidance = load_demo_model(name, args.guidance)
    settings = settings_for(model, args)
    described = name if guidance is None else f"{name}, guidance {guidance:g}"
    quality = quality_for(name)
    out, stem = Path(args.out), name.replace(":", "_")
    started = time.perf_counter()
    reference = demo_store(model, 1, settings).load(settings.test, progress=not args.quiet)
    print(f"{described}: ground truth for {settings.test} test paths in {time.perf_counter() - started:.1f}s "
          f"(dopri5, {reference.evaluations:.0f} evaluations per path)", flush=True)
    # The demo's fits are small, so the direct RMSE loss (lowest RMSE, memory growing with n) is
    # affordable; `flowsolve fit` defaults to the paper's memory-flat RMSE-Bound.
    fit_options = {key: value for key, value in (
        ("iterations", settings.iterations), ("batch_size", settings.batch_size), ("lr", settings.lr),
        ("train_trajectories", settings.train), ("val_trajectories", settings.val)) if value is not None}
    if settings.iterations is not None:
        fit_options["validate_every"] = max(settings.iterations // 2, 1)
    solvers = []
    for transform in settings.transforms:
        for nfe in args.nfe:
            started = time.perf_counter()
            solver = compose(_transform(transform), Midpoint()).fit(
                model, nfe=nfe, loss=RMSE(), store=demo_store(model, 0, settings), progress=not args.quiet,
                **fit_options,
            )
            solver.save(out / f"{transform}-{stem}-nfe{nfe}.pt")
            history = solver.metadata["history"]
            print(f"fitted {transform} midpoint at NFE {nfe} in {time.perf_counter() - started:.1f}s "
                  f"(validation RMSE {history[0]['val_rmse']:.4f} -> {solver.metadata['validation']['rmse']:.4f})",
                  flush=True)
            solvers.append((_label(transform), solver))
    bespoke = solvers[-1][1]  # the last transform at the last --nfe: the NFE of the sample grids
    nfes = sorted(set(args.baseline_nfe) | set(args.nfe))
    started = time.perf_counter()
    rows = compare(model, reference, nfes, solvers, quality=quality)
    print(f"compared {len({r['method'] for r in rows})} methods at NFE {','.join(map(str, nfes))} "
          f"in {time.perf_counter() - started:.1f}s")
    metrics = "RMSE / PSNR (dB)" + (" / FD-classifier / class accuracy" if quality is not None else "")
    print(f"\n{metrics} against dopri5 ground truth on {settings.test} held-out paths:\n" + table(rows, nfes))
    if quality is not None:
        print(quality_note(quality, settings.test))
    paths = save_rows(rows, nfes, out, f"demo-{stem}", f"{described}, {settings.test} test paths")
    with torch.no_grad():
        nfe = args.nfe[-1]
        field = reference.field(model)
        midpoint = Midpoint().sample(field, reference.x0, nfe)
        learned = cast(torch.Tensor, bespoke.sample(field, reference.x0))
    grids = [out / f"demo-{stem}-samples.png"]
    image_grid([("ground truth (dopri5)", reference.x1[:64]), (f"midpoint, {nfe} NFE", midpoint[:64]),
                (f"bespoke, {nfe} NFE", learned[:64])], grids[0])
    labels = None if reference.conditions is None else reference.conditions.get("labels")
    if labels is not None:
        grids.append(out / f"demo-{stem}-classes.png")
        classes = getattr(getattr(model, "condition_distribution", None), "classes", None)
        per_class = min(8, int(labels.bincount().max()))  # no empty columns when the test set is small
        class_grid([("ground truth (dopri5)", reference.x1), (f"bespoke, {nfe} NFE", learned)], labels, grids[-1],
                   per_class=per_class, classes=classes)
    print("wrote " + ", ".join(str(p) for p in paths + grids))
    # CPU seconds: about what the run takes on an otherwise idle machine (one thread).
    print(f"demo finished in {time.perf_counter() - began:.1f}s ({time.process_time() - cpu:.1f}s of CPU)")
    return 0

