"""Conditions drawn from a fixed set: e.g. the embeddings of a list of prompts, for fitting a
solver to a text-conditioned pipeline over those prompts.

Example:
    >>> import torch
    >>> prompts = Choices({"encoder_hidden_states": torch.randn(3, 5, 12), "pooled_projections": torch.randn(3, 6)})
    >>> drawn = prompts.sample(4, torch.Generator().manual_seed(0))
    >>> drawn["encoder_hidden_states"].shape, drawn["pooled_projections"].shape
    (torch.Size([4, 5, 12]), torch.Size([4, 6]))
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch

from flowsolve.models.conditioning import ConditionDistribution


class Choices(ConditionDistribution):
    """One of ``n`` rows, drawn uniformly per path, of every table in ``tables`` together.

    Args:
        tables: ``{name: (n, ...) tensor}``, e.g. a prompt list's ``encoder_hidden_states``
            ``(n, seq, dim)`` and ``pooled_projections`` ``(n, dim)``: a path gets row ``i`` of each.
    """

    def __init__(self, tables: Mapping[str, torch.Tensor]):
        if not tables:
            raise ValueError("Choices needs at least one table")
        rows = {name: value.shape[0] if isinstance(value, torch.Tensor) and value.dim() else None
                for name, value in tables.items()}
        if None in rows.values() or len(set(rows.values())) != 1 or 0 in rows.values():
            raise ValueError(f"every table needs the same positive number of rows (one per choice), got {rows}")
        self.tables = {name: value.detach().cpu() for name, value in tables.items()}
        self.count = next(iter(rows.values()))

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.tables)

    def sample(self, count, generator):
        index = torch.randint(self.count, (count,), generator=generator)
        return {name: value[index] for name, value in self.tables.items()}

    def to_dict(self):
        digest = hashlib.sha256()
        for name in sorted(self.tables):
            value = self.tables[name].contiguous()
            digest.update(name.encode() + str(value.dtype).encode() + str(tuple(value.shape)).encode())
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
        return {"choices": self.count, "keys": sorted(self.tables), "sha256": digest.hexdigest()}

    def __repr__(self) -> str:
        shapes = {name: tuple(value.shape) for name, value in self.tables.items()}
        return f"Choices({shapes})"
