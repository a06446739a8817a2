"""Train class-conditional U-Nets on animal-mnist (groundwork for bundled convolutional zoo models).

Usage::

    python scripts/train_animals.py --variant {fm-ot,eps-vp} --minutes M --out DIR [--seed S] [--batch B]

Data: the animal-mnist wheel (``pip install --no-deps animal-mnist``: its metadata pulls tensorflow; 10 classes x 1000 28x28 silhouettes,
MIT licence). Its two data files are read directly (its loader module imports tensorflow):
gzip'd pickles of numpy arrays, unpickled with a loader that accepts numpy arrays only.
Pixels 0..255 are scaled to ``[-1, 1]``. A fixed split (seed :data:`SPLIT_SEED`, independent of
``--seed``) holds out 100 images per class for later evaluation; the held-out indices are
written to ``DIR/split.json`` and into the safetensors metadata.

Variants (the network is :class:`flowsolve.models.zoo.unet.ConditionalUNet`, called
``net(x, time, labels)``; ``time`` is always flowsolve's flow time ``t``, 0 = noise, 1 = data):

* ``fm-ot``: flow matching on the OT path ``x_t = (1 - t) x0 + t x1``, ``t ~ U[0, 1]``;
  the network predicts the velocity ``x1 - x0``. Zoo adapter: ``adapt(net, "fm-ot")``.
* ``eps-vp``: DDPM noise prediction with diffusers' default schedule: betas linear from 1e-4
  to 2e-2 over N = 1000 steps, ``abar_k = prod_{j<=k} (1 - beta_j)``,
  ``x_k = sqrt(abar_k) x1 + sqrt(1 - abar_k) eps``, trained at the *discrete* timesteps
  ``k ~ U{0..999}``. The network is called at flow time ``t = 1 - k / (N - 1)`` -- exactly the
  time map of ``flowsolve_diffusers.schedule.DiscreteVP`` (k = 999 is t = 0, k = 0 is t = 1),
  so the zoo adapter is ``adapt(net, "eps", scheduler=DiscreteVP(alphas_cumprod))`` with the
  network called at flow time (no time conversion). :func:`alphas_cumprod` rebuilds the table.

Recipe: fixed seeds; batch 64; Adam, learning rate 5e-4 after a 200-step linear warmup, then
constant (so the run is step-for-step reproducible whatever wall budget stops it); gradient
norm clipped at 1; label dropout 10 % (label replaced by the null label 10); EMA of the weights
with decay ``min(0.999, (1 + step) / (10 + step))``. One CPU thread.

Outputs in ``DIR``: ``checkpoint.pt`` (every ~3 minutes and at the end, written atomically;
a rerun with the same ``DIR`` resumes from it, bit for bit as if uninterrupted),
``loss.csv`` (step, mean loss over the last 25 steps, learning rate, wall seconds),
``split.json``, and at the end ``<variant>.safetensors`` (the EMA weights, with metadata) and
``<variant>-samples.png`` (10 rows, one per class 0..9, 8 samples each, Heun on a uniform
grid, 50 NFE, classifier-free guidance weight 2 in flowsolve's convention
``(1 + w) cond - w uncond``). The wall budget ``--minutes`` covers this invocation including
the final sampling (a reserve for it is estimated from the measured step time).
"""

from __future__ import annotations

import argparse
import copy
import csv
import gzip
import io
import json
import math
import os
import pickle
import sys
import time as clock
from importlib import resources
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import flowsolve  # noqa: E402
from flowsolve.core.atomic import atomic_write  # noqa: E402
from flowsolve.models.zoo.unet import NULL_LABEL, NUM_CLASSES, ConditionalUNet  # noqa: E402

VARIANTS = ("fm-ot", "eps-vp")
SPLIT_SEED = 0
HELD_OUT_PER_CLASS = 100
BATCH = 64
LEARNING_RATE = 5e-4
WARMUP = 200
GRAD_CLIP = 1.0
EMA_DECAY = 0.999
LABEL_DROPOUT = 0.1
NUM_TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 1e-4, 2e-2
LOG_EVERY = 25
CHECKPOINT_SECONDS = 180.0
SAMPLE_SEED = 2024
SAMPLES_PER_CLASS = 8
SAMPLE_NFE = 50  # Heun: 25 steps
GUIDANCE = 2.0


# --- data --------------------------------------------------------------------------------------
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else (the data files are pickles)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} from the animal-mnist data")


def _read_array(name: str) -> np.ndarray:
    try:
        root = resources.files("animal_mnist") / "data" / "Animal_MNIST"
    except ModuleNotFoundError:
        sys.exit("training needs the animal-mnist data: pip install animal-mnist")
    with (root / name).open("rb") as handle:
        return np.asarray(_NumpyOnlyUnpickler(io.BytesIO(gzip.decompress(handle.read()))).load())


def load_animals() -> tuple[torch.Tensor, torch.Tensor]:
    """``(images (10000, 1, 28, 28) float32 in [-1, 1], labels (10000,) int64)``."""
    images = _read_array("animal_data_version_3.gz")
    labels = _read_array("animal_label_version_3.gz")
    if images.shape != (10000, 28, 28) or labels.shape != (10000,):
        raise RuntimeError(f"unexpected animal-mnist shapes {images.shape}, {labels.shape}")
    x = torch.as_tensor(images.astype(np.float32) / 127.5 - 1.0).unsqueeze(1)
    return x, torch.as_tensor(labels.astype(np.int64))


def split_indices(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, held_out)`` index tensors (sorted): ``HELD_OUT_PER_CLASS`` per class held out,
    chosen by a generator seeded with :data:`SPLIT_SEED`."""
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    held = []
    for c in range(NUM_CLASSES):
        members = torch.nonzero(labels == c).flatten()
        held.append(members[torch.randperm(members.numel(), generator=generator)[:HELD_OUT_PER_CLASS]])
    held_out = torch.cat(held).sort().values
    mask = torch.ones(labels.numel(), dtype=torch.bool)
    mask[held_out] = False
    return torch.nonzero(mask).flatten(), held_out


# --- paths -------------------------------------------------------------------------------------
def alphas_cumprod() -> torch.Tensor:
    """The ``(1000,)`` float64 DDPM table of the ``eps-vp`` variant (diffusers' "linear" betas)."""
    betas = torch.linspace(BETA_START, BETA_END, NUM_TRAIN_TIMESTEPS, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


def training_batch(variant: str, x1: torch.Tensor, generator: torch.Generator, table: torch.Tensor):
    """``(x_t, flow time t, regression target)`` for one batch of data ``x1``."""
    x0 = torch.randn(x1.shape, generator=generator)
    batch = x1.shape[0]
    if variant == "fm-ot":
        t = torch.rand(batch, generator=generator)
        column = t[:, None, None, None]
        return (1 - column) * x0 + column * x1, t, x1 - x0
    k = torch.randint(NUM_TRAIN_TIMESTEPS, (batch,), generator=generator)
    abar = table[k].float()[:, None, None, None]
    x_t = abar.sqrt() * x1 + (1 - abar).sqrt() * x0
    t = 1 - k.float() / (NUM_TRAIN_TIMESTEPS - 1)
    return x_t, t, x0


def velocity_field(variant: str, guided: torch.nn.Module):
    """flowsolve's velocity field of a (guided) network of ``variant``."""
    if variant == "fm-ot":
        return flowsolve.adapt(guided, "fm-ot")
    try:
        from flowsolve_diffusers.schedule import DiscreteVP
    except ImportError:
        sys.exit("sampling the eps-vp model needs the flowsolve-diffusers plugin (plugins/flowsolve-diffusers)")
    return flowsolve.adapt(guided, "eps", scheduler=DiscreteVP(alphas_cumprod()))


# --- training ----------------------------------------------------------------------------------
def learning_rate(step: int) -> float:
    return LEARNING_RATE * min(1.0, (step + 1) / WARMUP)


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda stream: torch.save(state, stream))


def sample_grid(variant: str, ema: torch.nn.Module, nfe: int = SAMPLE_NFE) -> torch.Tensor:
    """``(10 * 8, 1, 28, 28)`` samples, class-major, Heun on a uniform grid of ``nfe / 2`` steps."""
    labels = torch.arange(NUM_CLASSES).repeat_interleave(SAMPLES_PER_CLASS)
    guided = flowsolve.ClassifierFreeGuidance(ema, GUIDANCE, labels, torch.tensor([NULL_LABEL]))
    u = velocity_field(variant, guided)
    x = torch.randn(labels.numel(), 1, 28, 28, generator=torch.Generator().manual_seed(SAMPLE_SEED))
    steps = nfe // 2
    grid = torch.linspace(0, 1, steps + 1)
    with torch.no_grad():
        for t0, t1 in zip(grid[:-1], grid[1:]):
            d0 = u(t0, x)
            d1 = u(t1, x + (t1 - t0) * d0)
            x = x + (t1 - t0) * (d0 + d1) / 2
    return x


def write_png(path: Path, images: torch.Tensor, rows: int, columns: int, scale: int = 3, pad: int = 2) -> None:
    from PIL import Image

    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()[:, 0]
    size = 28 + pad
    canvas = np.full((rows * size + pad, columns * size + pad), 128, dtype=np.uint8)
    for index, image in enumerate(pixels):
        r, c = divmod(index, columns)
        canvas[pad + r * size: pad + r * size + 28, pad + c * size: pad + c * size + 28] = image
    picture = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    atomic_write(path, buffer.getvalue())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--minutes", type=float, required=True, help="wall budget of this run, final sampling included")
    parser.add_argument("--out", required=True, help="directory for checkpoint, log, weights and sample grid")
    parser.add_argument("--seed", type=int, default=0, help="training seed (the split does not depend on it)")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in total")
    parser.add_argument("--channels", type=int, nargs=3, default=(32, 64, 128), help="U-Net channels (testing)")
    parser.add_argument("--sample-nfe", type=int, default=SAMPLE_NFE, help="NFE of the final Heun sample grid (even)")
    args = parser.parse_args(argv)
    if args.sample_nfe < 2 or args.sample_nfe % 2:
        parser.error("--sample-nfe must be an even number >= 2")
    start = clock.perf_counter()
    budget = args.minutes * 60
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    images, labels = load_animals()
    train_index, held_out = split_indices(labels)
    split = {"split_seed": SPLIT_SEED, "held_out_per_class": HELD_OUT_PER_CLASS, "held_out": held_out.tolist()}
    atomic_write(out / "split.json", json.dumps(split).encode())
    data, data_labels = images[train_index], labels[train_index]
    table = alphas_cumprod()

    torch.manual_seed(args.seed)
    net = ConditionalUNet(tuple(args.channels))
    ema = copy.deepcopy(net).requires_grad_(False)
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(args.seed + 1)
    config = {"variant": args.variant, "seed": args.seed, "batch": args.batch, "channels": list(args.channels)}
    step = 0
    checkpoint_path, log_path = out / "checkpoint.pt", out / "loss.csv"
    if checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if state["config"] != config:
            sys.exit(f"{checkpoint_path} was written with {state['config']}, not {config}; use another --out")
        net.load_state_dict(state["net"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step = state["step"]
        print(f"resuming {args.variant} from {checkpoint_path} at step {step}", flush=True)
    rows = []
    if log_path.is_file() and step > 0:
        with open(log_path, newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= step]

    def write_log():
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=["step", "loss", "lr", "seconds"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(log_path, text.getvalue().encode())

    def checkpoint():
        save_checkpoint(checkpoint_path, {
            "config": config, "step": step, "net": net.state_dict(), "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(), "generator": generator.get_state()})
        write_log()

    parameters = sum(p.numel() for p in net.parameters())
    print(f"{args.variant}: {data.shape[0]} training / {held_out.numel()} held-out images, "
          f"{parameters} parameters, batch {args.batch}, budget {args.minutes} min", flush=True)
    last_checkpoint = clock.perf_counter()
    running, count = 0.0, 0
    step_seconds = None
    run_start_step, train_start = step, clock.perf_counter()
    while args.max_steps is None or step < args.max_steps:
        now = clock.perf_counter()
        if step > run_start_step:
            step_seconds = (now - train_start) / (step - run_start_step)
            # the final sample grid: (2 x 80 forward passes) x NFE, a forward pass ~ 1/3 of a training sample
            reserve = 30 + 1.5 * step_seconds * args.sample_nfe * 2 * NUM_CLASSES * SAMPLES_PER_CLASS / (3 * args.batch)
            if now - start + step_seconds + reserve > budget:
                break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        pick = torch.randint(data.shape[0], (args.batch,), generator=generator)
        x1, y = data[pick], data_labels[pick]
        drop = torch.rand(args.batch, generator=generator) < LABEL_DROPOUT
        y = torch.where(drop, torch.full_like(y, NULL_LABEL), y)
        x_t, t, target = training_batch(args.variant, x1, generator, table)
        loss = (net(x_t, t, y) - target).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), GRAD_CLIP)
        optimizer.step()
        decay = min(EMA_DECAY, (1 + step) / (10 + step))
        with torch.no_grad():
            for averaged, current in zip(ema.parameters(), net.parameters()):
                averaged.lerp_(current, 1 - decay)
        step += 1
        running, count = running + loss.item(), count + 1
        if step % LOG_EVERY == 0:
            elapsed = clock.perf_counter() - start
            rows.append({"step": step, "loss": f"{running / count:.5f}", "lr": f"{learning_rate(step - 1):.3e}",
                         "seconds": f"{elapsed:.1f}"})
            print(f"  {args.variant} step {step:6d}  loss {running / count:.4f}  "
                  f"{(clock.perf_counter() - train_start) / (step - run_start_step):.2f} s/step  {elapsed:7.1f}s",
                  flush=True)
            running, count = 0.0, 0
        if clock.perf_counter() - last_checkpoint > CHECKPOINT_SECONDS:
            checkpoint()
            last_checkpoint = clock.perf_counter()
    checkpoint()
    print(f"{args.variant}: stopped at step {step} after {clock.perf_counter() - start:.1f}s", flush=True)

    from safetensors.torch import save as safetensors_save

    tensors = {key: value.detach().contiguous().clone() for key, value in ema.state_dict().items()}
    metadata = {
        "variant": args.variant, "steps": str(step), "seed": str(args.seed), "batch": str(args.batch),
        "channels": json.dumps(list(args.channels)), "num_classes": str(NUM_CLASSES), "null_label": str(NULL_LABEL),
        "time": "flow time t (0 = noise, 1 = data)",
        "predicts": "velocity x1 - x0 (FM-OT path)" if args.variant == "fm-ot" else
                    "eps; DDPM linear betas 1e-4..2e-2, N=1000, discrete k, called at t = 1 - k/999",
        "data": "animal-mnist 0.4, pixels scaled to [-1, 1]",
        "split_seed": str(SPLIT_SEED), "held_out": json.dumps(held_out.tolist()),
    }
    weights = out / f"{args.variant}.safetensors"
    atomic_write(weights, safetensors_save(tensors, metadata=metadata))
    print(f"{args.variant}: EMA weights -> {weights}", flush=True)
    sample_start = clock.perf_counter()
    samples = sample_grid(args.variant, ema.eval(), args.sample_nfe)
    grid_path = out / f"{args.variant}-samples.png"
    write_png(grid_path, samples, NUM_CLASSES, SAMPLES_PER_CLASS)
    print(f"{args.variant}: samples (Heun, {args.sample_nfe} NFE, guidance {GUIDANCE}) -> {grid_path} "
          f"in {clock.perf_counter() - sample_start:.1f}s; total {clock.perf_counter() - start:.1f}s", flush=True)


if __name__ == "__main__":
    main()
