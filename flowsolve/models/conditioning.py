"""Conditions per path: what a conditional model is sampled with, drawn from a distribution.

A conditional velocity field (e.g. :class:`~flowsolve.ClassifierFreeGuidance` adapted with
:func:`flowsolve.adapt`) takes its conditions as named tensors with one row per sample,
``{"labels": (batch,), "guidance": (batch,)}``, and ``field.bind(conditions)`` returns the
ordinary field ``u(t, x)`` of that batch. Fitting draws the conditions of every ground-truth
path from a :class:`ConditionDistribution` (stored with the path), so one solver is fitted
over all of them.

Example:
    >>> import torch
    >>> conditions = Labels(10) & GuidanceScales(0.0, 4.0)
    >>> drawn = conditions.sample(3, torch.Generator().manual_seed(0))
    >>> sorted(drawn), drawn["labels"].shape
    (['guidance', 'labels'], torch.Size([3]))
"""

from __future__ import annotations

import abc
from typing import Any

import attrs
import torch

from flowsolve.core.errors import FlowsolveTypeError, FlowsolveValueError

Conditions = dict[str, torch.Tensor]


class ConditionDistribution(abc.ABC):
    """Where the conditions of a batch of paths come from.

    Subclasses draw named tensors with one row per path (:meth:`sample`), name them
    (:attr:`keys`) and describe themselves as JSON data (:meth:`to_dict`, which enters the key
    of a ground-truth store: two distributions with the same description must draw the same
    conditions from the same generator).
    """

    @property
    @abc.abstractmethod
    def keys(self) -> tuple[str, ...]:
        """The names of the tensors :meth:`sample` returns."""

    @abc.abstractmethod
    def sample(self, count: int, generator: torch.Generator) -> Conditions:
        """``count`` draws (on the CPU), one row each, from ``generator``."""

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON data that identifies the distribution."""

    def __and__(self, other: ConditionDistribution) -> Joint:
        return Joint((self, other))


@attrs.frozen
class Labels(ConditionDistribution):
    """Class labels drawn uniformly from ``0 .. classes - 1`` (int64)."""

    classes: int = attrs.field()
    key: str = "labels"

    @classes.validator
    def _check(self, attribute, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FlowsolveValueError(f"Labels needs a positive number of classes, got {value!r}")

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,)

    def sample(self, count, generator):
        return {self.key: torch.randint(self.classes, (count,), generator=generator)}

    def to_dict(self):
        return {"labels": self.classes, "key": self.key}


@attrs.frozen
class GuidanceScales(ConditionDistribution):
    """Guidance scales ``w`` drawn uniformly from ``[low, high]`` (float64), one per path."""

    low: float = attrs.field(converter=float)
    high: float = attrs.field(converter=float)
    key: str = "guidance"

    def __attrs_post_init__(self):
        if not (self.low <= self.high) or not all(map(lambda v: abs(v) < float("inf"), (self.low, self.high))):
            raise FlowsolveValueError(f"GuidanceScales needs finite low <= high, got [{self.low}, {self.high}]")

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,)

    def sample(self, count, generator):
        u = torch.rand(count, generator=generator, dtype=torch.float64)
        return {self.key: self.low + (self.high - self.low) * u}

    def to_dict(self):
        return {"guidance": [self.low, self.high], "key": self.key}


@attrs.frozen
class Joint(ConditionDistribution):
    """Independent draws from several distributions (``Labels(10) & GuidanceScales(0, 4)``)."""

    parts: tuple[ConditionDistribution, ...]

    def __attrs_post_init__(self):
        names = [key for part in self.parts for key in part.keys]
        if len(names) != len(set(names)):
            raise FlowsolveValueError(f"the joint distribution would draw a condition twice: {names}")

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(key for part in self.parts for key in part.keys)

    def sample(self, count, generator):
        return {key: value for part in self.parts for key, value in part.sample(count, generator).items()}

    def to_dict(self):
        return {"joint": [part.to_dict() for part in self.parts]}


def check_conditions(conditions: Conditions, batch: int) -> Conditions:
    """``conditions`` if it maps names to tensors with ``batch`` rows (else a clear error)."""
    if not isinstance(conditions, dict) or not all(isinstance(k, str) for k in conditions):
        raise FlowsolveTypeError(f"conditions must be a dict of name -> tensor, got {type(conditions).__name__}")
    for name, value in conditions.items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != batch:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise FlowsolveValueError(
                f"condition {name!r} has shape {shape}; give one row per sample ({batch} rows)"
            )
    return conditions


def bind(field, conditions: Conditions | None):
    """``field`` with ``conditions`` (one row per sample) bound: an ordinary ``u(t, x)``.

    ``None`` or ``{}`` returns ``field`` unchanged. A field without ``bind`` takes no conditions.
    """
    if not conditions:
        return field
    binder = getattr(field, "bind", None)
    if not callable(binder):
        raise FlowsolveTypeError(
            f"{type(field).__name__} takes no conditions, but conditions {sorted(conditions)} were given; "
            "wrap a conditional network in flowsolve.ClassifierFreeGuidance (or give the field a bind(conditions) "
            "method) before adapting it"
        )
    return binder(conditions)


def select_rows(field, index: torch.Tensor):
    """A bound ``field`` re-bound to rows ``index`` of its conditions (for a batch rearranged or
    repeated, e.g. every step of every path at once); an unconditional field is returned as is."""
    conditions = getattr(field, "bound_conditions", None)
    if conditions is None:
        return field
    return field.unbound_field.bind({name: value[index.to(value.device)] for name, value in conditions.items()})


def distribution_of(field) -> ConditionDistribution | None:
    """The distribution ``field`` declares its conditions are drawn from (``None``: unconditional)."""
    found = getattr(field, "condition_distribution", None)
    if found is not None and not isinstance(found, ConditionDistribution):
        raise FlowsolveTypeError(
            f"{type(field).__name__}.condition_distribution must be a flowsolve ConditionDistribution, "
            f"got {type(found).__name__}"
        )
    return found
