"""``flowsolve plugins``: list the discovered plugins and what they provide."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    """Add the ``plugins`` command to the sub-command parsers ``commands``."""
    parser = commands.add_parser("plugins", help="list discovered plugins and what they provide")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print each plugin's status and each kind's names; exit status 1 if a plugin failed."""
    from flowsolve.plugins.registry import registry

    found = registry()
    print("plugins (entry-point group 'flowsolve'):")
    for record in found.records:
        status = "disabled" if record.disabled else (f"FAILED: {record.error}" if record.error else "loaded")
        print(f"  {record.name:<20} {status:<10} {record.source}")
        for note in record.notes:  # names of this plugin ignored, refused or replacing a built-in
            print(f"  {'':<20} {note}")
    sections = (("base solvers", found.base_solvers), ("transforms", found.transforms), ("losses", found.losses),
                ("model adapters", found.adapters), ("models", found.models), ("baselines", found.baselines),
                ("solver families", lambda: {"transform x base": None, **found.solver_families()}))
    for title, provided in sections:
        print(f"{title}: {', '.join(sorted(provided()))}")
    return 1 if any(r.error for r in found.records) else 0
