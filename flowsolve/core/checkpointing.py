"""Activation checkpointing: trade a second forward pass for the memory of one call's activations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.utils.checkpoint


def call_checkpointed(function: Callable[..., Any], *args: Any, enabled: bool) -> Any:
    """``function(*args)``, recomputing its activations in the backward pass when ``enabled``.

    Checkpointing only applies while autograd records (``torch.is_grad_enabled()``): without a
    backward pass there is nothing to save memory on, so ``function`` is simply called.
    """
    if enabled and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(function, *args, use_reentrant=False)
    return function(*args)
