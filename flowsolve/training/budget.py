"""Sizing a fit to a wall-time budget from the model's measured cost.

A fit spends its time in two places: the dopri5 ground truth (evaluations per path x seconds
per evaluation) and Adam steps (a rollout of ``nfe`` evaluations per path and its backward
pass). On a small model fit's full sizes (1024 + 256 paths, 1000 steps of 32) take a minute; on
an image U-Net on a CPU the ground truth alone takes hours. Given a budget, :func:`plan_paths`
and :func:`plan_steps` shrink whatever the budget cannot pay for and keep the rest at the full
sizes: about half the budget for ground truth, the rest for Adam steps, the batch shrinking
before the number of steps does (a few hundred small steps beat a few large ones).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

import torch

from flowsolve.core.errors import FlowsolveValueError
from flowsolve.models.conditioning import ConditionDistribution, bind
from flowsolve.training.store import DEFAULT_SHARD_SIZE

FULL_SIZES = {"train_trajectories": 1024, "val_trajectories": 256, "iterations": 1000, "batch_size": 32}
GROUND_TRUTH_SHARE = 0.5
# dopri5's evaluations per path before a store has told us (the bundled models take 100-300).
PRIOR_EVALUATIONS_PER_PATH = 250.0
MIN_VAL_TRAJECTORIES, MIN_TRAIN_TRAJECTORIES = 16, 32
MIN_STEPS_BEFORE_SMALLER_BATCHES = 300
MIN_BATCH_SIZE = 2
VALIDATIONS_PER_FIT = 10
DEFAULT_VALIDATE_EVERY = 50
# Models whose evaluation costs more than this per path get ground truth solved in small shards,
# so that a few paths never cost a full default shard of 256.
EXPENSIVE_EVALUATION_SECONDS = 2e-4
SMALL_SHARD_SIZE = 16


def seconds_per_evaluation(model, sample_shape, *, dtype=torch.float32, device="cpu",
                           conditions: ConditionDistribution | None = None, batch: int = 16,
                           repeats: int = 3) -> float:
    """Wall seconds of one field evaluation per path, measured on a batch of ``batch`` paths
    (the median of ``repeats`` calls after a warm-up call)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *sample_shape, generator=generator, dtype=dtype).to(device)
    field = model if conditions is None else bind(model, {
        k: v.to(device) for k, v in conditions.sample(batch, generator).items()})
    t = torch.tensor(0.5, dtype=dtype, device=x.device)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            began = time.perf_counter()
            field(t, x)
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            times.append(time.perf_counter() - began)
    return statistics.median(times[1:]) / batch


def shard_size_for(seconds_per_path_evaluation: float) -> int:
    """Paths per ground-truth shard: the default for cheap models, a small shard for expensive ones."""
    return SMALL_SHARD_SIZE if seconds_per_path_evaluation > EXPENSIVE_EVALUATION_SECONDS else DEFAULT_SHARD_SIZE


def stored_shard_size(directory) -> int | None:
    """The shard size of the store already in ``directory`` (``None``: no store there yet).

    A measured cost decides the shard size of a new store only: an existing one keeps its own,
    so a borderline model does not flip between two stores (whose noise differs) from run to run."""
    if directory is None:
        return None
    manifest = Path(directory) / "manifest.json"
    try:
        return int(json.loads(manifest.read_text())["shard_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def plan_paths(budget_seconds: float, seconds_per_path: float, *, available: int, shard_size: int,
               val_trajectories: int | None = None, train_trajectories: int | None = None) -> tuple[int, int]:
    """Validation and training paths whose ground truth (beyond the ``available`` stored paths)
    takes about ``budget_seconds``; a count that is given is kept."""
    if val_trajectories is not None and train_trajectories is not None:
        return val_trajectories, train_trajectories
    if not (seconds_per_path > 0 and math.isfinite(seconds_per_path)):
        raise FlowsolveValueError(f"seconds_per_path must be positive and finite, got {seconds_per_path!r}")
    affordable = available + int(max(budget_seconds, 0.0) / seconds_per_path)
    affordable = max(shard_size, round(affordable / shard_size) * shard_size)  # whole shards are solved
    if val_trajectories is None:
        val_trajectories = min(FULL_SIZES["val_trajectories"], max(MIN_VAL_TRAJECTORIES, affordable // 5))
    if train_trajectories is None:
        train_trajectories = min(FULL_SIZES["train_trajectories"],
                                 max(MIN_TRAIN_TRAJECTORIES, affordable - val_trajectories))
    return val_trajectories, train_trajectories


def plan_steps(budget_seconds: float, seconds_per_path_step: float, validation_seconds: float, *,
               iterations: int | None = None, batch_size: int | None = None,
               validate_every: int | None = None) -> tuple[int, int, int]:
    """Adam steps, batch size and validation interval that take about ``budget_seconds``, given
    the cost of one path through one step and of one validation; a value that is given is kept."""
    training = max(budget_seconds - (VALIDATIONS_PER_FIT + 1) * validation_seconds, 0.5 * budget_seconds)
    path_steps = max(training, 0.0) / seconds_per_path_step
    if batch_size is None:
        wanted_steps = iterations or MIN_STEPS_BEFORE_SMALLER_BATCHES
        batch_size = 2 ** int(math.log2(max(path_steps / wanted_steps, 1.0)))
        batch_size = min(FULL_SIZES["batch_size"], max(MIN_BATCH_SIZE, batch_size))
    if iterations is None:
        iterations = min(FULL_SIZES["iterations"], max(1, int(path_steps / batch_size)))
    if validate_every is None:
        validate_every = min(DEFAULT_VALIDATE_EVERY, max(1, iterations // VALIDATIONS_PER_FIT))
    return iterations, batch_size, validate_every


class Planner:
    """fit's sizes: the given ones kept, a resumed checkpoint's reused, the rest the full sizes
    or, under a deadline, planned from measured costs (on rank 0, shared with the others)."""

    def __init__(self, sizes: dict, deadline: float | None, store, model, context,
                 evaluation_seconds: float | None = None, saved_settings: dict | None = None):
        self.sizes: dict[str, int | None] = dict(sizes)
        for name, value in self.sizes.items():
            if value is None and saved_settings is not None:  # a resumed fit keeps its first run's plan
                self.sizes[name] = saved_settings[name]
        self.deadline, self.store, self.model, self.context = deadline, store, model, context
        self.started = time.perf_counter()
        self.evaluation_seconds = evaluation_seconds
        self.measured: dict = {}
        self._replan_training = False
        if deadline is None:
            for name, value in {**FULL_SIZES, "validate_every": DEFAULT_VALIDATE_EVERY}.items():
                if self.sizes[name] is None:
                    self.sizes[name] = value

    def _seconds_per_evaluation(self) -> float:
        if self.evaluation_seconds is None:
            store = self.store
            self.evaluation_seconds = seconds_per_evaluation(self.model, store.sample_shape, dtype=store.dtype,
                                                             device=store.device, conditions=store.conditions)
        return self.evaluation_seconds

    def _ground_truth_seconds_left(self) -> float:
        """The ground truth's share of the budget, less what the fit has spent so far."""
        assert self.deadline is not None
        now = time.perf_counter()
        return GROUND_TRUTH_SHARE * (self.deadline - self.started) - (now - self.started)

    def paths(self) -> tuple[int, int]:
        """The validation and training path counts (decided before the ground truth is loaded)."""
        val, train = self.sizes["val_trajectories"], self.sizes["train_trajectories"]
        if val is not None and train is not None:
            return val, train
        assert self.deadline is not None  # without one, every size is set already
        if self.context.is_main:
            store = self.store
            available = store.available()
            evaluations = PRIOR_EVALUATIONS_PER_PATH
            if available:  # the stored shards say what dopri5 takes on this model
                evaluations = float(store.load(min(available, store.key["shard_size"]), progress=False).evaluations)
            seconds_per_path = evaluations * self._seconds_per_evaluation()
            planned = plan_paths(self._ground_truth_seconds_left(), seconds_per_path, available=available, shard_size=store.key["shard_size"],
                                 val_trajectories=self.sizes["val_trajectories"],
                                 train_trajectories=self.sizes["train_trajectories"])
            self.measured.update(seconds_per_evaluation=self.evaluation_seconds, stored_paths=available,
                                 ground_truth_seconds_per_path=seconds_per_path)
            self._replan_training = self.sizes["train_trajectories"] is None
        else:
            planned = None
        val, train = self.context.share(planned, owner=0)
        self.sizes.update(val_trajectories=val, train_trajectories=train)
        return val, train

    def training_paths(self, validation_seconds: float) -> int:
        """The training path count again, from what the validation paths' ground truth really
        cost (``validation_seconds``; dopri5's evaluations per path were a guess before)."""
        train = self.sizes["train_trajectories"]
        assert train is not None
        if not self._replan_training:
            return train
        if self.context.is_main:
            store, val = self.store, self.sizes["val_trajectories"]
            assert val is not None
            shard = store.key["shard_size"]
            self.measured["guessed_train_trajectories"] = train
            solved_until = -(-val // shard) * shard
            solved = solved_until - self.measured["stored_paths"]
            if solved > 0:  # a measurement, not a guess
                seconds_per_path = validation_seconds / solved
                _, train = plan_paths(self._ground_truth_seconds_left(), seconds_per_path, available=max(solved_until, store.available()),
                                      shard_size=shard, val_trajectories=val)
                self.measured["ground_truth_seconds_per_path"] = seconds_per_path
        train = self.context.share(train, owner=0)
        self.sizes["train_trajectories"] = train
        return train

    def steps(self, solver, loss, training, nfe: int) -> dict[str, int]:
        """Every size, the batch, Adam steps and validation interval decided (ground truth loaded)."""
        if any(self.sizes[name] is None for name in ("iterations", "batch_size", "validate_every")):
            self._plan_steps(solver, loss, training, nfe)
        return {name: int(value) for name, value in self.sizes.items() if value is not None}

    def _plan_steps(self, solver, loss, training, nfe: int) -> None:
        assert self.deadline is not None and self.sizes["val_trajectories"] is not None
        if self.context.is_main:
            probe = training.subset(torch.arange(min(4, len(training)), device=training.x0.device))
            began = time.perf_counter()
            loss.backward(solver, probe.field(self.model), probe)
            if probe.x0.device.type == "cuda":
                torch.cuda.synchronize(probe.x0.device)
            seconds_per_path_step = (time.perf_counter() - began) / len(probe)
            for parameter in solver.parameters():
                parameter.grad = None
            validation_seconds = nfe * self.sizes["val_trajectories"] * self._seconds_per_evaluation()
            planned = plan_steps(self.deadline - time.perf_counter(), seconds_per_path_step, validation_seconds,
                                 iterations=self.sizes["iterations"], batch_size=self.sizes["batch_size"],
                                 validate_every=self.sizes["validate_every"])
            self.measured.update(seconds_per_path_step=seconds_per_path_step, validation_seconds=validation_seconds)
        else:
            planned = None
        self.sizes["iterations"], self.sizes["batch_size"], self.sizes["validate_every"] = self.context.share(
            planned, owner=0)
