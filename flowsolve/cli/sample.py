"""``flowsolve sample``: draw samples of a model with a fitted solver."""

from __future__ import annotations

import argparse

from flowsolve.cli.model_loading import (
    check_solver_fits_model,
    load_model,
    sample_shape_of,
)
from flowsolve.cli.options import (
    ModelOptions,
    add_model_arguments,
    positive_int,
    samples_file,
)


def add_parser(commands) -> None:
    """Add the ``sample`` command to the sub-command parsers ``commands``."""
    parser = commands.add_parser("sample", help="sample a model with a fitted solver")
    parser.add_argument("solver", help="solver file written by `flowsolve fit`")
    add_model_arguments(parser)
    parser.add_argument("-n", type=positive_int, default=64, help="number of samples (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    parser.add_argument("-o", "--output", type=samples_file, default=samples_file("samples.png"),
                        help="samples.png (an image grid) or samples.npy (the array)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Sample ``-n`` noise draws with the solver file and write them to ``--output``."""
    import numpy as np
    import torch

    from flowsolve.persistence import load
    from flowsolve.training.evaluation import image_grid

    torch.set_num_threads(args.threads)
    options = ModelOptions.from_args(args)
    solver = load(args.solver)
    model = load_model(options)
    check_solver_fits_model(solver, model, args.solver, options)
    generator = torch.Generator().manual_seed(args.seed)
    dtype = options.torch_dtype
    # The noise is drawn on the CPU (the same for every device) in float32, or float64 when asked.
    noise_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    x0 = torch.randn((args.n, *sample_shape_of(model, options)), generator=generator, dtype=noise_dtype)
    samples = solver.sample(model, x0.to(device=options.torch_device, dtype=dtype)).cpu()
    if args.output.suffix == ".npy":
        np.save(args.output, (samples if samples.dtype in (torch.float32, torch.float64) else samples.float()).numpy())
    else:
        image_grid([(f"{solver.nfe} NFE", samples)], args.output)
    print(f"{args.n} samples with {solver.nfe} NFE -> {args.output}")
    return 0
