"""A small animal-mnist classifier whose penultimate features define the FD-classifier metric.

The shipped weights (``weights/animals-classifier.safetensors``) hold the network and the
reference statistics of its features on the 1000 held-out images of the animal-mnist split
(``scripts/train_animals_classifier.py`` recreates both; ``docs/quality-metric.md`` explains
the metric). Loading needs torch and safetensors, never the dataset.
"""

from __future__ import annotations

import json
from importlib import resources

import attrs
import torch
from torch import nn

from flowsolve.core.errors import FlowsolveFileNotFoundError, FlowsolveValueError

IMAGE_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
FEATURE_DIM = 64
WEIGHTS_NAME = "animals-classifier.safetensors"
RECREATE = "python scripts/train_animals_classifier.py"
# Key prefixes inside the safetensors file: network weights and reference statistics.
NET_PREFIX = "net."


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two ``conv3x3-GroupNorm-SiLU`` layers (GroupNorm keeps each image's features independent of its batch)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.GroupNorm(8, out_channels), nn.SiLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.GroupNorm(8, out_channels), nn.SiLU(),
    )


class AnimalsClassifier(nn.Module):
    """10-way classifier of 28x28 one-channel images in ``[-1, 1]``, with 64-d penultimate features.

    Layout: two-convolution blocks at 28x28 (16 channels), 14x14 (48) and 7x7 (96) separated by
    2x2 average pooling, global average pooling, ``Linear(96, 64)-SiLU`` (the features) and
    ``Linear(64, 10)`` (the logits). About 162k parameters.

    Args:
        channels: channels at 28x28, 14x14 and 7x7 (multiples of 8).

    Shapes:
        ``x``: ``(batch, 1, 28, 28)``; :meth:`features`: ``(batch, 64)``; :meth:`forward`: ``(batch, 10)``.

    Example:
        >>> net = AnimalsClassifier()
        >>> net.features(torch.zeros(2, 1, 28, 28)).shape, net(torch.zeros(2, 1, 28, 28)).shape
        (torch.Size([2, 64]), torch.Size([2, 10]))
    """

    def __init__(self, channels: tuple[int, int, int] = (16, 48, 96)):
        super().__init__()
        c0, c1, c2 = channels
        self.body = nn.Sequential(
            _conv_block(IMAGE_SHAPE[0], c0), nn.AvgPool2d(2),  # 28 -> 14
            _conv_block(c0, c1), nn.AvgPool2d(2),  # 14 -> 7
            _conv_block(c1, c2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.embed = nn.Sequential(nn.Linear(c2, FEATURE_DIM), nn.SiLU())
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 64-d penultimate features of images ``x`` of shape ``(batch, 1, 28, 28)``."""
        if x.dim() != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE:
            raise FlowsolveValueError(f"images must have shape (batch, 1, 28, 28), got {tuple(x.shape)}")
        return self.embed(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The class logits ``(batch, 10)`` of images ``x``."""
        return self.head(self.features(x))


@attrs.frozen
class ReferenceStatistics:
    """The shipped statistics the FD-classifier compares samples against.

    Attributes:
        mean, cov: float64 mean ``(64,)`` and unbiased covariance ``(64, 64)`` of the classifier's
            features on the 1000 held-out images.
        class_counts: held-out images per class, int64 ``(10,)``.
        held_out_accuracy: the classifier's accuracy on those images.
        split_half_fd: FD between two class-balanced halves (500 vs 500) of the held-out images.
        data_floor_fd: ``{n: FD}`` of ``n`` random training images against ``mean, cov``; the
            data's own FD at sample size ``n``, to compare with an FD of ``n`` generated samples.
        metadata: the file's whole string metadata (split seed, training recipe, ...).
    """

    mean: torch.Tensor
    cov: torch.Tensor
    class_counts: torch.Tensor
    held_out_accuracy: float
    split_half_fd: float
    data_floor_fd: dict[int, float]
    metadata: dict[str, str]

    def as_dict(self) -> dict:
        """The scalar reference numbers (for reports and JSON)."""
        return {"held_out_accuracy": self.held_out_accuracy, "split_half_fd": self.split_half_fd,
                "data_floor_fd": dict(self.data_floor_fd), "held_out_images": int(self.class_counts.sum())}


def classifier_weights_path():
    """The packaged weight file of the classifier (an ``importlib.resources`` traversable)."""
    return resources.files(__package__).joinpath("weights").joinpath(WEIGHTS_NAME)


def load_classifier() -> tuple[AnimalsClassifier, ReferenceStatistics]:
    """The shipped classifier (float32, CPU, eval mode, no parameter gradients) and its reference statistics.

    Returns:
        ``(classifier, reference)``.

    Raises:
        FlowsolveFileNotFoundError: the weight file is missing.
        FlowsolveValueError: the file lacks a reference statistic.
    """
    path = classifier_weights_path()
    if not path.is_file():
        raise FlowsolveFileNotFoundError(f"the animal-mnist classifier weights are missing ({path}); "
                                         f"recreate them with: {RECREATE}")
    from safetensors.torch import load as load_safetensors  # imported on use, as the zoo catalog does

    data = path.read_bytes()
    tensors = load_safetensors(data)
    metadata = _read_metadata(data)
    net = AnimalsClassifier()
    net.load_state_dict({key[len(NET_PREFIX):]: value for key, value in tensors.items() if key.startswith(NET_PREFIX)})
    try:
        reference = ReferenceStatistics(
            mean=tensors["reference.mean"], cov=tensors["reference.cov"], class_counts=tensors["reference.class_counts"],
            held_out_accuracy=float(metadata["held_out_accuracy"]), split_half_fd=float(metadata["split_half_fd"]),
            data_floor_fd={int(n): float(fd) for n, fd in json.loads(metadata["data_floor_fd"]).items()},
            metadata=metadata,
        )
    except KeyError as missing:
        raise FlowsolveValueError(f"{path} lacks the entry {missing}; recreate it with: {RECREATE}") from None
    return net.eval().requires_grad_(False), reference


def _read_metadata(data: bytes) -> dict[str, str]:
    """The string metadata of a safetensors file's bytes (its JSON header's ``__metadata__`` entry)."""
    header_size = int.from_bytes(data[:8], "little")
    return dict(json.loads(data[8:8 + header_size]).get("__metadata__", {}))
