"""The discrete DDPM/DDIM schedule as a continuous path: it now lives in the core
(:mod:`flowsolve.paths.discrete_vp`, where the bundled DDPM zoo model needs it); this name
is kept for code that imports it from the plugin."""

from flowsolve.paths.discrete_vp import INTERPOLATIONS, MIN_ALPHAS_CUMPROD, DiscreteVP

__all__ = ["DiscreteVP", "INTERPOLATIONS", "MIN_ALPHAS_CUMPROD"]
