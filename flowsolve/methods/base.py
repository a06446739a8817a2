"""The contract of a base method: what a parametric solver steps with on the transformed field.

Two kinds fulfil it: Runge--Kutta methods (:class:`~flowsolve.methods.runge_kutta.BaseSolver`,
driven by a Butcher tableau) and linear multistep methods
(:class:`~flowsolve.methods.adams.AdamsBashforth`).
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch

from flowsolve.core.field import VelocityField
from flowsolve.core.grid import NodeGrid
from flowsolve.core.solver_file import part_spec


class BaseMethod(abc.ABC):
    """An explicit method integrating ``dx/dt = u(t, x)`` from ``t = 0`` to ``1`` in whole steps.

    Subclasses declare the conformance checks that apply to them (``conformance_checks``: names
    the conformance plan understands) and how they are saved (:meth:`to_spec` / :meth:`from_spec`).
    """

    kind: ClassVar[str] = "base solver"  # the registry kind a solver file rebuilds it through
    # The conformance checks of the method itself ("tableau", "multistep-order", "order",
    # "contracts") and of its parametric solvers ("parametric", "step-lipschitz").
    conformance_checks: ClassVar[tuple[str, ...]]

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The registered name (what solver files store)."""

    @property
    @abc.abstractmethod
    def order(self) -> int:
        """The global order of accuracy."""

    @property
    def history(self) -> int:
        """States before the current one a step needs (0: a one-step method)."""
        return 0

    @abc.abstractmethod
    def evaluations(self, n_steps: int) -> int:
        """Velocity evaluations (NFE) of ``n_steps`` steps."""

    @abc.abstractmethod
    def n_steps(self, nfe: int) -> int:
        """Steps that spend exactly ``nfe`` evaluations; ``ValueError`` if there is no such count."""

    @abc.abstractmethod
    def node_grid(self, n_steps: int) -> NodeGrid:
        """The ``r``-nodes where a parametric solver of ``n_steps`` steps evaluates the field."""

    @abc.abstractmethod
    def sample(self, u: VelocityField, x0: torch.Tensor, nfe: int, *, check_finite: bool = True) -> torch.Tensor:
        """Integrate on a uniform grid in ``t`` with ``nfe`` evaluations; ``x(1)`` shaped like ``x0``."""

    @abc.abstractmethod
    def spec_options(self) -> dict:
        """The JSON-serialisable options :meth:`from_spec` rebuilds this method from."""

    def to_spec(self) -> dict:
        """``{kind, name, options}``: what a solver file stores to rebuild this method."""
        return part_spec(self.kind, self.name, self.spec_options())

    @classmethod
    @abc.abstractmethod
    def from_spec(cls, name: str, options: dict) -> BaseMethod:
        """The method stored as ``name`` with ``options`` (see :meth:`to_spec`)."""

