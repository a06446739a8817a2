"""``flowsolve export``: a fitted solver's time grid as plain lists (sigmas, timesteps, JSON), or as
a diffusers scheduler folder (through the flowsolve-diffusers plugin)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from flowsolve.cli.errors import CommandLineError
from flowsolve.cli.options import positive_float, positive_int

FORMATS = ("sigmas", "timesteps", "json", "diffusers")

DESCRIPTION = """\
Write the time grid a fitted solver learned as plain lists another sampler can use:

  sigmas     the noise levels sigma = sigma_t / alpha_t of the grid's step points t_0 .. t_(n-1),
             then 0 for the final step (k-diffusion's convention: a sampler evaluates the model at
             sigmas[i] and steps to sigmas[i + 1]); the path is the one of --model's scheduler,
             FM-OT by default (flowsolve's EDM convention: sigma = (1 - t) / t).
  timesteps  diffusers timesteps k = (N - 1)(1 - t) of t_0 .. t_(n-1), N = --num-train-timesteps
             (fractional: round them for a scheduler that takes integer timesteps).
  json       all of it: the flow times of the step points and of every evaluation, sigmas, timesteps.
  diffusers  a diffusers scheduler folder (-o FOLDER) that runs the solver itself, every learned
             weight included (needs the flowsolve-diffusers plugin).

Only a time-only solver's grid carries its full effect into a plain list, and then only with a
sampler of the solver's own base method (euler: Euler / DDIM, heun: Heun, ...). A scale-time or
non-stationary solver also learned step weights that a list of sigmas cannot carry: export it with
--format diffusers instead (a list of its times is still written, with a warning). A
non-stationary solver's grid is its evaluation times; a guidance-range solver's depends on the
guidance scale (--guidance W).
"""


def add_parser(commands) -> None:
    """Add the ``export`` command to the sub-command parsers ``commands``."""
    parser = commands.add_parser("export", help="write a solver's time grid as sigmas / timesteps / JSON, or a "
                                                "diffusers scheduler", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("solver", help="solver file written by `flowsolve fit`")
    parser.add_argument("--format", choices=FORMATS, required=True, help="what to write (see above)")
    parser.add_argument("--num-train-timesteps", type=positive_int, default=1000,
                        help="N of the diffusers timesteps k = (N - 1)(1 - t) (default 1000)")
    parser.add_argument("--model", help="registered model name or module:object whose scheduler (and time range) "
                                        "turns times into sigmas (default: the FM-OT path)")
    parser.add_argument("--kind", help="adapter kind for a module:object --model (e.g. eps-vp, edm)")
    parser.add_argument("--sigma-max", type=positive_float,
                        help="the model's largest noise level: sigmas above it are clamped to it (a grid that starts "
                             "at pure noise, t = 0, has an infinite sigma otherwise)")
    parser.add_argument("--guidance", type=float, metavar="W", help="the guidance scale of a guidance-range solver")
    parser.add_argument("--like", help="with --format diffusers: the scheduler (folder) of the pipeline it will run in")
    parser.add_argument("-o", "--output", type=Path,
                        help="file to write (default: standard output); with --format diffusers, the folder")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Export the solver file as ``--format`` says."""
    import torch

    from flowsolve.persistence import load

    torch.set_num_threads(args.threads)
    solver = load(args.solver)
    if args.format == "diffusers":
        return _export_diffusers(solver, args)
    if args.like is not None:
        raise CommandLineError("--like applies to --format diffusers")
    times, evaluation_times = time_grid(solver, args.guidance)
    if not _is_time_only(solver):
        print(f"flowsolve export: warning: a {solver.label} solver learned more than its times (step weights that a "
              "list of times cannot carry); samplers using this grid do not reproduce it: export it with --format "
              "diffusers for that", file=sys.stderr)
    scheduler, time_range = _path_of(args)
    steps = [(args.num_train_timesteps - 1) * (1 - t) for t in times[:-1]]
    if args.format == "sigmas":
        payload: object = _sigmas(times, scheduler, time_range, args.sigma_max)
    elif args.format == "timesteps":
        payload = steps
    else:
        try:
            sigmas: dict = {"sigmas": _sigmas(times, scheduler, time_range, args.sigma_max)}
        except CommandLineError as error:  # JSON has no infinity: say why instead
            sigmas = {"sigmas": None, "sigmas_note": str(error)}
        payload = {
            "solver": solver.label, "nfe": solver.nfe, "path": getattr(scheduler, "name", type(scheduler).__name__),
            "times": times, "evaluation_times": evaluation_times, **sigmas,
            "num_train_timesteps": args.num_train_timesteps, "timesteps": steps,
            "time_only": _is_time_only(solver),
        }
    text = json.dumps(payload, indent=None if isinstance(payload, list) else 2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
        print(f"{args.format} of the {solver.label} solver (nfe {solver.nfe}) -> {args.output}", file=sys.stderr)
    return 0


def time_grid(solver, guidance: float | None = None) -> tuple[list[float], list[float]]:
    """``(times, evaluation_times)``: the flow times of the solver's step points ``t_0 = 0 < ... <
    t_n`` (a solver without steps: its evaluation times, then 1) and of its ``nfe`` evaluations."""
    from flowsolve.solvers.guidance_range import GuidanceRangeSolver
    from flowsolve.solvers.parametric import ParametricSolver

    per_scale = isinstance(solver, GuidanceRangeSolver)
    if per_scale and guidance is None:
        raise CommandLineError(f"a {solver.label} solver's times depend on the guidance scale: pass --guidance W")
    if not per_scale and guidance is not None:
        raise CommandLineError(f"--guidance applies to guidance-range solvers; this is a {solver.label} solver")
    evaluation_times = solver.evaluation_times(guidance=guidance)
    if isinstance(solver, ParametricSolver):
        nodes = solver.nodes()
        times = nodes.t[solver.grid.start_index].tolist()
    else:
        times = [*evaluation_times.tolist(), 1.0]
    if any(b <= a for a, b in zip(times, times[1:])):
        raise CommandLineError(f"the {solver.label} solver's times are not increasing ({[round(t, 6) for t in times]}); "
                               "no sampler takes such a grid")
    return times, evaluation_times.tolist()


def _is_time_only(solver) -> bool:
    transform = getattr(solver, "transform", None)
    return transform is not None and not transform.learns_scale


def _path_of(args):
    """The scheduler turning times into sigmas, and the time range the model is evaluated in (or None)."""
    from flowsolve.paths.schedulers import FMOT

    if args.model is None:
        if args.kind is not None:
            raise CommandLineError("--kind applies to a module:object --model")
        return FMOT(), None
    from flowsolve.cli.model_loading import resolve_model

    model = resolve_model(args.model, args.kind)
    scheduler = getattr(model, "scheduler", None)
    if scheduler is None or not callable(getattr(scheduler, "alpha", None)):
        raise CommandLineError(f"the model {args.model!r} has no Gaussian-path scheduler (a `scheduler` attribute), so "
                               "its sigmas are unknown; adapt it with --kind, or leave out --model for the FM-OT path")
    return scheduler, getattr(model, "time_range", None)


def _sigmas(times: list[float], scheduler, time_range, sigma_max: float | None) -> list[float]:
    import torch

    grid = torch.tensor(times[:-1], dtype=torch.float64)
    if time_range is not None:  # the model is evaluated inside its time range: the sigmas it really sees
        grid = grid.clamp(float(time_range[0]), float(time_range[1]))
    sigmas = (scheduler.sigma(grid) / scheduler.alpha(grid)).tolist()
    if sigma_max is not None:
        sigmas = [min(s, sigma_max) for s in sigmas]
    if not all(math.isfinite(s) and s >= 0 for s in sigmas):
        raise CommandLineError(f"the grid starts at pure noise (t = {times[0]:g}), where sigma is infinite; pass "
                               "--sigma-max (the model's largest noise level, e.g. 80 for EDM) or a --model with a "
                               "time range")
    return [*sigmas, 0.0]


def _export_diffusers(solver, args: argparse.Namespace) -> int:
    if args.output is None:
        raise CommandLineError("--format diffusers writes a scheduler folder: give it with -o FOLDER")
    import importlib

    try:
        flowsolve_diffusers = importlib.import_module("flowsolve_diffusers")
    except ImportError as error:
        raise CommandLineError(f"--format diffusers needs the flowsolve-diffusers plugin (pip install it from "
                               f"plugins/flowsolve-diffusers in flowsolve's repository): {error}") from error
    export_scheduler = getattr(flowsolve_diffusers, "export_scheduler", None)
    if export_scheduler is None:
        raise CommandLineError("this flowsolve-diffusers has no export_scheduler; update the plugin")
    try:
        export_scheduler(solver, args.output, **({} if args.like is None else {"like": args.like}))
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise CommandLineError(f"the diffusers scheduler could not be written: {error}") from error
    print(f"diffusers scheduler of the {solver.label} solver (nfe {solver.nfe}) -> {args.output}")
    return 0
