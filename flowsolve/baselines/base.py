"""The contract of a training-free baseline, and what the Gaussian-path ones share."""

from __future__ import annotations

import abc
from typing import ClassVar

import torch

from flowsolve.core.errors import FlowsolveTypeError
from flowsolve.core.field import VelocityField, call_field
from flowsolve.paths.predictions import predictions_from_velocity
from flowsolve.paths.schedulers import Scheduler


class Baseline(abc.ABC):
    """A training-free solver that a learned one is compared against at equal NFE.

    Subclasses declare ``needs_scheduler`` (``True``: it samples only models that carry a flowsolve
    scheduler as ``u.scheduler``, as adapters and :class:`~flowsolve.GaussianMixtureFlow` do;
    reports skip it for other models) and implement :attr:`name` and :meth:`sample`. Registered
    through the ``flowsolve_baselines`` plugin hook, a baseline shows up in every report.
    """

    needs_scheduler: ClassVar[bool]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not isinstance(getattr(cls, "needs_scheduler", None), bool):
            raise FlowsolveTypeError(
                f"baseline {cls.__qualname__} must declare needs_scheduler = True or False (True: it needs the "
                "model's Gaussian-path scheduler as u.scheduler)"
            )

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The row label in reports (the registered name)."""

    @abc.abstractmethod
    def sample(self, u: VelocityField, x0: torch.Tensor, nfe: int) -> tuple[torch.Tensor | None, int]:
        """``(x1, nfe_used)``: ``u`` integrated from the noise ``x0`` with at most ``nfe``
        evaluations, and the number really spent; ``(None, 0)`` for a budget it cannot spend."""


def scheduler_of(u) -> Scheduler:
    """The Gaussian path ``u`` carries as ``u.scheduler``; ``TypeError`` if it carries none."""
    scheduler = getattr(u, "scheduler", None)
    if not isinstance(scheduler, Scheduler):
        raise FlowsolveTypeError(
            "this baseline needs a Gaussian-path model: the velocity field must carry a flowsolve scheduler as "
            "`.scheduler` (adapters and GaussianMixtureFlow do)"
        )
    return scheduler


def predictions(u: VelocityField, scheduler: Scheduler, t: torch.Tensor, x: torch.Tensor):
    """``(x1_hat, eps_hat)`` from one velocity evaluation of ``u`` at ``(t, x)``
    (:func:`~flowsolve.paths.predictions.predictions_from_velocity`)."""
    velocity = call_field(u, t, x, where=f"at t = {float(t):.4g}")
    return predictions_from_velocity(velocity, x, t, scheduler)


def scalar_time(value: float, like: torch.Tensor) -> torch.Tensor:
    """A 0-dim time in ``like``'s dtype and device."""
    return torch.tensor(value, dtype=like.dtype, device=like.device)
