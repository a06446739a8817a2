"""Train the animal-mnist classifier behind the FD-classifier metric and ship its reference statistics.

Usage::

    python scripts/train_animals_classifier.py [--out FILE] [--epochs E]

Data: the animal-mnist split of ``scripts/train_animals.py`` (its loaders are reused): the
classifier trains on the 9000 training images only; the 1000 held-out images (100 per class)
give its accuracy and the reference statistics.

Recipe: :class:`flowsolve.models.zoo.classifier.AnimalsClassifier`, seed 0, one CPU thread,
batch 128, AdamW (weight decay 1e-4), learning rate 2e-3 with a 100-step linear warmup then
cosine decay to 0, cross-entropy, augmentation: random shifts of up to 2 pixels (padding with
the background value -1). Bit-for-bit reproducible on one machine.

Output (``--out``, default the packaged ``animals-classifier.safetensors``, written atomically):
tensors ``net.*`` (the weights), ``reference.mean`` (64,) and ``reference.cov`` (64, 64) float64
(held-out features, unbiased covariance), ``reference.class_counts`` (10,); string metadata
``held_out_accuracy``, ``split_half_fd`` (each class's held-out images split 50/50 with seed
``HALF_SEED``; FD between the halves), ``data_floor_fd`` (JSON ``{n: FD}``: ``n`` random
training images vs the held-out statistics, mean over ``FLOOR_DRAWS`` draws), ``data_floor_fd_std``,
``split_seed``, ``recipe``, ``train_seconds``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time as clock
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_animals  # noqa: E402

from flowsolve.core.atomic import atomic_write  # noqa: E402
from flowsolve.models.zoo.classifier import NET_PREFIX, NUM_CLASSES, AnimalsClassifier, classifier_weights_path  # noqa: E402
from flowsolve.training.quality import feature_statistics, frechet_distance  # noqa: E402

SEED = 0
EPOCHS = 10
BATCH = 128
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 1e-4
WARMUP = 100
MAX_SHIFT = 2
HALF_SEED = 1
FLOOR_SEED = 2
FLOOR_SIZES = (128, 256, 500, 1000)
FLOOR_DRAWS = 20
RECIPE = (f"AnimalsClassifier (16, 48, 96); seed {SEED}; {{epochs}} epochs of the 9000 training images; batch {BATCH}; "
          f"AdamW lr {LEARNING_RATE:g} (warmup {WARMUP} steps, cosine to 0), weight decay {WEIGHT_DECAY:g}; "
          f"cross-entropy; random shifts up to {MAX_SHIFT} px (pad -1); one CPU thread")


def random_shift(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image shifted by its own random offset in ``[-MAX_SHIFT, MAX_SHIFT]`` pixels (background fills in)."""
    padded = torch.nn.functional.pad(images, (MAX_SHIFT,) * 4, value=-1.0)
    offsets = torch.randint(0, 2 * MAX_SHIFT + 1, (images.shape[0], 2), generator=generator)
    size = images.shape[-1]
    return torch.stack([padded[i, :, dy:dy + size, dx:dx + size] for i, (dy, dx) in enumerate(offsets.tolist())])


def learning_rate(step: int, total: int) -> float:
    if step < WARMUP:
        return LEARNING_RATE * (step + 1) / WARMUP
    return LEARNING_RATE * 0.5 * (1 + math.cos(math.pi * (step - WARMUP) / max(total - WARMUP, 1)))


def train(images: torch.Tensor, labels: torch.Tensor, epochs: int) -> AnimalsClassifier:
    """The classifier trained on ``images``/``labels`` with the module's recipe."""
    torch.manual_seed(SEED)
    net = AnimalsClassifier()
    optimiser = torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    generator = torch.Generator().manual_seed(SEED)
    steps_per_epoch = math.ceil(images.shape[0] / BATCH)
    total, step = epochs * steps_per_epoch, 0
    for epoch in range(epochs):
        order = torch.randperm(images.shape[0], generator=generator)
        running = correct = 0.0
        for batch in order.split(BATCH):
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(step, total)
            logits = net(random_shift(images[batch], generator))
            loss = torch.nn.functional.cross_entropy(logits, labels[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            running += float(loss.detach()) * batch.numel()
            correct += float((logits.argmax(1) == labels[batch]).sum())
            step += 1
        print(f"epoch {epoch + 1}/{epochs}: loss {running / images.shape[0]:.4f}, "
              f"train accuracy (augmented) {correct / images.shape[0]:.4f}", flush=True)
    return net.eval().requires_grad_(False)


@torch.no_grad()
def features_and_predictions(net: AnimalsClassifier, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    features = torch.cat([net.features(batch) for batch in images.split(500)])
    return features, net.head(features).argmax(1)


def split_half_fd(features: torch.Tensor, labels: torch.Tensor) -> float:
    """FD between two halves of ``features``, each class split 50/50 at random (seed ``HALF_SEED``)."""
    generator = torch.Generator().manual_seed(HALF_SEED)
    first, second = [], []
    for c in range(NUM_CLASSES):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        first.append(members[: members.numel() // 2])
        second.append(members[members.numel() // 2:])
    return frechet_distance(*feature_statistics(features[torch.cat(first)]),
                            *feature_statistics(features[torch.cat(second)]))


def data_floor(train_features: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> tuple[dict, dict]:
    """``({n: mean FD}, {n: std FD})`` of ``n`` random training images vs the held-out statistics."""
    generator = torch.Generator().manual_seed(FLOOR_SEED)
    means, stds = {}, {}
    for n in FLOOR_SIZES:
        values = torch.tensor([
            frechet_distance(*feature_statistics(train_features[torch.randperm(train_features.shape[0],
                                                                               generator=generator)[:n]]), mean, cov)
            for _ in range(FLOOR_DRAWS)])
        means[n], stds[n] = float(values.mean()), float(values.std())
    return means, stds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="output file (default: the packaged weights)")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = args.out or Path(str(classifier_weights_path()))

    images, labels = train_animals.load_animals()
    train_index, held_index = train_animals.split_indices(labels)
    start = clock.perf_counter()
    net = train(images[train_index], labels[train_index], args.epochs)
    train_seconds = clock.perf_counter() - start
    print(f"trained in {train_seconds:.1f}s", flush=True)

    held_features, held_predictions = features_and_predictions(net, images[held_index])
    held_labels = labels[held_index]
    accuracy = float((held_predictions == held_labels).double().mean())
    mean, cov = feature_statistics(held_features)
    half_fd = split_half_fd(held_features, held_labels)
    train_features, _ = features_and_predictions(net, images[train_index])
    floor, floor_std = data_floor(train_features, mean, cov)
    print(f"held-out accuracy {accuracy:.4f}; split-half FD (500 vs 500) {half_fd:.4f}", flush=True)
    for n in FLOOR_SIZES:
        print(f"data floor FD at n = {n}: {floor[n]:.4f} +- {floor_std[n]:.4f} ({FLOOR_DRAWS} draws)", flush=True)

    from safetensors.torch import save as safetensors_save

    tensors = {NET_PREFIX + key: value.contiguous().clone() for key, value in net.state_dict().items()}
    tensors.update({"reference.mean": mean, "reference.cov": cov,
                    "reference.class_counts": torch.bincount(held_labels, minlength=NUM_CLASSES)})
    metadata = {
        "held_out_accuracy": f"{accuracy:.4f}", "split_half_fd": f"{half_fd:.6f}",
        "data_floor_fd": json.dumps({str(n): round(floor[n], 6) for n in FLOOR_SIZES}),
        "data_floor_fd_std": json.dumps({str(n): round(floor_std[n], 6) for n in FLOOR_SIZES}),
        "data_floor_draws": str(FLOOR_DRAWS), "half_seed": str(HALF_SEED), "floor_seed": str(FLOOR_SEED),
        "split_seed": str(train_animals.SPLIT_SEED), "held_out_per_class": str(train_animals.HELD_OUT_PER_CLASS),
        "recipe": RECIPE.format(epochs=args.epochs), "train_seconds": f"{train_seconds:.0f}",
        "data": "animal-mnist, pixels scaled to [-1, 1]; features: 64-d penultimate layer",
    }
    atomic_write(out, safetensors_save(tensors, metadata=metadata))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)", flush=True)


if __name__ == "__main__":
    main()
