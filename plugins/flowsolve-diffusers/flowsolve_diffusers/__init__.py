"""flowsolve plugin for Hugging Face diffusers.

Adds the model adapter kinds ``"diffusers"`` (a UNet / DiT network with a DDPM/DDIM-style
scheduler, ``alphas_cumprod``) and ``"diffusers-flow"`` (a flow-matching transformer with a
``FlowMatchEulerDiscreteScheduler``), both velocity fields ``u(t, x)`` with t = 0 noise, t = 1
data; ``flowsolve.adapt(pipeline)`` recognises such pipelines without a kind. And the other way
round, :class:`BespokeScheduler` runs a fitted flowsolve solver inside an unmodified diffusers
pipeline (``pipe.scheduler = BespokeScheduler.from_solver(solver, pipe.scheduler)``).

Example::

    u = flowsolve.adapt(unet, "diffusers", scheduler=ddim_scheduler)
    u = flowsolve.adapt(DDIMPipeline(unet, ddim_scheduler))      # detected
    pipe.scheduler = BespokeScheduler.from_solver(solver, pipe.scheduler)
    images = pipe(num_inference_steps=solver.nfe).images

``BespokeScheduler`` and ``export_scheduler`` import diffusers, so they are loaded on first use:
plugin discovery stays cheap.
"""

from __future__ import annotations

import importlib

from flowsolve.plugins.hookspecs import hookimpl

from .adapter import (
    PREDICTION_TYPES,
    DiffusersVelocity,
    FlowMatchVelocity,
    diffusers_adapter,
    diffusers_flow_adapter,
    is_flow_matching_scheduler,
    is_flow_pipeline,
    is_pipeline,
)
from .conditioning import Choices
from .schedule import DiscreteVP

__all__ = ["BespokeScheduler", "BespokeSchedulerOutput", "Choices", "DiffusersVelocity", "DiscreteVP",
           "FlowMatchVelocity", "PREDICTION_TYPES", "diffusers_adapter", "diffusers_flow_adapter", "export_scheduler",
           "is_flow_matching_scheduler", "is_flow_pipeline", "is_pipeline"]
__version__ = "0.1.0"

_LAZY = {"BespokeScheduler": ".scheduler", "BespokeSchedulerOutput": ".scheduler", "export_scheduler": ".scheduler"}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


@hookimpl
def flowsolve_model_adapters():
    return {"diffusers": diffusers_adapter, "diffusers-flow": diffusers_flow_adapter}


@hookimpl
def flowsolve_detect_adapter(model):
    if is_pipeline(model):
        return "diffusers", {}
    if is_flow_pipeline(model):
        return "diffusers-flow", {}
    return None
