"""flowsolve plugin for Hugging Face diffusers.

Adds the model adapter kind ``"diffusers"``: a UNet (``model(sample, timestep).sample``) and a
DDPM/DDIM-style scheduler (``alphas_cumprod``) become a flowsolve velocity field ``u(t, x)``
with t = 0 noise, t = 1 data; a pipeline with ``.unet`` and ``.scheduler`` is recognised by
``flowsolve.adapt(pipeline)`` without a kind.

Example::

    u = flowsolve.adapt(unet, "diffusers", scheduler=ddim_scheduler)
    u = flowsolve.adapt(DDIMPipeline(unet, ddim_scheduler))      # detected
"""

from __future__ import annotations

from flowsolve.plugins.hookspecs import hookimpl

from .adapter import PREDICTION_TYPES, DiffusersVelocity, diffusers_adapter, is_pipeline
from .schedule import DiscreteVP

__all__ = ["DiffusersVelocity", "DiscreteVP", "PREDICTION_TYPES", "diffusers_adapter", "is_pipeline"]
__version__ = "0.1.0"


@hookimpl
def flowsolve_model_adapters():
    return {"diffusers": diffusers_adapter}


@hookimpl
def flowsolve_detect_adapter(model):
    if is_pipeline(model):
        return "diffusers", {}
    return None
