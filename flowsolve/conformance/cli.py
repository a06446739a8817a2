"""``flowsolve conformance NAME_OR_module:object [--device cuda] [--quick]``."""

from __future__ import annotations

import argparse
import sys

from flowsolve.core.errors import FlowsolveValueError
from flowsolve.plugins.registry import UnknownNameError

USAGE_ERROR = 2


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the command's arguments to ``parser`` (e.g. a ``flowsolve`` sub-command parser) or a new one.

    Example (wiring into a CLI with sub-commands)::

        sub = commands.add_parser("conformance", help="check a solver against the conformance suite")
        flowsolve.conformance.build_parser(sub).set_defaults(run=flowsolve.conformance.execute)
    """
    if parser is None:
        parser = argparse.ArgumentParser(
            prog="flowsolve conformance",
            description="Check a base solver, tableau, transform or solver family against flowsolve's "
                        "conformance suite (declared order, consistency, Lipschitz bounds, contracts).",
        )
    parser.add_argument("solvers", nargs="+", metavar="NAME_OR_module:object",
                        help="a registered base solver or transform name (e.g. midpoint, scale-time), or "
                             "module:object naming a BaseSolver, ButcherTableau, Transform or ParametricFamily")
    parser.add_argument("--device", default="cpu", help="device to run the checks on (cpu, cuda, cuda:1; default cpu)")
    effort = parser.add_mutually_exclusive_group()
    effort.add_argument("--quick", dest="effort", action="store_const", const="quick", default="default",
                        help="draw about a third of the examples (a fast smoke test)")
    effort.add_argument("--thorough", dest="effort", action="store_const", const="thorough",
                        help="random (not derandomized) draws, four times the examples")
    return parser


def execute(args: argparse.Namespace) -> int:
    """Run the suite as parsed by :func:`build_parser`; 0 iff no check failed, 2 on a usage error."""
    import torch

    try:
        from flowsolve.conformance.check import Status
        from flowsolve.conformance.plan import plan
        from flowsolve.conformance.profiles import EFFORTS
        from flowsolve.conformance.report import run_checks
        from flowsolve.conformance.subject import resolve

        device = checked_device(args.device)
        subjects = [resolve(spec) for spec in args.solvers]
    except (UnknownNameError, TypeError, ValueError, ImportError, AttributeError) as error:
        print(f"flowsolve conformance: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    # The checks are many small operations: extra OpenMP threads only spin (README, performance notes).
    torch.set_num_threads(1)
    failed = False
    for subject in subjects:
        results = run_checks(subject, plan(subject, EFFORTS[args.effort], device))
        failed |= any(r.outcome.status is Status.FAIL for r in results)
    return 1 if failed else 0


def checked_device(name: str):
    """``torch.device(name)``; ``ValueError`` naming the fix if it does not exist here."""
    import torch

    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FlowsolveValueError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise FlowsolveValueError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``argv`` are the arguments after ``flowsolve conformance``."""
    return execute(build_parser().parse_args(argv))
