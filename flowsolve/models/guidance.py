"""Classifier-free guidance as one network call per evaluation, with conditions bound per sample."""

from __future__ import annotations

import copy
from typing import cast

import torch
from torch import nn

from flowsolve.core.broadcast import per_sample
from flowsolve.core.errors import FlowsolveValueError
from flowsolve.models.conditioning import ConditionDistribution, Conditions, check_conditions


class _Counter:
    """Evaluation counts shared by a guided model and every copy :meth:`ClassifierFreeGuidance.bind` makes."""

    def __init__(self):
        self.calls = 0
        self.forward_passes = 0


class ClassifierFreeGuidance(nn.Module):
    """Classifier-free guidance: ``(1 + w) m(x, t, c) - w m(x, t, null)``, with the conditional and
    unconditional passes batched into one forward call of twice the batch.

    One call is one evaluation (NFE): ``calls`` counts them, ``forward_passes`` the samples'
    network passes (two each when guided; one when every ``w`` is 0, where the unconditional
    pass is skipped). Counts are shared with the copies :meth:`bind` returns.

    Args:
        model: ``model(x, time, condition)``.
        weight: guidance weight ``w`` (0: conditional model only).
        condition: the conditioning used when none is bound: one row ``(1, ...)`` shared by
            every sample, or ``(batch, ...)`` one per sample. Default: ``null_condition``
            (the unconditional model).
        null_condition: the "no condition" token of the unconditional pass (e.g. the null label).
        distribution: the :class:`~flowsolve.models.conditioning.ConditionDistribution` a fit
            draws conditions from (e.g. ``Labels(10)``); ``None``: the model is fitted with its
            fixed ``condition``.
        condition_key, guidance_key: the names :meth:`bind` reads the condition and a per-sample
            guidance weight from.

    Example:
        >>> guided = ClassifierFreeGuidance(net, weight=2.0, null_condition=torch.tensor([10]),
        ...                                 distribution=Labels(10))  # doctest: +SKIP
        >>> u = flowsolve.adapt(guided, "fm-ot")  # doctest: +SKIP
        >>> solver.sample(u.bind({"labels": labels}), x0)  # doctest: +SKIP
    """

    def __init__(self, model, weight: float, condition: torch.Tensor | None = None,
                 null_condition: torch.Tensor | None = None, *, distribution: ConditionDistribution | None = None,
                 condition_key: str = "labels", guidance_key: str = "guidance"):
        super().__init__()
        if null_condition is None:
            raise FlowsolveValueError("ClassifierFreeGuidance needs null_condition (the 'no condition' token, e.g. "
                                      "the null label of a network trained with label dropout)")
        self.model, self.weight = model, float(weight)
        null_condition = torch.as_tensor(null_condition)
        # Buffers: they move with .to(device) and enter the model's fingerprint.
        self.register_buffer("condition", null_condition.clone() if condition is None else torch.as_tensor(condition))
        self.register_buffer("null_condition", null_condition)
        self.condition_distribution = distribution
        self.condition_key, self.guidance_key = condition_key, guidance_key
        self._weights: torch.Tensor | None = None  # per-sample weights of a bound copy
        self._counter = _Counter()
        shape = getattr(model, "sample_shape", None)
        if shape is not None:  # what noise to draw, passed on to the adapter
            self.sample_shape = tuple(shape)

    @property
    def calls(self) -> int:
        return self._counter.calls

    @property
    def forward_passes(self) -> int:
        return self._counter.forward_passes

    def extra_repr(self) -> str:
        return (f"weight={self.weight}, distribution={self.condition_distribution!r}, "
                f"keys=({self.condition_key!r}, {self.guidance_key!r})")

    def bind(self, conditions: Conditions) -> ClassifierFreeGuidance:
        """A copy (sharing the network and the counts) with per-sample conditions: the condition
        from ``conditions[condition_key]`` and, if given, the weights from ``conditions[guidance_key]``."""
        known = {self.condition_key, self.guidance_key}
        unknown = sorted(set(conditions) - known)
        if unknown:
            raise FlowsolveValueError(f"classifier-free guidance takes the conditions {sorted(known)}, not {unknown}")
        rows = {value.shape[0] for value in conditions.values() if isinstance(value, torch.Tensor) and value.dim()}
        check_conditions(conditions, rows.pop() if len(rows) == 1 else -1)
        bound = copy.copy(self)
        bound._buffers, bound._modules, bound._parameters = dict(self._buffers), dict(self._modules), dict(self._parameters)
        null_condition = cast(torch.Tensor, self.null_condition)
        if self.condition_key in conditions:
            bound.condition = conditions[self.condition_key].to(null_condition.device)
        if self.guidance_key in conditions:
            bound._weights = conditions[self.guidance_key]
        return bound

    def _batched(self, condition: torch.Tensor, batch: int, name: str) -> torch.Tensor:
        if condition.shape[0] == batch:
            return condition
        if condition.shape[0] == 1:
            return condition.expand(batch, *condition.shape[1:])
        raise FlowsolveValueError(
            f"{name} has {condition.shape[0]} rows for a batch of {batch}; give one row (shared by every sample) "
            "or one per sample (bind them with u.bind({...}) for a batch of that size)"
        )

    def forward(self, x, time):
        batch = x.shape[0]
        condition = self._batched(self.condition, batch, "condition")
        self._counter.calls += 1
        if self._weights is None and self.weight == 0:
            self._counter.forward_passes += 1
            return self.model(x, time, condition)
        null = self._batched(self.null_condition, batch, "null_condition")
        out = self.model(torch.cat([x, x]), torch.cat([time, time]), torch.cat([condition, null]))
        self._counter.forward_passes += 2
        conditional, unconditional = out[:batch], out[batch:]
        if self._weights is None:
            return (1 + self.weight) * conditional - self.weight * unconditional
        weight = per_sample(self._batched(self._weights, batch, "guidance").to(x.device, x.dtype), x)
        return (1 + weight) * conditional - weight * unconditional
