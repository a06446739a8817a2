"""EDM's Heun sampler (Karras et al., 2022)."""

from __future__ import annotations

import itertools

import attrs

from flowsolve.baselines.base import Baseline, predictions, scalar_time, scheduler_of
from flowsolve.paths.noise_grids import sigma_range, spaced_noise_levels, times_at_noise
from flowsolve.paths.schedulers import Scheduler


@attrs.frozen
class EDMHeun(Baseline):
    """Karras et al. (2022): Heun on the EDM time schedule (rho = 7) in the variance-exploding
    variables ``y = x / alpha``, ``s = sigma / alpha``; the last step is Euler. ``k`` steps cost
    ``2k - 1`` NFE, so an even budget uses one evaluation less.

    The schedule spans the model's noise range (:func:`~flowsolve.paths.noise_grids.sigma_range`:
    ``sigma_max`` / ``sigma_min`` narrowed to the path's own ends and the model's time range). The
    last step lands on the path's end at ``t = 1`` (``s = 0`` for a path to clean data) and the
    output is ``x = alpha_1 y`` there; where that end is ``sigma_min`` itself, the schedule's last
    point is it.
    """

    needs_scheduler = True

    sigma_max: float = 80.0
    sigma_min: float = 0.002
    rho: float = 7.0
    name = "edm-heun"

    def noise_levels(self, u, scheduler: Scheduler, nfe: int) -> list[float]:
        """The ``k + 1`` values of ``s`` that the ``k = (nfe + 1) // 2`` steps go through: EDM's schedule
        from ``sigma_max`` to ``sigma_min``, then the path's end at ``t = 1`` unless that is ``sigma_min``."""
        sigma_max, sigma_min = sigma_range(u, scheduler, self.sigma_max, self.sigma_min)
        path_end = scheduler.noise_range()[1]
        steps = max((nfe + 1) // 2, 1)
        ends_at_sigma_min = path_end == sigma_min  # the model reaches t = 1 inside EDM's range
        count = steps + 1 if ends_at_sigma_min else steps
        levels = spaced_noise_levels(sigma_max, sigma_min, count, "edm", self.rho)
        return levels if ends_at_sigma_min else levels + [path_end]

    def sample(self, u, x0, nfe: int):
        scheduler = scheduler_of(u)
        sigmas = self.noise_levels(u, scheduler, nfe)
        times = times_at_noise(u, scheduler, sigmas[:-1])  # where the field is evaluated

        def denoised(i, y):
            t = scalar_time(times[i], x0)
            return predictions(u, scheduler, t, scheduler.alpha(t) * y)[0]

        # On the path's own start y = x0 / alpha_0 exactly; past EDM's sigma_max it starts from sigma_max * noise.
        y = x0 / scheduler.alpha(scalar_time(0.0, x0)) if times[0] == 0 else sigmas[0] * x0
        used = 0
        for i, (s0, s1) in enumerate(itertools.pairwise(sigmas)):
            slope = (y - denoised(i, y)) / s0
            used += 1
            proposal = y + (s1 - s0) * slope
            if i + 2 < len(sigmas):  # Heun's correction on every step but the last
                slope = (slope + (proposal - denoised(i + 1, proposal)) / s1) / 2
                used += 1
                proposal = y + (s1 - s0) * slope
            y = proposal
        return scheduler.alpha(scalar_time(1.0, x0)) * y, used


BASELINES = {"edm-heun": EDMHeun}
