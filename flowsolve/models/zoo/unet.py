"""A small class-conditional U-Net for 28x28 one-channel images (the animal-mnist zoo models).

The network is a plain function approximator: what its output means (velocity or noise) and
how its time input relates to flowsolve's ``t`` is fixed by how it was trained
(``scripts/train_animals.py`` documents both variants); a zoo adapter turns it into a velocity
field.
"""

from __future__ import annotations

import torch
from torch import nn

from flowsolve.core.errors import FlowsolveValueError
from flowsolve.models.zoo.networks import SinusoidalTimeEmbedding

IMAGE_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
NULL_LABEL = NUM_CLASSES  # the "no label" index used for classifier-free guidance


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)



def _zero(conv: nn.Conv2d) -> None:
    """Start a block's last convolution at zero, so each residual block starts as the identity."""
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)

class ResidualBlock(nn.Module):
    """``GroupNorm-SiLU-conv3x3``, add a per-channel shift from the embedding, ``GroupNorm-SiLU-conv3x3``,
    plus a (1x1-projected) skip. The last convolution starts at zero, so the block starts as its skip.

    Shapes:
        ``h``: ``(batch, in_channels, H, W)``; ``embedding``: ``(batch, embedding_dim)``;
        output ``(batch, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.shift = nn.Linear(embedding_dim, out_channels)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        _zero(self.conv2)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, h: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        out = self.conv1(nn.functional.silu(self.norm1(h)))
        out = out + self.shift(embedding)[:, :, None, None]
        out = self.conv2(nn.functional.silu(self.norm2(out)))
        return self.skip(h) + out


class ConditionalUNet(nn.Module):
    """Class-conditional U-Net ``net(x, time, labels)`` for 28x28 one-channel images in ``[-1, 1]``.

    Layout (``channels = (c0, c1, c2)``, default ``(32, 64, 128)``):

    * a 3x3 input convolution to ``c0`` channels at 28x28;
    * down path: one residual block per level at 28x28 (``c0``), 14x14 (``c1``) and 7x7
      (``c2``), separated by stride-2 3x3 convolutions;
    * middle: two residual blocks at 7x7;
    * up path: one residual block per level taking the concatenated skip of the same level,
      separated by nearest-neighbour 2x upsampling followed by a 3x3 convolution;
    * ``GroupNorm-SiLU`` and a zero-initialised 3x3 output convolution (the untrained net outputs 0).

    Conditioning: a sinusoidal embedding of ``time`` (:class:`SinusoidalTimeEmbedding`) through a
    two-layer MLP, plus a learned embedding of the label (``num_classes + 1`` rows; the last
    index, :data:`NULL_LABEL` = 10 by default, is "no label" for classifier-free guidance), gives
    one vector that every residual block turns into a per-channel shift.

    Computation runs in the parameters' dtype and device; the output is cast back to ``x``'s
    dtype (float64 states work with float32 weights). About 1.9M parameters by default.

    Args:
        channels: channels at 28x28, 14x14 and 7x7.
        num_classes: number of real classes (the null label is ``num_classes``).
        time_features: size of the sinusoidal time embedding.

    Shapes:
        ``x``: ``(batch, 1, 28, 28)``; ``time``: ``(batch,)`` or 0-dim, in ``[0, 1]``;
        ``labels``: ``(batch,)`` or 0-dim integers in ``[0, num_classes]``; output like ``x``.

    Example:
        >>> net = ConditionalUNet(channels=(8, 16, 16))
        >>> net(torch.zeros(2, 1, 28, 28), torch.tensor(0.5), torch.tensor([3, 10])).shape
        torch.Size([2, 1, 28, 28])
    """

    sample_shape = IMAGE_SHAPE

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128), num_classes: int = NUM_CLASSES,
                 time_features: int = 64):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) != 3 or min(channels) < 1:
            raise FlowsolveValueError(f"channels must be three positive integers, got {channels}")
        if num_classes < 1:
            raise FlowsolveValueError(f"num_classes must be positive, got {num_classes}")
        c0, c1, c2 = channels
        self.channels, self.num_classes = channels, num_classes
        self.null_label = num_classes
        dim = 4 * c0
        self.time_embedding = SinusoidalTimeEmbedding(time_features)
        self.time_mlp = nn.Sequential(nn.Linear(time_features, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.label_embedding = nn.Embedding(num_classes + 1, dim)
        self.embedding_out = nn.SiLU()

        self.conv_in = nn.Conv2d(IMAGE_SHAPE[0], c0, 3, padding=1)
        self.down0 = ResidualBlock(c0, c0, dim)
        self.pool0 = nn.Conv2d(c0, c0, 3, stride=2, padding=1)  # 28 -> 14
        self.down1 = ResidualBlock(c0, c1, dim)
        self.pool1 = nn.Conv2d(c1, c1, 3, stride=2, padding=1)  # 14 -> 7
        self.down2 = ResidualBlock(c1, c2, dim)
        self.middle = nn.ModuleList([ResidualBlock(c2, c2, dim), ResidualBlock(c2, c2, dim)])
        self.up2 = ResidualBlock(c2 + c2, c2, dim)
        self.unpool1 = nn.Conv2d(c2, c1, 3, padding=1)  # after 7 -> 14 upsampling
        self.up1 = ResidualBlock(c1 + c1, c1, dim)
        self.unpool0 = nn.Conv2d(c1, c0, 3, padding=1)  # after 14 -> 28 upsampling
        self.up0 = ResidualBlock(c0 + c0, c0, dim)
        self.norm_out = _norm(c0)
        self.conv_out = nn.Conv2d(c0, IMAGE_SHAPE[0], 3, padding=1)
        _zero(self.conv_out)

    def forward(self, x: torch.Tensor, time: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE:
            raise FlowsolveValueError(f"x must have shape (batch, {', '.join(map(str, IMAGE_SHAPE))}), "
                                      f"got {tuple(x.shape)}")
        batch = x.shape[0]
        weight = self.conv_in.weight
        time = torch.as_tensor(time, dtype=weight.dtype, device=weight.device)
        time = time.expand(batch) if time.dim() == 0 else time
        if time.shape != (batch,):
            raise FlowsolveValueError(f"time must be 0-dim or shaped ({batch},), got {tuple(time.shape)}")
        labels = torch.as_tensor(labels, device=weight.device)
        if labels.is_floating_point() or labels.is_complex():
            raise FlowsolveValueError(f"labels must be integers, got dtype {labels.dtype}")
        labels = labels.long()
        labels = labels.expand(batch) if labels.dim() == 0 else labels
        if labels.shape != (batch,):
            raise FlowsolveValueError(f"labels must be 0-dim or shaped ({batch},), got {tuple(labels.shape)}")

        embedding = self.time_mlp(self.time_embedding(time)) + self.label_embedding(labels)
        embedding = self.embedding_out(embedding)

        h0 = self.down0(self.conv_in(x.to(device=weight.device, dtype=weight.dtype)), embedding)
        h1 = self.down1(self.pool0(h0), embedding)
        h2 = self.down2(self.pool1(h1), embedding)
        h = h2
        for block in self.middle:
            h = block(h, embedding)
        h = self.up2(torch.cat([h, h2], dim=1), embedding)
        h = self.unpool1(nn.functional.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.up1(torch.cat([h, h1], dim=1), embedding)
        h = self.unpool0(nn.functional.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.up0(torch.cat([h, h0], dim=1), embedding)
        out = self.conv_out(nn.functional.silu(self.norm_out(h)))
        return out.to(device=x.device, dtype=x.dtype)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_classes={self.num_classes}, null_label={self.null_label}"
