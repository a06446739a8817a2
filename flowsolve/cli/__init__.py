"""The ``flowsolve`` command line: fit, sample, eval, export, demo, plugins, conformance.

One module per command (``fit``, ``sample``, ``evaluate``, ``export``, ``demo``, ``plugins``, ``conformance``),
each adding its sub-command parser and the function that runs it; shared argument types and the
model options live in :mod:`flowsolve.cli.options`, model loading in
:mod:`flowsolve.cli.model_loading`, cache locations in :mod:`flowsolve.cli.cache`.

The commands import torch and the library inside their functions, not at the top of the module:
the command line is the one layer allowed to, so that ``flowsolve --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from flowsolve.cli import conformance, demo, evaluate, export, fit, plugins, sample
from flowsolve.cli.cache import trajectory_store
from flowsolve.cli.options import positive_int
from flowsolve.core.errors import FlowsolveError

# Kept for benchmarks/beat_dpm_solver.py, which imports it; new code uses cache.trajectory_store.
_store_for = trajectory_store

COMMANDS = (fit, sample, evaluate, export, demo, plugins, conformance)
INTERRUPTED = 130  # the shell's status for SIGINT


def build_parser() -> argparse.ArgumentParser:
    """The ``flowsolve`` parser with every command; the parsed namespace's ``run`` runs the command."""
    parser = argparse.ArgumentParser(prog="flowsolve", description="Bespoke solvers for flow and diffusion models.")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1: see README)")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``flowsolve`` with ``argv`` (default ``sys.argv[1:]``) and return its exit status.

    Bad options exit through argparse (status 2). A :class:`~flowsolve.core.errors.FlowsolveError`
    is printed as ``flowsolve <command>: error: <message>`` (status 1); any other exception is a bug
    and propagates with its traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("flowsolve: interrupted (a fit resumes from its checkpoint when rerun)", file=sys.stderr)
        return INTERRUPTED
    except FlowsolveError as error:
        return _report(args.command, error)


def _report(command: str, error: FlowsolveError) -> int:
    print(f"flowsolve {command}: error: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
