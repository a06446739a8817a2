"""What a network predicts, turned into the velocity of a Gaussian path and back: the one place
where eps / data / v predictions meet velocities.

On a Gaussian path ``x_t = sigma_t eps + alpha_t x1`` (t = 0 noise, t = 1 data) a network
predicts one of

* ``"velocity"``: ``u = alpha' x1 + sigma' eps`` itself;
* ``"eps"``: the noise ``eps``;
* ``"x1"``: the data ``x1``;
* ``"v"``: ``v = alpha eps - sigma x1`` (Salimans & Ho), on a variance-preserving path only
  (``alpha^2 + sigma^2 = 1``; the caller checks that, see :class:`~flowsolve.models.adapters.VPrediction`).

Any of them, with ``x_t`` itself, fixes both ``x1`` and ``eps``, hence the velocity. The
coefficients are evaluated and combined at ``t`` in ``t``'s dtype (pass float64 times for
float64 coefficients), then applied in ``x``'s dtype; ``t`` is 0-dim or ``(batch,)``. Where a
coefficient is singular (``alpha = 0`` for eps, ``sigma = 0`` for x1) the caller picks a safe
time: the model adapters hold the network at the ends of their ``time_range``.
"""

from __future__ import annotations

import torch

from flowsolve.core.broadcast import per_sample
from flowsolve.core.errors import FlowsolveValueError
from flowsolve.paths.schedulers import Scheduler

PREDICTION_TYPES = ("velocity", "eps", "x1", "v")


def _path(scheduler: Scheduler, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``alpha, sigma, alpha', sigma'`` at ``t`` in ``t``'s dtype, shaped to broadcast against ``x``."""
    values = (f(t) for f in (scheduler.alpha, scheduler.sigma, scheduler.d_alpha, scheduler.d_sigma))
    return tuple(per_sample(v, x) for v in values)


def _check(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise FlowsolveValueError(f"unknown prediction type {prediction_type!r}; use one of {PREDICTION_TYPES}")


def velocity_from(prediction_type: str, model_output: torch.Tensor, x: torch.Tensor, t: torch.Tensor,
                  scheduler: Scheduler) -> torch.Tensor:
    """The velocity ``u(t, x)`` of ``scheduler``'s path from a network's ``model_output`` at ``(t, x)``.

    Args:
        prediction_type: what ``model_output`` is: ``"velocity"``, ``"eps"``, ``"x1"`` or ``"v"``.
        model_output: the network's prediction, shaped like ``x``.
        x: the state ``x_t``, ``(batch, ...)``.
        t: flow time, 0-dim or ``(batch,)``.
        scheduler: the Gaussian path the network was trained on.

    Example:
        >>> from flowsolve.paths.schedulers import FMOT
        >>> x, t = torch.ones(2, 3), torch.tensor(0.5)
        >>> velocity_from("eps", torch.zeros(2, 3), x, t, FMOT())  # no noise: x = t x1, u = x1 = x / t
        tensor([[2., 2., 2.],
                [2., 2., 2.]])
    """
    _check(prediction_type)
    if prediction_type == "velocity":
        return model_output
    if prediction_type == "v":
        s = scheduler
        return per_sample((s.d_sigma(t) * s.alpha(t) - s.d_alpha(t) * s.sigma(t)).to(x.dtype), x) * model_output
    alpha, sigma, d_alpha, d_sigma = _path(scheduler, t, x)
    if prediction_type == "eps":  # x1 = (x - sigma eps) / alpha
        on_x, on_output = d_alpha / alpha, d_sigma - d_alpha * sigma / alpha
    else:  # x1: eps = (x - alpha x1) / sigma
        on_x, on_output = d_sigma / sigma, d_alpha - d_sigma * alpha / sigma
    return on_x.to(x.dtype) * x + on_output.to(x.dtype) * model_output


def predictions_from_velocity(velocity: torch.Tensor, x: torch.Tensor, t: torch.Tensor,
                              scheduler: Scheduler) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x1_hat, eps_hat)`` from the velocity at ``(t, x)``: ``x = sigma eps + alpha x1`` and
    ``u = sigma' eps + alpha' x1`` solved as a 2x2 system."""
    alpha, sigma, d_alpha, d_sigma = (value.to(x.dtype) for value in _path(scheduler, t, x))
    determinant = d_sigma * alpha - sigma * d_alpha
    return (d_sigma * x - sigma * velocity) / determinant, (alpha * velocity - d_alpha * x) / determinant


def predictions_from(prediction_type: str, model_output: torch.Tensor, x: torch.Tensor, t: torch.Tensor,
                     scheduler: Scheduler) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x1_hat, eps_hat)``, the network's estimates of the data and the noise, from its
    ``model_output`` at ``(t, x)`` (arguments as in :func:`velocity_from`)."""
    _check(prediction_type)
    if prediction_type == "velocity":
        return predictions_from_velocity(model_output, x, t, scheduler)
    alpha, sigma = scheduler.alpha(t), scheduler.sigma(t)
    one, zero = torch.ones_like(alpha), torch.zeros_like(alpha)
    # x1_hat = a x + b out, eps_hat = c x + d out
    if prediction_type == "eps":
        a, b, c, d = 1 / alpha, -sigma / alpha, zero, one
    elif prediction_type == "x1":
        a, b, c, d = zero, one, 1 / sigma, -alpha / sigma
    else:  # v = alpha eps - sigma x1 on a variance-preserving path
        a, b, c, d = alpha, -sigma, sigma, alpha
    a, b, c, d = (per_sample(value.to(x.dtype), x) for value in (a, b, c, d))
    return a * x + b * model_output, c * x + d * model_output
