"""``flowsolve conformance``: the conformance suite's own command line, as a ``flowsolve`` command."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    """Add the ``conformance`` command to the sub-command parsers ``commands``."""
    from flowsolve.conformance import build_parser

    parser = commands.add_parser("conformance", help="check a solver against the conformance suite")
    build_parser(parser).set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the suite; it reports its own usage errors (exit status 2) and failed checks (1)."""
    from flowsolve.conformance import execute

    return execute(args)
