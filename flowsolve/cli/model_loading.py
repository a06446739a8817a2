"""The model a command runs: a registered name or ``module:object``, placed as its options say."""

from __future__ import annotations

import importlib

from flowsolve.cli.errors import CommandLineError
from flowsolve.cli.options import ModelOptions


def resolve_model(spec: str, kind: str | None = None, guidance: float | None = None):
    """A registered model name (at guidance weight ``guidance`` when given), or ``module:object``
    (adapted with ``kind`` when given; a class is instantiated).

    Raises:
        CommandLineError: ``kind`` given with a registered name, ``guidance`` with a model that
            takes none, or ``module:object`` not importable.
        UnknownNameError: no model is registered as ``spec``.
    """
    from flowsolve.models.adapters import adapt
    from flowsolve.plugins.registry import model

    if ":" not in spec:
        if kind is not None:
            raise CommandLineError(f"--kind applies to module:object models; {spec!r} is a registered name")
        if guidance is None:
            return model(spec)
        try:
            return model(spec, guidance=guidance)
        except (TypeError, ValueError) as error:
            raise CommandLineError(f"--guidance: model {spec!r} takes no guidance weight ({error})") from error
    if guidance is not None:
        raise CommandLineError("--guidance applies to registered class-conditional models; for module:object, "
                               "wrap the network in flowsolve.ClassifierFreeGuidance(net, w, ...) yourself")
    module_name, _, attribute = spec.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise CommandLineError(f"cannot import {spec!r}: {error}") from error
    if isinstance(target, type):
        target = target()
    if kind:
        return adapt(target, kind)
    from flowsolve.plugins.registry import registry

    # An object a plugin recognises (e.g. a diffusers pipeline) is adapted as it says.
    return adapt(target) if registry().detect_adapter(target) is not None else target


def load_model(options: ModelOptions):
    """The model of ``options``, moved to its device and dtype when it is a ``torch.nn.Module``
    (other callables get inputs on that device and dtype and must follow them)."""
    import torch

    model = resolve_model(options.spec, options.kind, options.guidance)
    if isinstance(model, torch.nn.Module) and (options.device is not None or options.dtype is not None):
        model.to(device=options.device, dtype=None if options.dtype is None else options.torch_dtype)
    return model


def sample_shape_of(model, options: ModelOptions) -> tuple[int, ...]:
    """``--sample-shape``, else the model's ``sample_shape`` attribute (the optional part of the model protocol)."""
    shape = options.sample_shape or getattr(model, "sample_shape", None)
    if shape is None:
        raise CommandLineError(
            f"the model {options.spec!r} has no sample_shape attribute, so flowsolve does not know "
            "what noise to draw; pass --sample-shape (e.g. --sample-shape 3,32,32 for 3x32x32 images) "
            "or set model.sample_shape"
        )
    return tuple(shape)


def model_key(model, options: ModelOptions) -> str:
    """The model's fingerprint at the shape, dtype and device of ``options`` (what stores and solver files record)."""
    from flowsolve.core.fingerprint import model_fingerprint

    return model_fingerprint(model, sample_shape_of(model, options), options.torch_dtype, options.torch_device)


def check_solver_fits_model(solver, model, path, options: ModelOptions) -> None:
    """Refuse a solver file fitted to another model (or to this one at another shape or dtype)."""
    fitted_to = solver.metadata.get("model_fingerprint")
    key = model_key(model, options)
    if fitted_to is not None and fitted_to != key:
        raise CommandLineError(
            f"{path} was fitted to model {fitted_to}, not to this model ({key}); refit it "
            "(or pass the --dtype / --sample-shape it was fitted with)"
        )
