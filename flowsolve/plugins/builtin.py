"""flowsolve's own solvers, transforms, losses, adapters, models and baselines, registered like any plugin."""

from __future__ import annotations

from flowsolve.plugins.hookspecs import hookimpl


@hookimpl
def flowsolve_base_solvers():
    from flowsolve.methods import builtin_methods

    return builtin_methods()


@hookimpl
def flowsolve_transforms():
    from flowsolve.solvers.transforms import BUILTIN_TRANSFORMS

    return dict(BUILTIN_TRANSFORMS)


@hookimpl
def flowsolve_solver_families():
    from flowsolve.solvers.guidance_range import GuidanceRange
    from flowsolve.solvers.nonstationary import NonStationary

    return {NonStationary.name: NonStationary, GuidanceRange.name: GuidanceRange}


@hookimpl
def flowsolve_losses():
    from flowsolve.training.losses import BUILTIN_LOSSES

    return dict(BUILTIN_LOSSES)


@hookimpl
def flowsolve_model_adapters():
    from flowsolve.models.adapters import BUILTIN_ADAPTERS

    return dict(BUILTIN_ADAPTERS)


@hookimpl
def flowsolve_baselines():
    from flowsolve.baselines import builtin_baselines

    return builtin_baselines()


@hookimpl
def flowsolve_detect_adapter(model):
    """Objects that declare ``flowsolve_adapter = (kind, options)`` pick their own adapter."""
    declared = getattr(model, "flowsolve_adapter", None)
    if declared is not None:
        kind, options = declared
        return kind, dict(options)
    return None


@hookimpl
def flowsolve_models():
    from flowsolve.models.gaussian_mixture import GaussianMixtureFlow
    from flowsolve.paths.schedulers import FMOT, VP, Cosine

    def gmm(scheduler):
        return lambda: GaussianMixtureFlow.random(dim=64, components=10, seed=0, scheduler=scheduler)

    from flowsolve.models.zoo import models as bundled_models

    return {"gmm-fm-ot": gmm(FMOT()), "gmm-fm-cs": gmm(Cosine()), "gmm-vp": gmm(VP()), **bundled_models()}
