"""Hypothesis profiles of the conformance suite and the loop that runs one property.

Every check draws its inputs (problem parameters, transform shapes, tensor shapes, seeds)
from bounded, NaN-free Hypothesis strategies. Three registered profiles set how hard:

- ``flowsolve-conformance`` (default, used in CI): derandomized, so every run draws the same
  examples; no deadline; a few examples per check (the order checks are the costly ones).
- ``flowsolve-conformance-quick``: the same with about a third of the examples.
- ``flowsolve-conformance-thorough``: random draws, four times the examples.

Shrinking is off: each example of an order check costs a ladder of solves, and the diagnosis
names the drawn example anyway. Nothing is written to disk (no example database). The
profiles are only registered, never loaded, so a host test suite's own profile is untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs

try:
    import hypothesis
    from hypothesis import strategies
except ImportError as error:  # hypothesis is what drives every check
    raise ImportError(
        "the flowsolve conformance suite needs hypothesis: pip install 'hypothesis>=6.80'"
    ) from error

T = TypeVar("T")
R = TypeVar("R")

# Any-valued: the settings differ in type, and register_profile takes them as **kwargs.
_COMMON: dict[str, Any] = dict(
    deadline=None,
    phases=(hypothesis.Phase.explicit, hypothesis.Phase.generate),
    suppress_health_check=list(hypothesis.HealthCheck),
    verbosity=hypothesis.Verbosity.quiet,
    report_multiple_bugs=False,
    print_blob=False,
)


@attrs.frozen
class Effort:
    """How many examples the checks draw: ``factor`` times each check's nominal count."""

    profile: str
    factor: float

    def settings(self, examples: int) -> hypothesis.settings:
        """Settings for a check whose nominal example count is ``examples`` (at least 1)."""
        count = max(1, round(examples * self.factor))
        return hypothesis.settings(hypothesis.settings.get_profile(self.profile), max_examples=count)


DEFAULT = Effort("flowsolve-conformance", 1.0)
QUICK = Effort("flowsolve-conformance-quick", 1 / 3)
THOROUGH = Effort("flowsolve-conformance-thorough", 4.0)

hypothesis.settings.register_profile(DEFAULT.profile, derandomize=True, **_COMMON)
hypothesis.settings.register_profile(QUICK.profile, derandomize=True, **_COMMON)
hypothesis.settings.register_profile(THOROUGH.profile, derandomize=False, database=None, **_COMMON)

EFFORTS = {"default": DEFAULT, "quick": QUICK, "thorough": THOROUGH}


def check_property(strategy: strategies.SearchStrategy[T], trial: Callable[[T], R], *, examples: int,
                   effort: Effort) -> list[R]:
    """Run ``trial`` on values drawn from ``strategy``; return what every example measured.

    ``trial`` raises :class:`~flowsolve.conformance.check.CheckFailed` when a drawn example
    breaks the property; Hypothesis then replays that example and the exception propagates.
    """
    measured: list[R] = []

    @effort.settings(examples)
    @hypothesis.given(strategy)
    def drawn_examples(value):
        measured.append(trial(value))

    drawn_examples()
    return measured
