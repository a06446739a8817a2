"""The FD-classifier sample-quality metric (flowsolve.training.quality) and its shipped classifier."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest
import scipy.linalg
import torch

from flowsolve.core.errors import FlowsolveFileNotFoundError, FlowsolveValueError
from flowsolve.models.zoo import classifier as classifier_module
from flowsolve.models.zoo.classifier import ReferenceStatistics, load_classifier
from flowsolve.training.quality import SampleQuality, feature_statistics, frechet_distance

FLOOR_SIZES = (128, 256, 500, 1000)


def random_spd(dim: int, seed: int, rank: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    factor = rng.standard_normal((dim, rank or dim))
    return factor @ factor.T / dim + (0 if rank else 0.1 * np.eye(dim))


@pytest.fixture(scope="module")
def shipped():
    return load_classifier()


@pytest.fixture(scope="module")
def quality(shipped):
    return SampleQuality(*shipped)


def balanced_labels(n: int) -> torch.Tensor:
    return torch.arange(n) % 10


# --- frechet_distance and feature_statistics -------------------------------------------------------
def test_fd_of_diagonal_gaussians_matches_closed_form():
    rng = np.random.default_rng(0)
    var_a, var_b = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    mean_a, mean_b = rng.standard_normal(16), rng.standard_normal(16)
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert frechet_distance(mean_a, np.diag(var_a), mean_b, np.diag(var_b)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("dim", [3, 20, 64])
def test_fd_matches_scipy_sqrtm(dim):
    cov_a, cov_b = random_spd(dim, 1), random_spd(dim, 2)
    mean_a, mean_b = np.full(dim, 0.3), np.linspace(-1, 1, dim)
    cross = scipy.linalg.sqrtm(cov_a @ cov_b).real
    expected = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * cross)
    assert frechet_distance(torch.tensor(mean_a), torch.tensor(cov_a), mean_b, cov_b) == pytest.approx(expected, rel=1e-8)


def test_fd_of_a_gaussian_with_itself_is_zero_and_fd_is_symmetric():
    cov_a, cov_b = random_spd(64, 3), random_spd(64, 4, rank=10)  # cov_b singular
    mean = np.arange(64.0) / 64
    assert frechet_distance(mean, cov_a, mean, cov_a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(mean, cov_b, mean, cov_b) == pytest.approx(0.0, abs=1e-9)
    cov_c = random_spd(64, 5)
    forward, backward = frechet_distance(mean, cov_a, 0 * mean, cov_c), frechet_distance(0 * mean, cov_c, mean, cov_a)
    assert forward > 1 and forward == pytest.approx(backward, rel=1e-10)
    # a singular covariance's square root amplifies round-off (sqrt of ~1e-16 eigenvalues): looser
    forward, backward = frechet_distance(mean, cov_a, 0 * mean, cov_b), frechet_distance(0 * mean, cov_b, mean, cov_a)
    assert forward > 1 and forward == pytest.approx(backward, rel=1e-7)


def test_fd_rejects_mismatched_shapes_and_non_finite_values():
    with pytest.raises(FlowsolveValueError, match="covariances"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(FlowsolveValueError, match="covariances"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(FlowsolveValueError, match="non-finite"):
        frechet_distance(np.zeros(2), np.array([[1.0, 0.0], [0.0, np.nan]]), np.zeros(2), np.eye(2))


def test_feature_statistics_match_numpy():
    features = np.random.default_rng(5).standard_normal((37, 6)) * np.arange(1, 7) + 2
    mean, cov = feature_statistics(torch.tensor(features, dtype=torch.float32))
    assert mean.dtype == cov.dtype == torch.float64
    np.testing.assert_allclose(mean.numpy(), features.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(cov.numpy(), np.cov(features, rowvar=False), rtol=1e-5, atol=1e-6)
    with pytest.raises(FlowsolveValueError, match="n >= 2"):
        feature_statistics(features[:1])


# --- the shipped classifier and statistics --------------------------------------------------------
def test_shipped_reference_statistics(shipped):
    net, reference = shipped
    assert isinstance(reference, ReferenceStatistics) and not net.training
    assert not any(p.requires_grad for p in net.parameters())
    assert 100_000 <= sum(p.numel() for p in net.parameters()) <= 400_000
    assert reference.mean.shape == (64,) and reference.cov.shape == (64, 64)
    assert reference.mean.dtype == reference.cov.dtype == torch.float64
    assert torch.isfinite(reference.mean).all() and torch.isfinite(reference.cov).all()
    assert torch.equal(reference.cov, reference.cov.T)
    assert torch.linalg.eigvalsh(reference.cov).min() > -1e-10
    assert reference.class_counts.tolist() == [100] * 10
    assert 0.95 <= reference.held_out_accuracy <= 1 and reference.split_half_fd > 0
    assert sorted(reference.data_floor_fd) == list(FLOOR_SIZES)
    assert all(value > 0 for value in reference.data_floor_fd.values())
    assert reference.data_floor_fd[128] > reference.data_floor_fd[1000]  # FD is biased upwards at small n
    assert reference.metadata["split_seed"] == "0" and "AdamW" in reference.metadata["recipe"]


def test_missing_weights_name_the_script(monkeypatch, tmp_path):
    monkeypatch.setattr(classifier_module, "classifier_weights_path", lambda: tmp_path / "absent.safetensors")
    with pytest.raises(FlowsolveFileNotFoundError, match="scripts/train_animals_classifier.py"):
        load_classifier()


# --- SampleQuality --------------------------------------------------------------------------------
def test_noise_scores_far_from_the_data_with_chance_accuracy(quality):
    noise = torch.rand(128, 784, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scores = quality(noise, balanced_labels(128))
    assert scores["n"] == 128
    assert scores["fd"] > 10 * quality.data_floor_fd(128)
    # noise carries no label information, so balanced labels are hit about one time in ten
    assert abs(scores["accuracy"] - 0.1) < 0.06
    assert quality.data_floor_fd(300) is None


def test_fd_grows_as_samples_move_away_from_the_reference(shipped):
    net, reference = shipped
    generator = torch.Generator().manual_seed(1)

    def draw(shift):  # blurred noise images, shifted in brightness
        images = torch.nn.functional.avg_pool2d(torch.randn(128, 1, 28, 28, generator=generator), 3, 1, 1)
        return (images + shift).clamp(-1, 1)

    mean, cov = feature_statistics(net.features(draw(0.0)))
    quality = SampleQuality(net, attrs.evolve(reference, mean=mean, cov=cov))
    fds = [quality(draw(shift))["fd"] for shift in (0.0, 0.2, 0.5)]
    assert fds[0] < fds[1] < fds[2]


def test_fd_and_accuracy_match_an_independent_computation(quality, shipped):
    net = shipped[0]
    images = torch.tanh(2 * torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(2)))
    with torch.no_grad():
        features = net.features(images).double().numpy()
        predictions = net(images).argmax(1)
    mean, cov = features.mean(axis=0), np.cov(features, rowvar=False)
    ref_mean, ref_cov = quality.reference.mean.numpy(), quality.reference.cov.numpy()
    expected = np.sum((mean - ref_mean) ** 2) + np.trace(cov + ref_cov - 2 * scipy.linalg.sqrtm(cov @ ref_cov).real)

    labels = predictions.clone()
    labels[::2] = (predictions[::2] + 1) % 10  # every other label wrong
    scores = quality(images, labels, batch_size=5)
    assert scores["fd"] == pytest.approx(expected, rel=1e-4)
    assert scores["accuracy"] == pytest.approx(0.5)
    for c in range(10):
        members = labels == c
        hits = (predictions[members] == c).double().mean().item() if members.any() else math.nan
        assert scores["per_class_accuracy"][c] == pytest.approx(hits, nan_ok=True)
    assert quality(images, predictions)["accuracy"] == 1.0


def test_layouts_dtypes_and_batch_sizes_agree(quality, device):
    images = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(3)) * 2 - 1
    reference = quality(images, balanced_labels(40))
    flat64 = quality(images.reshape(40, 784).double().to(device), balanced_labels(40).to(device), batch_size=7)
    assert flat64["fd"] == pytest.approx(reference["fd"], rel=1e-4)
    assert flat64["accuracy"] == reference["accuracy"]
    few = quality(images[:3], torch.tensor([0, 0, 1]))
    assert [math.isnan(a) for a in few["per_class_accuracy"]] == [False, False] + [True] * 8


@pytest.mark.parametrize("samples, labels, message", [
    (torch.zeros(4, 28, 28), None, "shaped"),
    (torch.zeros(4, 3, 28, 28), None, "shaped"),
    (torch.zeros(1, 784), None, "at least 2"),
    (torch.full((4, 784), math.nan), None, "non-finite"),
    (torch.zeros(4, 784, dtype=torch.int64), None, "floating point"),
    (torch.zeros(4, 784), torch.zeros(3, dtype=torch.int64), "shaped"),
    (torch.zeros(4, 784), torch.tensor([0, 1, 2, 10]), r"\[0, 10\)"),
    (torch.zeros(4, 784), torch.tensor([0, -1, 2, 3]), r"\[0, 10\)"),
    (torch.zeros(4, 784), torch.zeros(4), "integers"),
])
def test_bad_inputs_are_rejected_clearly(quality, samples, labels, message):
    with pytest.raises(FlowsolveValueError, match=message):
        quality(samples, labels)


# --- against the data (only where the animal-mnist package is installed) --------------------------
@pytest.mark.skipif(importlib.util.find_spec("animal_mnist") is None, reason="needs the animal-mnist data")
def test_classifier_reproduces_its_shipped_held_out_numbers(quality):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import train_animals

    images, labels = train_animals.load_animals()
    _, held_out = train_animals.split_indices(labels)
    scores = quality(images[held_out], labels[held_out])
    assert scores["accuracy"] == pytest.approx(quality.reference.held_out_accuracy, abs=1e-4)
    assert scores["fd"] < 1e-6  # the held-out images are the reference
