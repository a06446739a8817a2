"""A conformance check, its outcome, and the exception a failed property raises."""

from __future__ import annotations

import enum
from collections.abc import Callable

import attrs


class Status(enum.Enum):
    """Verdict of one check."""

    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


class CheckFailed(AssertionError):
    """A solver broke a conformance property; the message is the diagnosis shown to the user."""


@attrs.frozen
class Outcome:
    """What a check measured (``figure``, e.g. ``"fitted order 1.98 vs declared 2"``) and its verdict."""

    status: Status
    figure: str

    @classmethod
    def passed(cls, figure: str) -> Outcome:
        return cls(Status.PASS, figure)

    @classmethod
    def failed(cls, figure: str) -> Outcome:
        return cls(Status.FAIL, figure)

    @classmethod
    def skipped(cls, reason: str) -> Outcome:
        return cls(Status.SKIP, reason)


@attrs.frozen
class Check:
    """One named conformance check of one subject.

    Attributes:
        id: stable identifier, also the pytest item name, e.g. ``"order[varying-logistic]"``.
        title: one line saying what is checked.
        measure: runs the check; returns an :class:`Outcome` (a pass or a skip) or raises
            :class:`CheckFailed` with the diagnosis.
    """

    id: str
    title: str
    measure: Callable[[], Outcome] = attrs.field(repr=False)

    def run(self) -> Outcome:
        """Run the check; a violated property or any exception becomes a failed outcome."""
        try:
            return self.measure()
        except CheckFailed as failure:
            return Outcome.failed(str(failure))
        except Exception as error:  # a crashing solver is a failing solver, with the crash as diagnosis
            return Outcome.failed(f"raised {type(error).__name__}: {error}")
