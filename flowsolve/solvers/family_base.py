"""The contract of a solver family: one solver per NFE, fitted to a model, saved by its spec."""

from __future__ import annotations

import abc
from typing import ClassVar

from flowsolve.methods.base import BaseMethod
from flowsolve.solvers.module import SolverModule


class Family(abc.ABC):
    """A family of solvers, one per evaluation budget.

    Subclasses declare ``name`` (what solver files and the registry call it), ``has_local_steps``
    (whether its solvers have ``step(i, x)``: then RMSE-Bound is the default loss, else RMSE) and
    ``conformance_checks`` (names of the check groups the conformance plan runs for it: for a
    transform x base family ``"base"``, ``"transform"``, ``"parametric"``; for a family with
    its own coefficients per evaluation ``"start"``, ``"contracts"``, ``"gradients"``,
    ``"order-consistency"``).
    """

    kind: ClassVar[str] = "solver family"  # the registry kind a solver file rebuilds it through
    name: ClassVar[str]
    base: BaseMethod  # the method its solvers start from (a transform x base family: step with)
    has_local_steps: ClassVar[bool]
    conformance_checks: ClassVar[tuple[str, ...]]
    # Adam's step size when fit is given none: a family whose parameters are stored relative to
    # their own scale (non-stationary) takes larger steps than one with raw times and scales.
    default_lr: ClassVar[float] = 2e-3
    default_lr_schedule: ClassVar[str] = "constant"  # or "cosine", "warmup-cosine" (see flowsolve.training.fit.LR_SCHEDULES)

    @property
    @abc.abstractmethod
    def label(self) -> str:
        """A short description for progress bars and messages."""

    @abc.abstractmethod
    def at(self, nfe: int, init=None, model=None) -> SolverModule:
        """The solver spending ``nfe`` evaluations, at the family's start or started from ``init``
        (a fitted solver of the family, or what the family accepts; ``model`` where ``init`` needs it)."""

    @abc.abstractmethod
    def new_solver(self, nfe: int) -> SolverModule:
        """A solver spending ``nfe`` evaluations whose parameters are about to be overwritten (loading)."""

    @abc.abstractmethod
    def to_dict(self) -> dict:
        """What fit's settings (and so its checkpoints) record of the family."""

    @abc.abstractmethod
    def to_spec(self) -> dict:
        """``{kind, name, options}``; options hold the specs of the family's parts."""

    @classmethod
    @abc.abstractmethod
    def from_spec(cls, name: str, options: dict) -> Family:
        """The family of ``options``, its parts already rebuilt (see :mod:`flowsolve.persistence`)."""

    def fit(self, model, nfe: int, **options) -> SolverModule:
        """Fit the family's solver at ``nfe`` to ``model``; see :func:`flowsolve.training.fit.fit`."""
        # The public entry point is family.fit(...); the training loop lives in the training layer
        # above this one, so it is imported on demand.
        from flowsolve.training.fit import fit

        return fit(self, model, nfe, **options)
