"""Run a subject's checks and print the readable report."""

from __future__ import annotations

import sys
import textwrap
import time
from typing import TextIO

import attrs

from flowsolve.conformance.check import Check, Outcome, Status
from flowsolve.conformance.subject import Subject


@attrs.frozen
class Result:
    """A check with its outcome and how long it took."""

    check: Check
    outcome: Outcome
    seconds: float


def run_checks(subject: Subject, checks: list[Check], out: TextIO | None = None) -> list[Result]:
    """Run ``checks`` in order, printing each verdict to ``out`` (default stdout) as it comes."""
    out = out if out is not None else sys.stdout
    width = max((len(c.id) for c in checks), default=0)
    print(f"flowsolve conformance: {subject.describe()}", file=out, flush=True)
    results = []
    started = time.perf_counter()
    for check in checks:
        begin = time.perf_counter()
        outcome = check.run()
        results.append(Result(check, outcome, time.perf_counter() - begin))
        print(format_line(check, outcome, width), file=out, flush=True)
    counts = {status: sum(r.outcome.status is status for r in results) for status in Status}
    print(f"{len(results)} checks: {counts[Status.PASS]} passed, {counts[Status.FAIL]} failed, "
          f"{counts[Status.SKIP]} skipped ({time.perf_counter() - started:.1f} s)", file=out, flush=True)
    return results


def format_line(check: Check, outcome: Outcome, width: int) -> str:
    """``"  PASS  order[logistic]   fitted order 2.00 vs declared 2"``; long diagnoses wrap underneath."""
    head = f"  {outcome.status.value}  {check.id:<{width}}  "
    lines = textwrap.wrap(outcome.figure, width=max(50, 120 - len(head)), break_on_hyphens=False) or [""]
    return "\n".join([head + lines[0]] + [" " * len(head) + line for line in lines[1:]])
