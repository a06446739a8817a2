"""Error metrics against ground truth, in the per-sample RMS norm (see docs/architecture.md, "Conventions")."""

from __future__ import annotations

import math

import torch


def per_sample_rms(difference: torch.Tensor) -> torch.Tensor:
    """``||x||``: root mean square over all non-batch dimensions, ``(batch,)`` (eq. 6).

    Differentiable everywhere: at a zero difference the gradient is 0 (a plain
    ``sqrt(mean(x^2))`` has an infinite derivative there, which turns a training step into NaN
    when a local error is exactly 0, as in low-dimensional data at high NFE).
    """
    flat = difference.reshape(difference.shape[0], -1)
    # vector_norm's backward masks the 0/0 at a zero norm to 0; the value is the plain RMS.
    return torch.linalg.vector_norm(flat, dim=1) / math.sqrt(flat.shape[1])


def rmse(x: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean over the batch of per-sample RMS errors."""
    return float(per_sample_rms(x - reference).mean())


def psnr_from_mse(mse: float, data_range: float = 2.0) -> float:
    """``10 log10(range^2 / MSE)`` (data in [-1, 1]: range 2)."""
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


def psnr(x: torch.Tensor, reference: torch.Tensor, data_range: float = 2.0) -> float:
    """PSNR with the MSE over all entries."""
    return psnr_from_mse(float((x - reference).square().mean()), data_range)


def scores(x1: torch.Tensor, reference_x1: torch.Tensor) -> dict[str, float]:
    """``{"rmse", "psnr"}`` of solver outputs ``x1`` against the ground truth ``reference_x1``:
    the mean per-sample RMS error and the PSNR (range 2) of the MSE over all entries."""
    return {"rmse": rmse(x1, reference_x1), "psnr": psnr(x1, reference_x1)}


def error_sums(x1: torch.Tensor, reference_x1: torch.Tensor) -> torch.Tensor:
    """The sums behind :func:`scores_from_sums`, float64 ``(3,)``: per-sample RMS errors, squared
    errors, and entries. Sums (not means) add up across the slices of a sharded batch."""
    difference = x1 - reference_x1
    return torch.stack([
        per_sample_rms(difference).double().sum(), difference.double().square().sum(),
        torch.tensor(float(difference.numel()), dtype=torch.float64, device=difference.device),
    ])


def scores_from_sums(sums: torch.Tensor, samples: int) -> dict[str, float]:
    """``{"rmse", "psnr"}`` from :func:`error_sums` added over the ``samples`` samples they cover.

    Accumulated in float64, so the values can differ from :func:`scores` in the last bits.
    """
    rms_sum, squared_sum, entries = sums.tolist()
    return {"rmse": rms_sum / samples, "psnr": psnr_from_mse(squared_sum / entries)}
