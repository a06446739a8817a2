"""Change of scheduler (Theorem 2.3): the exact scale-time transform between two Gaussian paths."""

from __future__ import annotations

import torch
from torch import nn

from flowsolve.core.broadcast import per_sample
from flowsolve.core.field import VelocityField, call_field
from flowsolve.paths.schedulers import Scheduler


class Rescheduled(nn.Module):
    """The field ``u`` of the ``source`` path, re-timed and re-scaled to sample the ``target`` path.

    With ``t_r = snr_source^-1(snr_target(r))`` and ``s_r = sigma_target(r) / sigma_source(t_r)``
    (equal to ``alpha_target(r) / alpha_source(t_r)``), ``xbar(r) = s_r x(t_r)`` follows

        ubar_r(x) = (ds_r / s_r) x + dt_r s_r u(t_r, x / s_r),

    which for an ideal model is exactly the target path's marginal velocity. ``time`` and
    ``scale`` (functions of ``r``) can also start a bespoke solver:
    ``solver.set_transform(resched.time, resched.scale)``.

    Args:
        u: velocity field of the source path.
        source, target: the two schedulers.

    Example:
        >>> from flowsolve import schedulers
        >>> from flowsolve.models.gaussian_mixture import GaussianMixtureFlow
        >>> u = GaussianMixtureFlow.random(dim=4, components=2)  # FM-OT
        >>> cosine_field = Rescheduled(u, schedulers.FMOT(), schedulers.Cosine())
    """

    accepts_batched_time = True

    def __init__(self, u: VelocityField, source: Scheduler, target: Scheduler):
        super().__init__()
        self.u, self.source, self.target = u, source, target
        self._regular_at_one = bool(torch.isfinite(target.d_sigma(torch.tensor(1.0, dtype=torch.float64))))
        shape = getattr(u, "sample_shape", None)
        if shape is not None:
            self.sample_shape = tuple(shape)

    def extra_repr(self) -> str:
        return f"source={self.source!r}, target={self.target!r}"

    def time(self, r: torch.Tensor) -> torch.Tensor:
        """``t_r``, clamped to ``[0, 1]`` where the source path does not reach the target's SNR."""
        return self.source.log_snr_inverse(self.target.log_snr(r)).clamp(0.0, 1.0)

    def _pieces(self, r: torch.Tensor):
        t = self.time(r)
        src, tgt = self.source, self.target
        a_s, s_s, da_s, ds_s = src.alpha(t), src.sigma(t), src.d_alpha(t), src.d_sigma(t)
        a_t, s_t, da_t, ds_t = tgt.alpha(r), tgt.sigma(r), tgt.d_alpha(r), tgt.d_sigma(r)
        # Take the ratio whose denominator is the larger of alpha and sigma: finite at both ends.
        use_sigma = s_s >= a_s
        scale = torch.where(use_sigma, s_t / torch.where(use_sigma, s_s, 1.0), a_t / torch.where(use_sigma, 1.0, a_s))
        # dt/dr from d snr: snr' = w / sigma^2 with w = alpha' sigma - alpha sigma'; equal SNRs give
        # dt/dr = (w_target / w_source) / s_r^2.
        d_time = (da_t * s_t - a_t * ds_t) / (da_s * s_s - a_s * ds_s) / scale**2
        # Where the source path cannot reach the target's SNR, t is held at an end: it does not move.
        unreachable = self.source.log_snr_inverse(self.target.log_snr(r))
        d_time = torch.where((unreachable < 0) | (unreachable > 1), torch.zeros_like(d_time), d_time)
        log_rate = torch.where(
            use_sigma,
            ds_t / torch.where(use_sigma, s_t, 1.0) - ds_s * d_time / torch.where(use_sigma, s_s, 1.0),
            da_t / torch.where(use_sigma, 1.0, a_t) - da_s * d_time / torch.where(use_sigma, 1.0, a_s),
        )
        return t, d_time, scale, scale * log_rate

    def scale(self, r: torch.Tensor) -> torch.Tensor:
        """``s_r``."""
        return self._pieces(r)[2]

    def forward(self, r, x):
        r = torch.as_tensor(r, dtype=x.dtype, device=x.device)
        if not self._regular_at_one:
            # The target's own sigma' is infinite at r = 1 (VP); ubar's terms cancel there but not in floats.
            r = r.clamp(max=1 - 1e-7)
        t, d_time, scale, d_scale = self._pieces(r.double())
        # The pieces are computed in float64; the field and the states work in x's dtype.
        column = lambda v: per_sample(v.to(x.dtype), x)  # noqa: E731
        velocity = call_field(self.u, t.to(x.dtype), x / column(scale), where="in the rescheduled field")
        return column(d_scale / scale) * x + column(d_time * scale) * velocity


def reschedule(u: VelocityField, source: Scheduler, target: Scheduler) -> Rescheduled:
    """Sample ``u`` (a field of the ``source`` path) along the ``target`` path (Theorem 2.3).

    See :class:`Rescheduled`.
    """
    return Rescheduled(u, source, target)
