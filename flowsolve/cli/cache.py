"""Where the command line keeps ground truth and fit checkpoints: ``$FLOWSOLVE_CACHE``."""

from __future__ import annotations

import os
from pathlib import Path

from flowsolve.cli.model_loading import model_key, sample_shape_of
from flowsolve.cli.options import DEFAULT_DTYPE, ModelOptions


def cache_directory() -> Path:
    """``$FLOWSOLVE_CACHE``, default ``~/.cache/flowsolve``."""
    return Path(os.environ.get("FLOWSOLVE_CACHE", Path.home() / ".cache" / "flowsolve"))


def checkpoint_path(run: str) -> Path:
    """The fit checkpoint of the run named ``run`` (one per model and settings, so a rerun resumes)."""
    return cache_directory() / "checkpoints" / f"{run}.ckpt"


def trajectory_store(model, seed: int, options: ModelOptions | None = None):
    """The cached ground truth of ``model`` with noise ``seed`` (0: fitting, 1: held-out evaluation).

    Args:
        model: the velocity field.
        seed: the noise seed, part of the store's directory name.
        options: the shape, device and dtype to run at (default: the model's shape, cpu, float32).
    """
    import torch

    from flowsolve.models.conditioning import distribution_of
    from flowsolve.training import budget, distributed
    from flowsolve.training.store import GroundTruthStore

    options = options or ModelOptions()
    shape, device = sample_shape_of(model, options), options.device or "cpu"
    # float32 stores with full shards keep their old directory names; the others get their own.
    precision = "" if (options.dtype or DEFAULT_DTYPE) == DEFAULT_DTYPE else f"-{options.dtype}"

    def directory_for(shard_size: int) -> Path:
        shards = "" if shard_size == budget.DEFAULT_SHARD_SIZE else f"-shard{shard_size}"
        return cache_directory() / "stores" / f"{model_key(model, options)}{precision}{shards}-seed{seed}"

    # An existing store is reused; a new one for an expensive model gets small shards (a few
    # paths never cost 256 of them). Under torchrun rank 0 decides for all ranks.
    context = distributed.setup(torch.device(device))
    shard_size = None
    if context.is_main:
        existing = [size for size in (budget.DEFAULT_SHARD_SIZE, budget.SMALL_SHARD_SIZE)
                    if budget.stored_shard_size(directory_for(size)) == size]
        shard_size = existing[0] if existing else budget.shard_size_for(budget.seconds_per_evaluation(
            model, shape, dtype=options.torch_dtype, device=device, conditions=distribution_of(model)))
    shard_size = context.share(shard_size, owner=0)
    directory = directory_for(shard_size)
    return GroundTruthStore(directory, model, sample_shape=shape, dtype=options.torch_dtype, device=device, seed=seed,
                            shard_size=shard_size)
