"""pytest plugin of the conformance suite: ``pytest --flowsolve-solver=NAME_OR_module:object``.

Loaded in every pytest run through the ``pytest11`` entry point, so it does nothing (and
imports nothing beyond pytest) unless ``--flowsolve-solver`` is given. Then each named solver
becomes a collector ``flowsolve-conformance[NAME]`` with one item per check, added to
whatever else pytest collected; ``-k``, ``-x``, ``-v``, ``--junitxml`` work as usual. Run it from
any directory (an empty one runs just the suite)::

    pytest --flowsolve-solver=my_pkg.solvers:MyTableau --flowsolve-device=cuda

The measured figures ("fitted order 3.98 vs declared 4", ...) are listed in a summary section
at the end of the run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_SUBJECTS = pytest.StashKey[tuple]()
_FIGURES = pytest.StashKey[list]()


def pytest_addoption(parser):
    group = parser.getgroup("flowsolve", "flowsolve conformance")
    group.addoption("--flowsolve-solver", action="append", default=[], metavar="NAME_OR_module:object",
                    help="run the flowsolve conformance suite against this solver (repeatable)")
    group.addoption("--flowsolve-device", default="cpu", help="device for the conformance checks (cpu, cuda)")
    group.addoption("--flowsolve-quick", action="store_true",
                    help="conformance checks draw about a third of the examples")
    group.addoption("--flowsolve-thorough", action="store_true",
                    help="conformance checks draw random (not derandomized) examples, four times as many")


def pytest_configure(config):
    specs = config.getoption("flowsolve_solver")
    if not specs:
        return
    if config.getoption("flowsolve_quick") and config.getoption("flowsolve_thorough"):
        raise pytest.UsageError("--flowsolve-quick and --flowsolve-thorough exclude each other; give one")
    try:
        from flowsolve.conformance.cli import checked_device
        from flowsolve.conformance.profiles import EFFORTS
        from flowsolve.conformance.subject import resolve
        from flowsolve.plugins.registry import UnknownNameError
    except ImportError as error:  # e.g. hypothesis missing
        raise pytest.UsageError(f"flowsolve conformance: {error}") from error
    effort = EFFORTS["quick" if config.getoption("flowsolve_quick") else
                     "thorough" if config.getoption("flowsolve_thorough") else "default"]
    try:
        device = checked_device(config.getoption("flowsolve_device"))
        subjects = [resolve(spec) for spec in specs]
    except (UnknownNameError, TypeError, ValueError, ImportError, AttributeError) as error:
        raise pytest.UsageError(f"flowsolve conformance: {error}") from error
    config.stash[_SUBJECTS] = (subjects, effort, device)
    config.stash[_FIGURES] = []


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselection, so they apply to the checks too
def pytest_collection_modifyitems(session, config, items):
    if _SUBJECTS not in config.stash:
        return
    from flowsolve.conformance.plan import plan

    subjects, effort, device = config.stash[_SUBJECTS]
    for subject in subjects:
        suite = ConformanceSuite.from_parent(session, name=f"flowsolve-conformance[{subject.spec}]",
                                             nodeid=f"flowsolve-conformance[{subject.spec}]",
                                             path=Path(__file__).parent)
        suite.subject = subject
        items.extend(ConformanceItem.from_parent(suite, name=check.id, check=check)
                     for check in plan(subject, effort, device))


def pytest_terminal_summary(terminalreporter, config):
    figures = config.stash.get(_FIGURES, None)
    if not figures:
        return
    from flowsolve.conformance.report import format_line

    terminalreporter.section("flowsolve conformance")
    width = max(len(check.id) for _, check, _ in figures)
    suite = None
    for name, check, outcome in figures:
        if name != suite:
            terminalreporter.write_line(name)
            suite = name
        terminalreporter.write_line(format_line(check, outcome, width))


class ConformanceSuite(pytest.Collector):
    """All checks of one solver; its items are made in ``pytest_collection_modifyitems``."""

    subject = None

    def collect(self):
        return []


class ConformanceItem(pytest.Item):
    """One conformance check as a pytest item."""

    def __init__(self, *, check, **kwargs):
        super().__init__(**kwargs)
        self.check = check

    def runtest(self):
        from flowsolve.conformance.check import CheckFailed, Outcome, Status

        figures = self.config.stash.get(_FIGURES, [])
        try:
            outcome = self.check.measure()
        except CheckFailed as failure:
            figures.append((self.parent.name, self.check, Outcome.failed(str(failure))))
            raise
        except Exception as error:
            figures.append((self.parent.name, self.check, Outcome.failed(f"raised {type(error).__name__}: {error}")))
            raise
        figures.append((self.parent.name, self.check, outcome))
        self.user_properties.append(("figure", outcome.figure))
        if outcome.status is Status.SKIP:
            pytest.skip(outcome.figure)

    def repr_failure(self, excinfo, style=None):
        from flowsolve.conformance.check import CheckFailed

        if excinfo.errisinstance(CheckFailed):
            return f"{self.check.title}\n{excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, f"{self.parent.name}::{self.name}"
