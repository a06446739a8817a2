"""Fitting a bespoke solver to one model (Algorithm 3)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import numbers
import time
from pathlib import Path
from typing import Any

import torch

from flowsolve._version import __version__
from flowsolve.core.errors import (
    FitDivergedError,
    FlowsolveTypeError,
    FlowsolveValueError,
)
from flowsolve.core.field import NonFiniteVelocityError
from flowsolve.core.fingerprint import tensor_fingerprint
from flowsolve.models.conditioning import ConditionDistribution, distribution_of
from flowsolve.core.solver_file import atomic_torch_save
from flowsolve.solvers.module import SolverModule
from flowsolve.training import budget, distributed
from flowsolve.training.ground_truth import (
    DEFAULT_ATOL,
    DEFAULT_MAX_STEP,
    DEFAULT_RTOL,
    GroundTruth,
    check_tolerances,
    solve_reference,
)
from flowsolve.training.losses import RMSE, Loss, RMSEBound
from flowsolve.training.metrics import error_sums, scores, scores_from_sums
from flowsolve.training.progress import Progress
from flowsolve.training.store import GroundTruthStore

CHECKPOINT_FORMAT = "flowsolve.fit-checkpoint"  # unchanged since format 1: old checkpoints resume

def _cosine(f: float) -> float:
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(f, 1.0)))


WARMUP_FRACTION = 0.1


def _warmup_cosine(f: float) -> float:
    if f < WARMUP_FRACTION:
        return (f + 1 / 64) / (WARMUP_FRACTION + 1 / 64)
    return _cosine((f - WARMUP_FRACTION) / (1 - WARMUP_FRACTION))


# Learning-rate factor at fraction f of the iterations: constant; a cosine decay to 5% (the last
# steps settle instead of rattling at the full step size); or the same after a linear warm-up
# over the first 10% (Adam's first steps move every parameter by about lr whatever its
# gradient, before its moment estimates mean anything).
LR_SCHEDULES = {
    "constant": lambda f: 1.0,
    "cosine": _cosine,
    "warmup-cosine": _warmup_cosine,
}


def evaluate(solver, u, reference, *, batch_size: int = 1024) -> dict:
    """RMSE and PSNR of ``solver`` against ground truth.

    Args:
        solver: a :class:`~flowsolve.ParametricSolver`, or a :class:`~flowsolve.BaseSolver`
            paired with ``nfe`` as ``(base, nfe)``.
        u: the velocity field.
        reference: a :class:`~flowsolve.GroundTruth` (or a :class:`~flowsolve.GroundTruthStore`,
            whose first 256 paths are used: for a held-out score give a store with another
            ``seed`` than the fit's, whose first paths are its validation set), or a noise
            tensor ``x0`` (solved here with dopri5).

    Returns:
        ``{"rmse", "psnr", "nfe"}``; RMSE is the mean per-sample RMS error, PSNR uses range 2.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise FlowsolveValueError(f"batch_size must be a positive int (samples per solver call), got {batch_size!r}")
    if isinstance(reference, GroundTruthStore):
        reference = reference.load(256)
    if not isinstance(reference, GroundTruth):
        if distribution_of(u) is not None:
            raise FlowsolveValueError("a conditional model is evaluated on ground truth that carries its conditions: "
                                      "pass a GroundTruth or GroundTruthStore, not bare noise")
        x1 = solve_reference(u, reference, rtol=DEFAULT_RTOL * 1e-2, atol=DEFAULT_ATOL * 1e-2)
        reference = GroundTruth(reference, torch.zeros(reference.shape[0], 1), x1[:, None], x1[:, None])
    if isinstance(solver, tuple):
        base, nfe = solver
        run = lambda field, x: base.sample(field, x, nfe)
    else:
        nfe = solver.nfe
        run = lambda field, x: solver.sample(field, x)
    with torch.no_grad():
        chunks = [reference.subset(slice(i, i + batch_size)) for i in range(0, len(reference), batch_size)]
        outputs = torch.cat([run(chunk.field(u), chunk.x0) for chunk in chunks])
    return {**scores(outputs, reference.x1), "nfe": nfe}


def _settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def fit(
    family,
    model,
    nfe: int,
    *,
    loss: Loss | None = None,
    L_tau: float | None = None,
    iterations: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    train_trajectories: int | None = None,
    val_trajectories: int | None = None,
    validate_every: int | None = None,
    seed: int = 0,
    noise_seed: int = 0,
    device=None,
    dtype: torch.dtype | None = None,
    sample_shape=None,
    store=None,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    max_step: float | None = DEFAULT_MAX_STEP,
    checkpoint=None,
    init=None,
    progress: bool | None = None,
    conditions: ConditionDistribution | None = None,
    max_minutes: float | None = None,
    lr_schedule: str | None = None,
    autocast: torch.dtype | None = None,
):
    """Fit ``family.at(nfe)`` to ``model`` (see :meth:`ParametricFamily.fit`)."""
    called = time.perf_counter()
    # Every number is checked before any ground truth is solved, so a typo costs nothing.
    given = {"iterations": iterations, "batch_size": batch_size, "train_trajectories": train_trajectories,
             "val_trajectories": val_trajectories, "validate_every": validate_every}
    for name, value in given.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise FlowsolveValueError(f"{name} must be a positive int, got {value!r}")
    for name, value in (("seed", seed), ("noise_seed", noise_seed)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise FlowsolveValueError(f"{name} must be an int, got {value!r}")
    if lr_schedule is None:
        lr_schedule = family.default_lr_schedule
    if lr_schedule not in LR_SCHEDULES:
        raise FlowsolveValueError(f"lr_schedule must be one of {sorted(LR_SCHEDULES)}, got {lr_schedule!r}")
    if max_minutes is not None and (isinstance(max_minutes, bool) or not isinstance(max_minutes, numbers.Real)
                                    or not (math.isfinite(max_minutes) and max_minutes > 0)):
        raise FlowsolveValueError(f"max_minutes must be a positive number of minutes (or None), got {max_minutes!r}")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0)):
        raise FlowsolveValueError(f"lr must be a positive finite number (Adam's step size, e.g. 2e-3), got {lr!r}")
    if L_tau is not None and (isinstance(L_tau, bool) or not isinstance(L_tau, numbers.Real)
                              or not (math.isfinite(L_tau) and L_tau >= 0)):
        raise FlowsolveValueError(
            f"L_tau must be a finite non-negative number (the assumed Lipschitz constant of the model, e.g. 1.0), "
            f"got {L_tau!r}"
        )
    check_tolerances(rtol, atol, max_step)
    if autocast not in AUTOCAST_DTYPES:
        raise FlowsolveValueError(f"autocast must be torch.bfloat16, torch.float16 or None, got {autocast!r}")
    candidates = list(init) if isinstance(init, (list, tuple)) else [init]
    if not candidates:
        raise FlowsolveValueError("init is an empty list: give one start, or several to choose from on validation")
    starts = [family.at(nfe, init=candidate, model=model) for candidate in candidates]  # a bad name fails here
    solver = starts[0]
    loss = _resolve_loss(loss, L_tau, solver)
    device = torch.device(device or _model_device(model))
    dtype = dtype or _model_dtype(model)
    context = distributed.setup(device)
    if not context.is_main:
        progress = False
    for start in starts:
        start.to(device)

    if conditions is not None and not callable(getattr(model, "bind", None)):
        raise FlowsolveTypeError(f"conditions were given but {type(model).__name__} takes none: adapt a "
                                 "flowsolve.ClassifierFreeGuidance (or a field with bind(conditions))")
    deadline = None if max_minutes is None else called + 60 * max_minutes
    evaluation_seconds = None
    if not isinstance(store, GroundTruthStore):
        shape = sample_shape if sample_shape is not None else getattr(model, "sample_shape", None)
        shard_size = context.share(budget.stored_shard_size(store), owner=0)
        if shard_size is None:
            shard_size = budget.DEFAULT_SHARD_SIZE
            if deadline is not None and shape is not None:  # a budgeted fit: small shards for an expensive model
                evaluation_seconds = context.share(budget.seconds_per_evaluation(
                    model, shape, dtype=dtype, device=device,
                    conditions=conditions if conditions is not None else distribution_of(model)), owner=0)
                shard_size = budget.shard_size_for(evaluation_seconds)
        store = GroundTruthStore(store, model, sample_shape=sample_shape, dtype=dtype, device=device, seed=noise_seed,
                                rtol=rtol, atol=atol, max_step=max_step, conditions=conditions, shard_size=shard_size)
    elif conditions is not None and store.key.get("conditions") != conditions.to_dict():
        raise FlowsolveValueError(f"the store draws conditions {store.key.get('conditions')}, not the requested "
                                  f"{conditions.to_dict()}: build the store with conditions=, or leave them out here")
    checkpoint = None if checkpoint is None else Path(checkpoint)
    # Rank 0 decides whether to resume and hands its checkpoint to the others (whose disks may differ).
    saved = context.share(_read_checkpoint(checkpoint) if checkpoint is not None and checkpoint.exists() else None,
                          owner=0)
    plan = budget.Planner(given, deadline, store, model, context, evaluation_seconds,
                          saved_settings=None if saved is None else json.loads(saved["settings"]))
    val_trajectories, _ = plan.paths()
    started = time.perf_counter()
    validation = store.load(val_trajectories, device=device, progress=progress)
    validation_seconds = time.perf_counter() - started
    network_precision = _network_precision(autocast, device)
    start_scores = None
    if len(starts) > 1:  # several starts: the one with the lowest validation RMSE
        with torch.no_grad(), network_precision():
            scored = [(_validation_metrics(start, model, validation, context)["rmse"], rank)
                      for rank, start in enumerate(starts)]
        solver = starts[min(scored)[1]]
        start_scores = {_init_label(candidate): rmse for (rmse, _), candidate in zip(scored, candidates)}
    train_trajectories = plan.training_paths(validation_seconds)
    started = time.perf_counter()
    training = store.load(train_trajectories, start=val_trajectories, device=device, progress=progress)
    ground_truth_seconds = validation_seconds + time.perf_counter() - started
    with network_precision():
        sizes = plan.steps(solver, loss, training, nfe)
    if sizes["batch_size"] % context.world:
        raise FlowsolveValueError(f"batch_size={sizes['batch_size']} must be a multiple of the number of processes "
                                  f"({context.world})")
    lr = float(lr) if lr is not None else default_lr(family, sizes["batch_size"])

    settings = {
        "family": family.to_dict(),
        "nfe": nfe, "loss": loss.to_dict(), "iterations": sizes["iterations"], "batch_size": sizes["batch_size"],
        "lr": lr, "train_trajectories": sizes["train_trajectories"], "val_trajectories": sizes["val_trajectories"],
        "validate_every": sizes["validate_every"], "seed": seed, "store": store.key,
        **({} if lr_schedule == "constant" else {"lr_schedule": lr_schedule}),  # old checkpoints keep their hash
        "init": _init_setting(candidates),
        **({} if autocast is None else {"autocast": str(autocast).replace("torch.", "")}),
    }
    optimizer = torch.optim.Adam(solver.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, Any] = {"iteration": 0, "history": [], "best": None, "best_rmse": math.inf}
    if saved is not None:
        _resume(saved, checkpoint, settings, solver, optimizer, generator, state)

    def validate():
        with network_precision():
            metrics = _validation_metrics(solver, model, validation, context)
        record = {"iteration": state["iteration"], "val_rmse": metrics["rmse"], "val_psnr": metrics["psnr"]}
        if metrics["rmse"] < state["best_rmse"]:
            state["best_rmse"] = metrics["rmse"]
            state["best"] = {k: v.detach().clone() for k, v in solver.params.items()}
        return record

    fit_started = time.perf_counter()
    iterations = sizes["iterations"]
    try:
        _train(solver, model, loss, optimizer, generator, training, state, validate, settings,
               checkpoint if context.is_main else None, context,
               iterations=iterations, batch_size=sizes["batch_size"], validate_every=sizes["validate_every"],
               device=device, progress=progress, label=f"fit {family.label} nfe={nfe}", deadline=deadline,
               precision=network_precision, lr_at=lambda i: lr * LR_SCHEDULES[lr_schedule](i / iterations))
    except NonFiniteVelocityError as error:
        raise NonFiniteVelocityError(f"fit stopped at iteration {state['iteration']}: {error}") from error

    with torch.no_grad():
        for name, value in state["best"].items():
            solver.params[name].copy_(value)
    best = min(state["history"], key=lambda r: r["val_rmse"])
    solver.metadata = {
        "model_fingerprint": store.key["model"],
        "fit": settings,
        "library_version": __version__,
        "validation": {"rmse": best["val_rmse"], "psnr": best["val_psnr"], "iteration": best["iteration"]},
        "history": state["history"],
        "timing": {"ground_truth_seconds": ground_truth_seconds, "fit_seconds": time.perf_counter() - fit_started,
                   "ground_truth_nfe_per_path": training.evaluations},
        "stopped_at": state["iteration"],  # below settings["iterations"] when max_minutes ended the fit
        **({"plan": plan.measured} if plan.measured else {}),
        **({} if start_scores is None else {"starts": start_scores}),
    }
    return solver


def default_lr(family, batch_size: int) -> float:
    """The family's ``default_lr`` (tuned at the full batch of 32) scaled by ``sqrt(batch / 32)``:
    Adam's square-root rule, since a smaller batch has noisier gradients."""
    return family.default_lr * math.sqrt(batch_size / budget.FULL_SIZES["batch_size"])


# Low-precision network calls (torch.autocast): the network's matrix products and convolutions run
# in the given dtype; the solver's arithmetic is elementwise and stays in the state's dtype.
AUTOCAST_DTYPES = (None, torch.bfloat16, torch.float16)


def _network_precision(dtype: torch.dtype | None, device: torch.device):
    """A context-manager factory: torch.autocast to ``dtype`` on ``device``, or nothing."""
    if dtype is None:
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device.type, dtype=dtype)


def _validation_metrics(solver, model, validation, context) -> dict:
    """Validation RMSE / PSNR; under torch.distributed each rank takes a slice and the sums are shared."""
    part = validation.subset(torch.arange(context.rank, len(validation), context.world))
    with torch.no_grad():
        sums = error_sums(solver.sample(part.field(model), part.x0), part.x1)
    return scores_from_sums(context.sum(sums), len(validation))


def _train(solver, model, loss, optimizer, generator, training, state, validate, settings, checkpoint, context, *,
           iterations, batch_size, validate_every, device, progress, label, deadline=None, lr_at=None,
           precision=contextlib.nullcontext):
    if state["iteration"] == 0 and not state["history"]:
        state["history"].append({**validate(), "train_loss": None})
    with Progress(iterations, label, enabled=progress, start=state["iteration"]) as bar:
        running = []
        while state["iteration"] < iterations:
            # Every rank draws the same global batch and works on its own slice of it.
            batch = torch.randint(len(training), (batch_size,), generator=generator)
            batch = batch.chunk(context.world)[context.rank].to(device)
            if lr_at is not None:  # a function of the iteration alone, so a resumed fit continues the schedule
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(state["iteration"])
            optimizer.zero_grad(set_to_none=True)
            paths = training.subset(batch)
            with precision():
                value = loss.backward(solver, paths.field(model), paths)
            context.average_gradients(solver.parameters())
            value = context.sum(torch.as_tensor(value, dtype=torch.float64).reshape(1))[0] / context.world
            if not torch.isfinite(value):
                raise FitDivergedError(
                    f"fit stopped at iteration {state['iteration']}: the loss is {float(value)}; "
                    "lower lr or check the model"
                )
            _check_gradients(solver, state["iteration"], float(value))
            optimizer.step()
            _check_parameters(solver, state["iteration"], optimizer.param_groups[0]["lr"])
            state["iteration"] += 1
            running.append(float(value))
            # Every rank stops at the same iteration: rank 0's clock decides.
            out_of_time = deadline is not None and bool(context.share(time.perf_counter() > deadline, owner=0))
            if state["iteration"] % validate_every == 0 or state["iteration"] == iterations or out_of_time:
                record = {**validate(), "train_loss": sum(running) / len(running)}
                running = []
                state["history"].append(record)
                if checkpoint is not None:
                    _save_checkpoint(checkpoint, settings, solver, optimizer, generator, state)
                bar.update(0, loss=record["train_loss"], val_rmse=record["val_rmse"], best=state["best_rmse"])
            bar.update(1)
            if out_of_time:
                break


def _check_gradients(solver, iteration: int, loss: float) -> None:
    """A finite loss with a non-finite gradient: stop before Adam spreads NaN into every parameter."""
    bad = [name for name, p in solver.params.items() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    if bad:
        raise FitDivergedError(
            f"fit stopped at iteration {iteration}: the loss is finite ({loss:.6g}) but its gradient with respect to "
            f"the solver parameters {bad} is not; the model's derivative may be undefined at the states the solver "
            "visits (e.g. a sqrt, norm or division at 0), or the solver's parameters are extreme: lower lr"
        )


def _check_parameters(solver, iteration: int, lr: float) -> None:
    """After an Adam step: non-finite parameters, or node values they overflow to (e.g. a scale
    ``s = exp(log_scale)`` of inf or 0), are the step size's doing, not the model's."""
    bad = [f"parameter {name} is non-finite" for name, p in solver.params.items() if not bool(torch.isfinite(p).all())]
    if not bad:
        bad = solver.out_of_range()
    if bad:
        raise FitDivergedError(
            f"fit stopped at iteration {iteration}: the Adam step (lr={lr:g}) drove the solver out of range "
            f"({'; '.join(bad)}); the model is not at fault: lower lr (e.g. lr={lr / 10:g})"
        )


def _resolve_loss(loss, L_tau, solver):
    """The given loss, or the family's default: RMSE-Bound where the solver has local steps, else RMSE."""
    if loss is None:
        if not solver.has_local_steps:
            if L_tau is not None:
                raise FlowsolveValueError(f"L_tau belongs to RMSE-Bound, which {solver.label} solvers cannot use")
            return RMSE()
        return RMSEBound() if L_tau is None else RMSEBound(L_tau=L_tau)
    if not isinstance(loss, Loss):
        raise FlowsolveTypeError(f"loss must be a flowsolve Loss instance such as RMSEBound(), got {type(loss).__name__}")
    if L_tau is not None:
        raise FlowsolveValueError("pass L_tau either to fit (for the default RMSEBound) or to the loss, not both")
    if loss.needs_local_steps and not solver.has_local_steps:
        raise FlowsolveValueError(
            f"the {loss.name} loss weighs per-step local errors, but a {solver.label} solver has no per-step map; "
            "use flowsolve.RMSE() or flowsolve.PSNRLoss() (final-sample losses through the whole rollout)"
        )
    return loss


def _model_device(model):
    if isinstance(model, torch.nn.Module):
        for tensor in model.parameters():
            return tensor.device
    return torch.device("cpu")


def _model_dtype(model):
    if isinstance(model, torch.nn.Module):
        for tensor in model.parameters():
            if tensor.is_floating_point():
                return tensor.dtype
    return torch.float32


def _init_setting(candidates: list):
    """``init`` as the settings remember it: one label (``None`` for the identity), or the list of candidates."""
    if len(candidates) == 1:
        return None if candidates[0] is None else _init_label(candidates[0])
    return [_init_label(candidate) for candidate in candidates]


def _init_label(init) -> str:
    """What a checkpoint remembers of ``init``: a schedule name, or a fitted solver's NFE and parameter hash."""
    if isinstance(init, str):
        return init
    if isinstance(init, SolverModule):  # a fitted solver
        return f"nfe{init.nfe}-" + tensor_fingerprint(*(p.detach() for _, p in sorted(init.params.items())))
    return repr(init)


def _save_checkpoint(path, settings, solver, optimizer, generator, state) -> None:
    atomic_torch_save(
        {
            "format": CHECKPOINT_FORMAT,
            "settings_hash": _settings_hash(settings),
            "settings": json.dumps(settings, sort_keys=True),
            "params": {k: v.detach().cpu() for k, v in solver.params.items()},
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "iteration": state["iteration"],
            "history": json.dumps(state["history"]),
            "best": {k: v.cpu() for k, v in state["best"].items()},
            "best_rmse": state["best_rmse"],
        },
        path,
    )


def _read_checkpoint(path) -> dict:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise FlowsolveValueError(f"fit checkpoint {path} is unreadable ({error}); delete it to start over") from error
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise FlowsolveValueError(f"{path} is not a flowsolve fit checkpoint")
    return saved


def _resume(saved, path, settings, solver, optimizer, generator, state) -> None:
    if saved["settings_hash"] != _settings_hash(settings):
        raise FlowsolveValueError(
            f"fit checkpoint {path} was written for other settings; pass another checkpoint path or delete it. "
            f"Stored: {saved['settings']}"
        )
    device = next(iter(solver.params.values())).device
    with torch.no_grad():
        for name, value in saved["params"].items():
            solver.params[name].copy_(value)
    optimizer.load_state_dict(saved["optimizer"])
    generator.set_state(saved["generator"])
    state.update(
        iteration=saved["iteration"],
        history=json.loads(saved["history"]),
        best={k: v.to(device) for k, v in saved["best"].items()},
        best_rmse=saved["best_rmse"],
    )
