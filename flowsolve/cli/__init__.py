"""The ``flowsolve`` command line: fit, sample, eval, demo, plugins, conformance."""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time
from pathlib import Path

DEFAULT_NFES = [4, 6, 8, 10, 16, 20]
DTYPES = ("float32", "float64", "float16", "bfloat16")


def _nfe_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 4,8,10, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"NFEs must be positive integers, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse prefixes the option's name to the message)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (``inf`` and ``nan`` parse as floats, so are checked here)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive finite number such as 2e-3, got {text!r}")
    return value


def _sample_shape(text: str) -> tuple[int, ...]:
    """argparse type: ``3,32,32`` -> ``(3, 32, 32)``."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"expected the shape of one sample as positive integers separated by commas, e.g. 3,32,32 or 64; "
            f"got {text!r}"
        )
    return shape


def _device(text: str) -> str:
    """argparse type: a device string torch understands (checked now, not after the ground truth)."""
    import torch

    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu, cuda or cuda:1, got {text!r}") from None
    return text


def _dtype(args):
    """The ``--dtype`` as a torch dtype (default float32)."""
    import torch

    return getattr(torch, getattr(args, "dtype", None) or "float32")


def cache_directory() -> Path:
    return Path(os.environ.get("FLOWSOLVE_CACHE", Path.home() / ".cache" / "flowsolve"))


def resolve_model(spec: str, kind: str | None = None):
    """A registered model name, or ``module:object`` (adapted with ``kind`` when given)."""
    from flowsolve.models.adapters import adapt
    from flowsolve.plugins.registry import model

    if ":" not in spec:
        if kind is not None:
            raise ValueError(f"--kind applies to module:object models; {spec!r} is a registered name")
        return model(spec)
    module_name, _, attribute = spec.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import {spec!r}: {error}") from error
    if isinstance(target, type):
        target = target()
    return adapt(target, kind) if kind else target


def _load_model(args):
    """The model of ``args``, moved to ``--device`` / ``--dtype`` when it is a ``torch.nn.Module``
    (other callables get inputs on that device and dtype and must follow them)."""
    import torch

    model = resolve_model(args.model, args.kind)
    if isinstance(model, torch.nn.Module) and (args.device is not None or args.dtype is not None):
        model.to(device=args.device, dtype=None if args.dtype is None else _dtype(args))
    return model


def _sample_shape_of(model, args) -> tuple[int, ...]:
    shape = getattr(args, "sample_shape", None) or getattr(model, "sample_shape", None)
    if shape is None:
        raise ValueError(
            f"the model {getattr(args, 'model', '')!r} has no sample_shape attribute, so flowsolve does not know "
            "what noise to draw; pass --sample-shape (e.g. --sample-shape 3,32,32 for 3x32x32 images) "
            "or set model.sample_shape"
        )
    return tuple(shape)


def _model_key(model, args) -> str:
    """The model's fingerprint at the shape, dtype and device of ``args`` (what stores and solver files record)."""
    import torch

    from flowsolve.core.fingerprint import model_fingerprint

    return model_fingerprint(model, _sample_shape_of(model, args), _dtype(args),
                             torch.device(getattr(args, "device", None) or "cpu"))


def _store_for(model, seed: int, args=None):
    from flowsolve.training.store import TrajectoryStore

    dtype = _dtype(args)
    shape, device = _sample_shape_of(model, args), getattr(args, "device", None) or "cpu"
    # float32 stores keep their old directory names; other dtypes get their own directory.
    precision = "" if dtype == _dtype(None) else "-" + str(dtype).replace("torch.", "")
    directory = cache_directory() / "stores" / f"{_model_key(model, args)}{precision}-seed{seed}"
    return TrajectoryStore(directory, model, sample_shape=shape, dtype=dtype, device=device, seed=seed)


def _check_solver_model(solver, model, path, args) -> None:
    fitted_to = solver.metadata.get("model_fingerprint")
    key = _model_key(model, args)
    if fitted_to is not None and fitted_to != key:
        raise ValueError(
            f"{path} was fitted to model {fitted_to}, not to this model ({key}); refit it "
            "(or pass the --dtype / --sample-shape it was fitted with)"
        )


def _family(args):
    from flowsolve.plugins.registry import base_solver, lookup
    from flowsolve.solvers.family import compose

    if args.family is not None:
        if args.transform is not None:
            raise ValueError(f"--transform belongs to transform x base families; the {args.family} family has none")
        return lookup("solver family", args.family)(base=base_solver(args.base))
    return compose(lookup("transform", args.transform or "scale-time")(), base_solver(args.base))


def _loss(name: str):
    from flowsolve.plugins.registry import lookup

    return lookup("loss", name)()


def _init(spec: str | None):
    """``--init``: a solver file, or a name (schedule, baseline, base solver) the family resolves."""
    from flowsolve.persistence import load

    if spec is None or not Path(spec).exists():
        return spec
    return load(spec)


def _init_key(spec: str) -> str:
    """A file-name-safe key of ``--init``: the name, or a solver file's content hash."""
    import hashlib

    path = Path(spec)
    if path.exists():
        return "file-" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return "".join(c if c.isalnum() or c in "+-." else "_" for c in spec)


def _fit(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    model = _load_model(args)
    store = _store_for(model, 0, args)
    # One checkpoint per model and settings: rerunning an interrupted command resumes it.
    family = _family(args)
    loss_name = args.loss or ("rmse-bound" if family.has_local_steps else "rmse")  # fit's default
    init = _init(args.init)
    init_label = "" if args.init is None else "-init-" + _init_key(args.init)
    precision = "" if args.dtype in (None, "float32") else f"-{args.dtype}"
    run = (f"{store.key['model']}-{family.label.replace(' ', '-')}-{loss_name}-nfe{args.nfe}-{args.iterations}-{args.lr}-"
           f"{args.batch_size}{init_label}{precision}")
    checkpoint = args.checkpoint or cache_directory() / "checkpoints" / f"{run}.ckpt"
    started = time.perf_counter()
    solver = family.fit(
        model, nfe=args.nfe, loss=_loss(loss_name), iterations=args.iterations, lr=args.lr,
        batch_size=args.batch_size, store=store, progress=not args.quiet, checkpoint=checkpoint, init=init,
        device=store.device, dtype=store.dtype,
    )
    from flowsolve.training.distributed import current

    if not current().is_main:  # under torchrun, rank 0 writes the file and reports
        return 0
    solver.save(args.output)
    best = solver.metadata["validation"]
    print(f"fitted {family.label} at NFE {args.nfe} to {args.model} in {time.perf_counter() - started:.1f}s: "
          f"validation RMSE {best['rmse']:.5f}, PSNR {best['psnr']:.2f} dB -> {args.output}")
    return 0


def _sample(args) -> int:
    import numpy as np
    import torch

    from flowsolve.persistence import load
    from flowsolve.training.evaluation import image_grid

    output = Path(args.output)
    if output.suffix not in (".png", ".npy"):  # before any work
        raise ValueError(f"-o must end in .png or .npy, got {output}")
    torch.set_num_threads(args.threads)
    solver = load(args.solver)
    model = _load_model(args)
    _check_solver_model(solver, model, args.solver, args)
    generator = torch.Generator().manual_seed(args.seed)
    dtype = _dtype(args)
    # The noise is drawn on the CPU (the same for every device) in float32, or float64 when asked.
    noise_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    x0 = torch.randn((args.n, *_sample_shape_of(model, args)), generator=generator, dtype=noise_dtype)
    samples = solver.sample(model, x0.to(device=args.device or "cpu", dtype=dtype)).cpu()
    if output.suffix == ".npy":
        np.save(output, (samples if samples.dtype in (torch.float32, torch.float64) else samples.float()).numpy())
    else:
        image_grid([(f"{solver.nfe} NFE", samples)], output)
    print(f"{args.n} samples with {solver.nfe} NFE -> {output}")
    return 0


def _eval(args) -> int:
    import torch

    from flowsolve.persistence import load
    from flowsolve.training.evaluation import compare, save_rows, table

    torch.set_num_threads(args.threads)
    model = _load_model(args)
    solvers = []
    for path in args.solvers:  # every file is read and checked before the ground truth is solved
        solver = load(path)
        _check_solver_model(solver, model, path, args)
        solvers.append((f"bespoke {solver.label} ({Path(path).name})", solver))
    reference = _store_for(model, 1, args).load(args.test, progress=not args.quiet)  # never seen by fit (seed 0)
    nfes = sorted(set(args.nfe) | {s.nfe for _, s in solvers})
    rows = compare(model, reference, nfes, solvers)
    print(table(rows, nfes))
    paths = save_rows(rows, nfes, Path(args.out), f"eval-{args.model.replace(':', '_')}", args.model)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _demo(args) -> int:
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
    reference = _store_for(model, 1).load(args.test, progress=not args.quiet)
    print(f"{name}: ground truth for {args.test} test paths in {time.perf_counter() - started:.1f}s")
    # The demo's models are small, so the direct RMSE loss (lowest RMSE, memory growing with n)
    # is affordable; `flowsolve fit` defaults to the paper's memory-flat RMSE-Bound.
    solvers, bespoke = [], None
    # The time-only solver is the paper's ablation: a learned time grid without scaling.
    for transform in (TimeOnly(), ScaleTime()):
        for nfe in args.nfe:
            started = time.perf_counter()
            solver = compose(transform, Midpoint()).fit(
                model, nfe=nfe, loss=RMSE(), iterations=args.iterations, store=_store_for(model, 0),
                progress=not args.quiet,
            )
            solver.save(out / f"{transform.name}-{name}-nfe{nfe}.pt")
            print(f"fitted {transform.name} midpoint at NFE {nfe} in {time.perf_counter() - started:.1f}s")
            label = "bespoke scale-time midpoint" if transform.name == "scale-time" else "learned time-only midpoint"
            solvers.append((label, solver))
            bespoke = solver
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


def _plugins(args) -> int:
    from flowsolve.plugins.registry import registry

    found = registry()
    print("plugins (entry-point group 'flowsolve'):")
    for record in found.records:
        status = "disabled" if record.disabled else (f"FAILED: {record.error}" if record.error else "loaded")
        print(f"  {record.name:<20} {status:<10} {record.source}")
        for note in record.notes:  # names of this plugin ignored, refused or replacing a built-in
            print(f"  {'':<20} {note}")
    sections = (("base solvers", found.base_solvers), ("transforms", found.transforms), ("losses", found.losses),
                ("model adapters", found.adapters), ("models", found.models),
                ("solver families", lambda: {"transform x base": None, **found.solver_families()}))
    for title, provided in sections:
        print(f"{title}: {', '.join(sorted(provided()))}")
    return 1 if any(r.error for r in found.records) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowsolve", description="Bespoke solvers for flow and diffusion models.")
    parser.add_argument("--threads", type=_positive_int, default=1, help="torch CPU threads (default 1: see README)")
    commands = parser.add_subparsers(dest="command", required=True)

    def model_arguments(sub):
        sub.add_argument("model", help="registered model name (see `flowsolve plugins`) or module:object")
        sub.add_argument("--kind", help="adapter kind for a module:object model (e.g. eps-vp, fm-ot)")
        sub.add_argument("--quiet", action="store_true", help="no progress bars")
        sub.add_argument("--sample-shape", type=_sample_shape, metavar="D[,D...]",
                         help="shape of one sample, e.g. 3,32,32 (default: the model's sample_shape attribute)")
        sub.add_argument("--device", type=_device,
                         help="torch device to run on, e.g. cuda or cuda:1 (default cpu); a torch.nn.Module model is "
                              "moved there, other models must follow their input's device")
        sub.add_argument("--dtype", choices=DTYPES,
                         help="precision of the noise, ground truth and solver (default float32); a torch.nn.Module "
                              "model is cast to it")

    fit = commands.add_parser("fit", help="fit a bespoke solver to a model")
    model_arguments(fit)
    fit.add_argument("--nfe", type=_positive_int, required=True, help="evaluation budget of the solver")
    fit.add_argument("--base", default="midpoint", help="base solver name (default midpoint)")
    fit.add_argument("--transform", help="transform name (default scale-time)")
    fit.add_argument("--family", help="a registered solver family instead of transform x base (e.g. non-stationary)")
    fit.add_argument("--loss", help="loss name (default: rmse-bound, or rmse for families without local steps)")
    fit.add_argument("--init", help="start from: a solver file, a schedule (log-snr, edm, cosine, uniform; "
                                    "+ddim adds DDIM's scale, e.g. log-snr+ddim) or, for non-stationary, a "
                                    "baseline / base-solver name (e.g. dpm-solver++(2m))")
    fit.add_argument("--iterations", type=_positive_int, default=1000)
    fit.add_argument("--batch-size", type=_positive_int, default=32)
    fit.add_argument("--lr", type=_positive_float, default=2e-3)
    fit.add_argument("-o", "--output", default="solver.pt", help="solver file to write (default solver.pt)")
    fit.add_argument("--checkpoint", type=Path, help="progress file (default: in the cache, one per model and settings)")
    fit.set_defaults(run=_fit)

    sample = commands.add_parser("sample", help="sample a model with a fitted solver")
    sample.add_argument("solver", help="solver file written by `flowsolve fit`")
    model_arguments(sample)
    sample.add_argument("-n", type=_positive_int, default=64, help="number of samples")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("-o", "--output", default="samples.png", help="samples.png or samples.npy")
    sample.set_defaults(run=_sample)

    evaluate = commands.add_parser("eval", help="compare solvers with the baselines against ground truth")
    model_arguments(evaluate)
    evaluate.add_argument("solvers", nargs="*", help="solver files to include")
    evaluate.add_argument("--nfe", type=_nfe_list, default=DEFAULT_NFES, help="comma-separated NFEs")
    evaluate.add_argument("--test", type=_positive_int, default=1024, help="held-out test paths (default 1024)")
    evaluate.add_argument("--out", default="flowsolve-eval", help="directory for the table, CSV and plot")
    evaluate.set_defaults(run=_eval)

    demo = commands.add_parser("demo", help="fit bespoke solvers to a bundled model and compare with baselines")
    demo.add_argument("--model", help="registered model (default digits-fm-ot, else gmm-fm-ot)")
    demo.add_argument("--nfe", type=_nfe_list, default=[8, 10], help="NFEs to fit (default 8,10)")
    demo.add_argument("--iterations", type=_positive_int, default=1000, help="Adam steps per fit (default 1000)")
    demo.add_argument("--test", type=_positive_int, default=1024, help="held-out test paths (default 1024)")
    demo.add_argument("--out", default="flowsolve-demo", help="output directory (default flowsolve-demo)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(run=_demo)

    plugins = commands.add_parser("plugins", help="list discovered plugins and what they provide")
    plugins.set_defaults(run=_plugins)

    from flowsolve.conformance import build_parser as conformance_parser
    from flowsolve.conformance import execute as run_conformance

    conformance = commands.add_parser("conformance", help="check a solver against the conformance suite")
    conformance_parser(conformance).set_defaults(run=run_conformance)
    return parser


def main(argv: list[str] | None = None) -> int:
    from flowsolve.core.field import NonFiniteVelocityError
    from flowsolve.persistence import SolverFileError
    from flowsolve.training.store import StoreMismatchError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("flowsolve: interrupted (a fit resumes from its checkpoint when rerun)", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, SolverFileError, StoreMismatchError,
            NonFiniteVelocityError) as error:
        print(f"flowsolve {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
