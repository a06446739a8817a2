"""Per-sample values shaped to broadcast against a batch of states."""

from __future__ import annotations

import torch


def per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values`` shaped to broadcast against ``like``, a ``(batch, ...)`` tensor.

    A 0-dim tensor (one value for the whole batch) is returned as it is; a ``(batch,)`` tensor
    becomes ``(batch, 1, ..., 1)`` with ``like``'s number of dimensions. Dtype and device are
    left alone: callers that need ``like``'s dtype cast themselves.

    Example:
        >>> per_sample(torch.tensor([1.0, 2.0]), torch.zeros(2, 3, 4)).shape
        torch.Size([2, 1, 1])
    """
    if values.dim() == 0:
        return values
    return values.reshape(-1, *([1] * (like.dim() - 1)))
