"""A fitted flowsolve solver as a k-diffusion-style sampler: ``sample_bespoke(model, x, solver)``.

k-diffusion's samplers take a Karras denoiser ``model(x, sigma, **extra_args)`` returning
``D(x; sigma)``, the data estimate on ``x = data + sigma * noise`` (the EDM / VE convention),
and start from ``x = noise * sigma_max``. :func:`sample_bespoke` has their signature with the
solver in place of the sigma schedule, and samples as flowsolve's EDM adapter does
(:class:`~flowsolve.models.adapters.EDMDenoiser`: the FM-OT path, ``z = x / (1 + sigma)``,
``t = 1 / (1 + sigma)``, ``D`` evaluated at ``x_t / t`` with ``sigma = (1 - t) / t`` clamped to
``[sigma_min, sigma_max]``), so its result is ``solver.sample(flowsolve.adapt(model, "edm",
sigma_min=..., sigma_max=...), x / sigma_max)``. It does not need the k-diffusion package.

Example:
    >>> import torch, flowsolve
    >>> from flowsolve.k_diffusion import sample_bespoke
    >>> denoiser = lambda x, sigma: x / (1 + sigma.reshape(-1, 1) ** 2)  # data N(0, I)
    >>> solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=8)
    >>> sample_bespoke(denoiser, torch.randn(4, 2) * 80.0, solver, sigma_min=0.002, sigma_max=80.0, disable=True).shape
    torch.Size([4, 2])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import trange

from flowsolve.core.errors import FlowsolveValueError
from flowsolve.models.adapters import EDMDenoiser
from flowsolve.solvers.module import SolverModule

__all__ = ["noise_range", "sample_bespoke"]


def _number(value) -> float | None:
    if value is None:
        return None
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def noise_range(model, solver: SolverModule, sigma_min=None, sigma_max=None) -> tuple[float, float]:
    """``(sigma_min, sigma_max)`` of the denoiser: the arguments when given, else the model's
    ``sigma_min`` / ``sigma_max`` (k-diffusion's wrappers have them; a wrapper such as a
    classifier-free-guidance denoiser is looked through to its ``inner_model``), else the
    solver's ``metadata["sigma_min"]`` / ``metadata["sigma_max"]``."""
    found = [_number(sigma_min), _number(sigma_max)]
    sources = [model, getattr(model, "inner_model", None), getattr(solver, "metadata", None) or {}]
    for source in sources:
        for k, name in enumerate(("sigma_min", "sigma_max")):
            if found[k] is None and source is not None:
                found[k] = _number(source.get(name) if isinstance(source, dict) else getattr(source, name, None))
    low, high = found
    if low is None or high is None:
        missing = " and ".join(name for name, value in zip(("sigma_min", "sigma_max"), found) if value is None)
        raise FlowsolveValueError(
            f"sample_bespoke needs the denoiser's noise range but found no {missing}: pass them as "
            "sample_bespoke(..., sigma_min=0.002, sigma_max=80.0) (the range the denoiser was trained on), give "
            "the model sigma_min / sigma_max attributes (k-diffusion's model wrappers have them), or record them "
            "in solver.metadata['sigma_min'] / ['sigma_max'] before saving it"
        )
    return low, high


@torch.no_grad()
def sample_bespoke(model: Callable[..., torch.Tensor], x: torch.Tensor, solver: SolverModule,
                   extra_args: dict[str, Any] | None = None, callback: Callable[[dict], Any] | None = None,
                   disable: bool | None = None, *, sigma_min: float | None = None, sigma_max: float | None = None,
                   guidance=None) -> torch.Tensor:
    """Sample with a fitted ``solver`` in k-diffusion's sampler convention: exactly ``solver.nfe``
    calls of ``model``.

    Args:
        model: a Karras denoiser ``model(x, sigma, **extra_args)`` returning ``D(x; sigma)``;
            ``sigma`` is a ``(batch,)`` tensor.
        x: ``noise * sigma_max``, as k-diffusion's samplers start (``(batch, ...)``).
        solver: a fitted flowsolve solver (any family), e.g. ``flowsolve.load(path)``.
        extra_args: keyword arguments for every ``model`` call (conditioning, ...).
        callback: called after every model call with k-diffusion's dict ``{"x", "i", "sigma",
            "sigma_hat", "denoised"}``: the input ``model`` got, the evaluation index, its noise
            level (``sigma_hat = sigma``: no churn) and ``model``'s output.
        disable: turn the tqdm progress bar off.
        sigma_min, sigma_max: the denoiser's noise range (see :func:`noise_range` for where
            they are looked up when not given).
        guidance: a guidance-range solver's guidance scales (see ``solver.stepper``).

    Returns:
        The samples at ``sigma = 0``, shaped like ``x``.
    """
    extra_args = {} if extra_args is None else extra_args
    low, high = noise_range(model, solver, sigma_min, sigma_max)
    last: list[torch.Tensor] = []

    def denoiser(x_in: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        denoised = model(x_in, sigma, **extra_args)
        last[:] = (x_in, sigma, denoised)
        return denoised

    field = EDMDenoiser(denoiser, low, high)
    stepper = solver.stepper(x / high, guidance)
    for i in trange(solver.nfe, disable=disable):
        velocity = field(stepper.time, stepper.state)
        if callback is not None:
            x_in, sigma, denoised = last
            callback({"x": x_in, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        stepper.step(velocity)
    return stepper.result
