"""Small time-conditioned MLPs over the 64 pixels of an 8x8 digit (the bundled zoo models)."""

from __future__ import annotations

import math

import torch
from torch import nn

from flowsolve.core.errors import FlowsolveValueError

PIXELS = 64


class SinusoidalTimeEmbedding(nn.Module):
    """Fixed sine/cosine features of a time in ``[0, 1]``.

    ``dim / 2`` angular frequencies are spaced geometrically from 1 to ``max_frequency``;
    the embedding is ``[sin(w t), cos(w t)]``. No learned state.

    Args:
        dim: number of features (even).
        max_frequency: highest angular frequency (rad per unit time).

    Shapes:
        ``(batch,)`` times in, ``(batch, dim)`` features out.
    """

    def __init__(self, dim: int = 64, max_frequency: float = 1000.0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise FlowsolveValueError(f"dim must be an even number >= 2, got {dim}")
        if not max_frequency > 1:
            raise FlowsolveValueError(f"max_frequency must be > 1, got {max_frequency}")
        self.dim, self.max_frequency = dim, float(max_frequency)

    def forward(self, time: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        exponents = torch.arange(half, dtype=time.dtype, device=time.device) / max(half - 1, 1)
        frequencies = torch.exp(exponents * math.log(self.max_frequency))
        angles = time[:, None] * frequencies
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_frequency={self.max_frequency}"


class DigitsMLP(nn.Module):
    """Residual MLP ``net(x, time) -> (batch, 64)`` for flattened 8x8 digits in ``[-1, 1]``.

    What the output means (velocity or noise) and which time it takes (flow ``t`` or diffusion
    ``s = 1 - t``) is fixed by how it was trained; :func:`flowsolve.zoo.load_model` pairs each
    trained network with its adapter.

    The pixels are embedded to ``width`` features and the sinusoidal time embedding is added
    (through a learned projection); ``depth`` residual blocks ``h + W SiLU(h)`` follow, each
    also receiving a learned time shift; a final ``SiLU`` and linear layer give 64 outputs.
    Computation runs in the parameters' dtype; the output is cast back to ``x``'s dtype, so
    float64 states work with float32 weights.

    Args:
        width: hidden features.
        depth: residual blocks.
        time_features: size of the sinusoidal time embedding.

    Shapes:
        ``x``: ``(batch, 64)``; ``time``: ``(batch,)`` or 0-dim; output ``(batch, 64)``.

    Example:
        >>> net = DigitsMLP(width=32, depth=1)
        >>> net(torch.zeros(3, 64), torch.full((3,), 0.5)).shape
        torch.Size([3, 64])
    """

    sample_shape = (PIXELS,)

    def __init__(self, width: int = 256, depth: int = 3, time_features: int = 64):
        super().__init__()
        if width < 1 or depth < 1:
            raise FlowsolveValueError(f"width and depth must be positive, got width={width}, depth={depth}")
        self.width, self.depth = width, depth
        self.time_embedding = SinusoidalTimeEmbedding(time_features)
        self.pixels_in = nn.Linear(PIXELS, width)
        self.time_in = nn.Linear(time_features, width * (depth + 1))
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.pixels_out = nn.Linear(width, PIXELS)
        nn.init.zeros_(self.pixels_out.weight)
        nn.init.zeros_(self.pixels_out.bias)

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != PIXELS:
            raise FlowsolveValueError(f"x must have shape (batch, {PIXELS}), got {tuple(x.shape)}")
        dtype = self.pixels_in.weight.dtype
        time = torch.as_tensor(time, dtype=dtype, device=x.device)
        time = time.expand(x.shape[0]) if time.dim() == 0 else time
        if time.shape != x.shape[:1]:
            raise FlowsolveValueError(f"time must be 0-dim or shaped ({x.shape[0]},), got {tuple(time.shape)}")
        shifts = self.time_in(self.time_embedding(time)).chunk(self.depth + 1, dim=1)
        h = self.pixels_in(x.to(dtype)) + shifts[0]
        for block, shift in zip(self.blocks, shifts[1:]):
            h = h + block(nn.functional.silu(h + shift))
        return self.pixels_out(nn.functional.silu(h)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"width={self.width}, depth={self.depth}"
