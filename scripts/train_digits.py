"""Train the bundled digits models (flowsolve.zoo) and measure their sample quality.

Usage::

    python scripts/train_digits.py [--model NAME] [--steps N] [--seed S] [--out DIR] [--evaluate-only]

Trains on scikit-learn's 8x8 digits (pixels 0..16 scaled to [-1, 1]) on one CPU thread;
deterministic for a seed, so the defaults reproduce the weights shipped in
``flowsolve/zoo/weights`` (bit for bit with the same torch build and CPU). A fixed split
keeps 297 of the 1797 images out of training to measure sample quality: samples are drawn
with RK4 at 100 NFE and compared with the training and held-out images by pixel statistics,
nearest-neighbour distances (per-sample RMS over all non-batch dimensions) and a logistic-regression digit
classifier. Needs scikit-learn (``pip install flowsolve[train]``).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import math
import os
import pathlib
import sys
import time as clock

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import flowsolve  # noqa: E402
from flowsolve import schedulers, zoo  # noqa: E402
from flowsolve.core.fingerprint import model_fingerprint  # noqa: E402

HELD_OUT = 297
SPLIT_SEED = 0
EVAL_SEED = 2024
EVAL_SAMPLES = 1500
EVAL_NFE = 100
BATCH = 128
LEARNING_RATE = 3e-3
WARMUP = 200
EMA_DECAY = 0.999
S_MIN = 1e-3  # smallest diffusion time the eps-vp model trains on (matches its TimeClamp)
DEFAULT_STEPS = 32000


def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(train, held_out, train_labels, held_out_labels)``: float32 images ``(n, 64)`` in
    ``[-1, 1]`` and their digit labels; the split is fixed (independent of ``--seed``)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("training needs scikit-learn: pip install 'flowsolve[train]' (or pip install scikit-learn)")
    digits = load_digits()
    images = torch.as_tensor(digits.data, dtype=torch.float32) / 8 - 1
    labels = torch.as_tensor(digits.target)
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(SPLIT_SEED))
    train, held_out = order[HELD_OUT:], order[:HELD_OUT]
    return images[train], images[held_out], labels[train], labels[held_out]


def training_batch(kind: str, x1: torch.Tensor, generator: torch.Generator):
    """``(x_t, network time, regression target)`` for one batch of data ``x1``."""
    x0 = torch.randn(x1.shape, generator=generator)
    uniform = torch.rand(x1.shape[0], generator=generator)
    if kind in ("fm-ot", "fm-cs"):
        scheduler = schedulers.FMOT() if kind == "fm-ot" else schedulers.Cosine()
        t = uniform
        column = t[:, None]
        x_t = scheduler.sigma(column) * x0 + scheduler.alpha(column) * x1
        target = scheduler.d_sigma(column) * x0 + scheduler.d_alpha(column) * x1
        return x_t, t, target
    if kind == "eps-vp":
        s = S_MIN + (1 - S_MIN) * uniform
        column = (1 - s)[:, None]
        scheduler = schedulers.VP()
        x_t = scheduler.sigma(column) * x0 + scheduler.alpha(column) * x1
        return x_t, s, x0
    raise ValueError(f"no training recipe for adapter kind {kind!r}")


def learning_rate(step: int, steps: int) -> float:
    if step < WARMUP:
        return LEARNING_RATE * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(steps - WARMUP, 1)
    return LEARNING_RATE * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(name: str, data: torch.Tensor, steps: int, seed: int) -> tuple[dict, float]:
    """Train model ``name``; returns the EMA weights and the final smoothed loss."""
    kind = zoo.ZOO[name].kind
    torch.manual_seed(seed)
    net = zoo.new_network(name)
    ema = copy.deepcopy(net).requires_grad_(False)
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(seed + 1)
    report_every = max(steps // 20, 1)
    running, count, last = 0.0, 0, float("nan")
    start = clock.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps)
        x1 = data[torch.randint(data.shape[0], (BATCH,), generator=generator)]
        x_t, time, target = training_batch(kind, x1, generator)
        loss = (net(x_t, time) - target).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        decay = min(EMA_DECAY, (1 + step) / (10 + step))
        with torch.no_grad():
            for averaged, current in zip(ema.parameters(), net.parameters()):
                averaged.lerp_(current, 1 - decay)
        running, count = running + loss.item(), count + 1
        if (step + 1) % report_every == 0 or step + 1 == steps:
            last = running / count
            print(f"  {name} step {step + 1:6d}/{steps}  loss {last:.4f}  "
                  f"lr {learning_rate(step, steps):.2e}  {clock.perf_counter() - start:6.1f}s", flush=True)
            running, count = 0.0, 0
    state = {key: value.detach().clone().contiguous() for key, value in ema.state_dict().items()}
    return state, last


def nearest_distances(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per-query RMS distance (per-sample RMS over all non-batch dimensions) to its nearest reference."""
    squared = torch.cdist(queries.double(), references.double()).square() / queries.shape[1]
    return squared.min(dim=1).values.sqrt()


def sample(name: str, state: dict, count: int = EVAL_SAMPLES, nfe: int = EVAL_NFE) -> torch.Tensor:
    net = zoo.new_network(name)
    net.load_state_dict(state)
    field = zoo.velocity_field(name, net.eval().requires_grad_(False))
    x0 = torch.randn(count, 64, generator=torch.Generator().manual_seed(EVAL_SEED))
    with torch.no_grad():
        return flowsolve.RK4().sample(field, x0, nfe=nfe)


def quality(samples: torch.Tensor, train_data: torch.Tensor, held_out: torch.Tensor, classifier) -> dict:
    """Sample-quality figures; the ``*_ref`` entries are the same figure for the real held-out digits.

    Nearest-neighbour distances use the per-sample RMS norm. ``nn_sample_to_train`` well above its
    reference means poor samples, well below it (with many ``near_copies``) memorised ones;
    ``nn_heldout_to_samples`` measures how well the samples cover unseen digits.
    """
    held_to_train = nearest_distances(held_out, train_data)
    probabilities = torch.as_tensor(classifier.predict_proba(samples.clamp(-1, 1).numpy()))
    held_probabilities = torch.as_tensor(classifier.predict_proba(held_out.numpy()))

    def class_spread(p):
        share = torch.bincount(p.argmax(1), minlength=10).double() / p.shape[0]
        return float(torch.exp(-(share * share.clamp_min(1e-12).log()).sum()))

    return {
        "pixel_mean": float(samples.mean()), "pixel_mean_ref": float(held_out.mean()),
        "pixel_std": float(samples.std()), "pixel_std_ref": float(held_out.std()),
        "per_pixel_mean_rms_diff": float((samples.mean(0) - train_data.mean(0)).square().mean().sqrt()),
        "per_pixel_mean_rms_diff_ref": float((held_out.mean(0) - train_data.mean(0)).square().mean().sqrt()),
        "outside_[-1.1,1.1]": float((samples.abs() > 1.1).double().mean()),
        "nn_sample_to_train": float(nearest_distances(samples, train_data).mean()),
        "nn_sample_to_train_ref": float(held_to_train.mean()),
        "near_copies_(nn<0.1)": float((nearest_distances(samples, train_data) < 0.1).double().mean()),
        "near_copies_(nn<0.1)_ref": float((held_to_train < 0.1).double().mean()),
        # as many samples as training images, so that both sides search equally large sets
        "nn_heldout_to_samples": float(nearest_distances(held_out, samples[: train_data.shape[0]]).mean()),
        "nn_heldout_to_samples_ref": float(held_to_train.mean()),
        "classifier_confidence": float(probabilities.max(1).values.mean()),
        "classifier_confidence_ref": float(held_probabilities.max(1).values.mean()),
        "effective_classes": class_spread(probabilities), "effective_classes_ref": class_spread(held_probabilities),
    }


def digit_classifier(train_data: torch.Tensor, train_labels: torch.Tensor):
    """A logistic-regression digit classifier (about 96 % accurate on the held-out digits)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000).fit(train_data.numpy(), train_labels.numpy())


def file_sha256(path) -> str:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()[:16]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=zoo.MODEL_NAMES, action="append",
                        help="model to train (repeatable; default: all three)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"optimiser steps (default {DEFAULT_STEPS})")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0: the shipped weights)")
    parser.add_argument("--out", default=None, help="directory for NAME.pt (default: flowsolve/zoo/weights)")
    parser.add_argument("--evaluate-only", action="store_true", help="measure the existing weights, do not train")
    parser.add_argument("--no-evaluate", action="store_true", help="skip the sample-quality figures")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be positive, got {args.steps}")
    torch.set_num_threads(1)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(zoo.__file__)), "weights")
    os.makedirs(out, exist_ok=True)
    train_data, held_out, train_labels, held_out_labels = digits_split()
    classifier = None if args.no_evaluate else digit_classifier(train_data, train_labels)
    if classifier is not None:
        accuracy = classifier.score(held_out.numpy(), held_out_labels.numpy())
        print(f"digit classifier: {accuracy:.1%} accurate on the held-out digits")
    print(f"digits: {train_data.shape[0]} training, {held_out.shape[0]} held-out images; "
          f"{sum(p.numel() for p in zoo.new_network(zoo.MODEL_NAMES[0]).parameters())} parameters per network")
    for name in args.model or zoo.MODEL_NAMES:
        path = os.path.join(out, f"{name}.pt")
        if args.evaluate_only:
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            print(f"training {name} ({zoo.ZOO[name].kind}), {args.steps} steps, seed {args.seed}", flush=True)
            start = clock.perf_counter()
            state, final = train(name, train_data, args.steps, args.seed)
            elapsed = clock.perf_counter() - start
            torch.save(state, path)
            print(f"{name}: trained in {elapsed:.1f}s, final loss {final:.4f}")
        net = zoo.new_network(name)
        net.load_state_dict(state)
        fingerprint = model_fingerprint(zoo.velocity_field(name, net), (64,), torch.float32, "cpu")
        print(f"{name}: {path} ({os.path.getsize(path)} bytes, sha256 {file_sha256(path)}, "
              f"model fingerprint {fingerprint})")
        if classifier is not None:
            start = clock.perf_counter()
            figures = quality(sample(name, state), train_data, held_out, classifier)
            print(f"{name}: sample quality (RK4, {EVAL_NFE} NFE, {EVAL_SAMPLES} samples, "
                  f"{clock.perf_counter() - start:.1f}s); ref = real held-out digits")
            for key, value in figures.items():
                if not key.endswith("_ref"):
                    ref = figures.get(f"{key}_ref")
                    print(f"    {key:28s} {value:9.4f}" + ("" if ref is None else f"   ref {ref:9.4f}"))


if __name__ == "__main__":
    main()
