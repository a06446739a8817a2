"""Sample quality of generated animal-mnist images: the FD-classifier and class accuracy.

The FD-classifier is the Frechet distance between Gaussians fitted to a classifier's
penultimate features of the samples and of held-out data (an FID with a small in-domain
classifier in place of Inception). ``docs/quality-metric.md`` describes it and how sample
size biases it. Everything here works on features and shipped statistics; no dataset is read.
"""

from __future__ import annotations

import math

import torch

from flowsolve.core.errors import FlowsolveValueError
from flowsolve.models.zoo.classifier import (
    IMAGE_SHAPE,
    NUM_CLASSES,
    AnimalsClassifier,
    ReferenceStatistics,
    load_classifier,
)


def _as_float64(value, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(value).detach().to("cpu", torch.float64)
    if not torch.isfinite(tensor).all():
        raise FlowsolveValueError(f"{name} has non-finite entries")
    return tensor


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix; tiny negative eigenvalues (round-off) count as 0."""
    eigenvalues, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * eigenvalues.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mean_a, cov_a, mean_b, cov_b) -> float:
    """Frechet distance between the Gaussians ``N(mean_a, cov_a)`` and ``N(mean_b, cov_b)``.

    ``|mean_a - mean_b|^2 + tr(cov_a + cov_b - 2 (cov_a^1/2 cov_b cov_a^1/2)^1/2)``, in float64.
    Both square roots are of symmetric PSD matrices, taken by symmetric eigendecomposition, so
    the result is real (no complex ``sqrtm`` residue) and singular covariances (fewer samples
    than dimensions) are fine.

    Args:
        mean_a, mean_b: ``(d,)`` means (tensors or array-likes).
        cov_a, cov_b: ``(d, d)`` symmetric PSD covariances.

    Returns:
        The distance, a float >= 0.

    Example:
        >>> frechet_distance([0.0, 0.0], torch.eye(2), [3.0, 4.0], 4 * torch.eye(2))
        27.0
    """
    mean_a, mean_b = _as_float64(mean_a, "mean_a"), _as_float64(mean_b, "mean_b")
    cov_a, cov_b = _as_float64(cov_a, "cov_a"), _as_float64(cov_b, "cov_b")
    dim = mean_a.shape[0] if mean_a.dim() == 1 else -1
    if dim < 1 or mean_b.shape != (dim,) or cov_a.shape != (dim, dim) or cov_b.shape != (dim, dim):
        raise FlowsolveValueError(f"frechet_distance needs means (d,) and covariances (d, d) of one d, got "
                                  f"{tuple(mean_a.shape)}, {tuple(cov_a.shape)}, {tuple(mean_b.shape)}, "
                                  f"{tuple(cov_b.shape)}")
    root_a = _psd_sqrt(cov_a)
    # tr((A^1/2 B A^1/2)^1/2) is the sum of square roots of that PSD matrix's eigenvalues.
    cross = root_a @ ((cov_b + cov_b.T) / 2) @ root_a
    cross_trace = torch.linalg.eigvalsh((cross + cross.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mean_a - mean_b).square().sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * cross_trace
    return max(float(distance), 0.0)  # round-off can take an exact 0 slightly below


def feature_statistics(features) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance of ``features`` ``(n, d)``, ``n >= 2``, as float64 CPU tensors.

    Args:
        features: ``(n, d)`` tensor or array-like, one row per sample.

    Returns:
        ``(mean (d,), cov (d, d))``.
    """
    features = _as_float64(features, "features")
    if features.dim() != 2 or features.shape[0] < 2:
        raise FlowsolveValueError(f"features must be shaped (n, d) with n >= 2, got {tuple(features.shape)}")
    mean = features.mean(dim=0)
    centred = features - mean
    cov = centred.T @ centred / (features.shape[0] - 1)
    return mean, (cov + cov.T) / 2  # exactly symmetric, whatever the matmul round-off


class SampleQuality:
    """Scores image samples against a classifier's reference statistics.

    ``quality(samples, labels)`` returns ``{"fd", "n"}`` plus, with labels, ``"accuracy"`` and
    ``"per_class_accuracy"``. Compare ``"fd"`` with :meth:`data_floor_fd` at the same ``n``: FD
    is biased upwards at small sample sizes, and real data has a floor too.

    Args:
        classifier: a network with ``features(x) -> (batch, d)`` and ``forward(x) -> logits``.
        reference: the held-out statistics (:class:`ReferenceStatistics`).

    Attributes:
        reference: the :class:`ReferenceStatistics` (split-half FD, data-floor FDs, metadata).
    """

    def __init__(self, classifier: AnimalsClassifier, reference: ReferenceStatistics):
        self.classifier = classifier.eval().requires_grad_(False)
        self.reference = reference

    @classmethod
    def animals(cls) -> SampleQuality:
        """The shipped animal-mnist classifier and its held-out statistics."""
        return cls(*load_classifier())

    def data_floor_fd(self, n: int) -> float | None:
        """The data's own FD at sample size ``n`` (``n`` training images vs the held-out statistics),
        or None where no floor was shipped for that ``n`` (see ``reference.data_floor_fd``)."""
        return self.reference.data_floor_fd.get(int(n))

    def __call__(self, samples: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 256) -> dict:
        """Score ``samples``.

        Args:
            samples: ``(n, 784)`` or ``(n, 1, 28, 28)`` images in ``[-1, 1]``, any float dtype and
                device (the classifier moves to their device and runs in float32); ``n >= 2``.
            labels: optional ``(n,)`` integer classes in ``[0, 10)`` the samples were drawn for.
            batch_size: images per classifier call.

        Returns:
            ``{"fd": float, "n": int}``; with labels also ``"accuracy"`` (fraction classified as
            their label) and ``"per_class_accuracy"`` (10 floats, NaN for classes without samples).
        """
        images = self._images(samples)
        labels = self._labels(labels, images.shape[0])
        device = images.device
        self.classifier.to(device=device, dtype=torch.float32)
        features, predictions = [], []
        with torch.no_grad():
            for batch in images.split(max(int(batch_size), 1)):
                batch_features = self.classifier.features(batch.to(torch.float32))
                features.append(batch_features)
                predictions.append(self.classifier.head(batch_features).argmax(dim=1))
        mean, cov = feature_statistics(torch.cat(features))
        result: dict = {"fd": frechet_distance(mean, cov, self.reference.mean, self.reference.cov),
                        "n": images.shape[0]}
        if labels is not None:
            result.update(_accuracies(torch.cat(predictions).cpu(), labels.cpu()))
        return result

    @staticmethod
    def _images(samples) -> torch.Tensor:
        samples = torch.as_tensor(samples)
        if not samples.is_floating_point():
            raise FlowsolveValueError(f"samples must be floating point, got {samples.dtype}")
        pixels = math.prod(IMAGE_SHAPE)
        if samples.dim() == 2 and samples.shape[1] == pixels:
            samples = samples.reshape(-1, *IMAGE_SHAPE)
        if samples.dim() != 4 or tuple(samples.shape[1:]) != IMAGE_SHAPE:
            raise FlowsolveValueError(f"samples must be shaped (n, {pixels}) or (n, 1, 28, 28), got {tuple(samples.shape)}")
        if samples.shape[0] < 2:
            raise FlowsolveValueError(f"the FD needs at least 2 samples, got {samples.shape[0]}")
        if not torch.isfinite(samples).all():
            raise FlowsolveValueError("samples have non-finite entries (NaN or inf)")
        return samples

    @staticmethod
    def _labels(labels, count: int) -> torch.Tensor | None:
        if labels is None:
            return None
        labels = torch.as_tensor(labels)
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise FlowsolveValueError(f"labels must be integers, got {labels.dtype}")
        if labels.shape != (count,):
            raise FlowsolveValueError(f"labels must be shaped ({count},) like the samples, got {tuple(labels.shape)}")
        if ((labels < 0) | (labels >= NUM_CLASSES)).any():
            raise FlowsolveValueError(f"labels must lie in [0, {NUM_CLASSES}), got {labels.min()}..{labels.max()}")
        return labels


def _accuracies(predictions: torch.Tensor, labels: torch.Tensor) -> dict:
    correct = (predictions == labels).to(torch.float64)
    per_class = [float(correct[labels == c].mean()) if (labels == c).any() else math.nan for c in range(NUM_CLASSES)]
    return {"accuracy": float(correct.mean()), "per_class_accuracy": per_class}
