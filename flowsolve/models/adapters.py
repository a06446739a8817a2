"""Model adapters: turn a network trained in another parameterisation or time convention into
a velocity field ``u(t, x)`` with t = 0 noise, t = 1 data.

Every adapter is an :class:`Adapter`: it calls the network (:meth:`Adapter.network`, the hook a
subclass overrides for a model with another signature), and turns what the network predicts
into the velocity of its scheduler's path (:mod:`flowsolve.paths.predictions`, the one place
that conversion lives). All adapters call the network as ``model(x, time)`` with a per-sample
``(batch,)`` time, and accept per-sample times themselves. Conversions that are singular at an
end point evaluate the network at the nearest safe time (``t_min`` from that end) instead:
documented per adapter. Where the network stops before ``t = 1`` (``time_range[1] < 1``, e.g.
eps-VP at ``s = 1e-3``), the field past that time heads straight for the data estimate made
there, ``(x1_hat - x) / (1 - t_end)``, so a step from ``t_end`` to 1 is the usual final
denoising; the ground truth ends the same way (:meth:`Adapter.denoise_at_end`).
"""

from __future__ import annotations

import abc
import copy

import torch
from torch import nn

from flowsolve.core.broadcast import per_sample
from flowsolve.core.errors import FlowsolveTypeError, FlowsolveValueError
from flowsolve.core.field import VelocityField
from flowsolve.models.conditioning import ConditionDistribution, Conditions, bind, distribution_of
from flowsolve.models.guidance import ClassifierFreeGuidance  # noqa: F401  (its former home)
from flowsolve.paths import schedulers as _schedulers
from flowsolve.paths.predictions import predictions_from, velocity_from


PAST_END_MARGIN = 1e-6  # beyond float32 round-off of times near 1 (6e-8)


def _expand(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.expand(x.shape[0]) if t.dim() == 0 else t


class Adapter(nn.Module, abc.ABC):
    """A network that predicts ``predicts`` on ``scheduler``'s path, as a velocity field ``u(t, x)``.

    ``model`` is kept as a submodule when it is one, so fingerprints see its weights. Subclasses
    declare what the network predicts (:attr:`predicts`, one of
    :data:`~flowsolve.paths.predictions.PREDICTION_TYPES`) and may override

    * :meth:`network` to call a model with another signature or time convention (like
      k-diffusion's ``get_eps``): it returns the prediction at flow time ``t``;
    * :meth:`times` to hold the network inside the times where the conversion is regular
      (and :attr:`time_range` to say so).

    Example:
        >>> from flowsolve.paths.schedulers import VP
        >>> class TimestepModel(Adapter):  # a noise predictor called at timestep k = 999 (1 - t)
        ...     kind = "timestep-eps"
        ...     predicts = "eps"
        ...     def network(self, x, t):
        ...         return self.model(x, 999 * (1 - t))
        >>> u = TimestepModel(lambda x, k: torch.zeros_like(x), VP())
        >>> u(torch.tensor(0.5), torch.ones(2, 3)).shape
        torch.Size([2, 3])
    """

    accepts_batched_time = True
    kind = "adapter"

    def __init__(self, model, scheduler: _schedulers.Scheduler, time: str = "flow"):
        super().__init__()
        if not callable(model):
            raise FlowsolveTypeError(f"the model must be callable as model(x, time), got {type(model).__name__}")
        if time not in ("flow", "diffusion"):
            raise FlowsolveValueError(f"time must be 'flow' (t, 0 = noise) or 'diffusion' (s = 1 - t, 1 = noise), got {time!r}")
        self.model, self.scheduler, self.time = model, scheduler, time
        shape = getattr(model, "sample_shape", None)
        if shape is not None:
            self.sample_shape = tuple(shape)

    @property
    @abc.abstractmethod
    def predicts(self) -> str:
        """What :meth:`network` returns: ``"velocity"``, ``"eps"``, ``"x1"`` or ``"v"``."""

    def network(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network's prediction at ``(batch,)`` flow time ``t``: the model called in its own
        time convention. Override to call a model with another signature."""
        out = self.model(x, t if self.time == "flow" else 1 - t)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise FlowsolveValueError(f"the {self.kind} model returned {got} for x of shape {tuple(x.shape)}; expected x's shape")
        return out

    def times(self, t, x: torch.Tensor) -> torch.Tensor:
        """The ``(batch,)`` flow times the network is evaluated at for ``t`` (0-dim or per sample)."""
        return _expand(t, x)

    def forward(self, t, x):
        requested = _expand(t, x)
        t = self.times(requested, x)
        output = self.network(x, t)
        velocity = velocity_from(self.predicts, output, x, t, self.scheduler)
        end = self.time_range[1]
        # Past the last time the network is valid at, the field heads straight for its data
        # estimate there: one step from `end` to 1 is the usual final denoising. The margin keeps
        # a time that lands on `end` up to round-off (e.g. a traced grid) on the network's side.
        past = requested > end + PAST_END_MARGIN
        if end < 1 and bool(past.any()):
            data = predictions_from(self.predicts, output, x, t, self.scheduler)[0]
            chord = (data - x) / (1 - end)
            velocity = torch.where(per_sample(past, x), chord, velocity)
        return velocity

    def denoise_at_end(self, x: torch.Tensor) -> torch.Tensor | None:
        """The final denoising of a field whose network stops before ``t = 1``: the data estimate
        ``x1_hat`` at the last valid time (``time_range[1]``) from state ``x`` there; ``None``
        when the network is valid up to ``t = 1``. The ground truth ends with it."""
        end = self.time_range[1]
        if end >= 1:
            return None
        return self.predictions(torch.tensor(end, dtype=x.dtype, device=x.device), x)[0]

    def predictions(self, t, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's estimates ``(x1_hat, eps_hat)`` of the data and the noise at flow time ``t``."""
        t = self.times(t, x)
        return predictions_from(self.predicts, self.network(x, t), x, t, self.scheduler)

    @property
    def time_range(self) -> tuple[float, float]:
        """The flow times at which the network is really evaluated (outside: held at the ends)."""
        return (0.0, 1.0)

    @property
    def condition_distribution(self) -> ConditionDistribution | None:
        """Where a fit draws the conditions of its paths from: the wrapped model's (``None``: unconditional)."""
        return distribution_of(self.model)

    def bind(self, conditions: Conditions) -> Adapter:
        """This field with per-sample ``conditions`` bound to the wrapped model (see
        :mod:`flowsolve.models.conditioning`): a copy sharing the network."""
        bound = copy.copy(self)
        bound._modules = dict(self._modules)
        bound.model = bind(self.model, conditions)
        # What select_rows needs to re-bind another arrangement of the same samples.
        vars(bound).update(bound_conditions=conditions, unbound_field=self)  # plain attributes, not submodules
        return bound

    def extra_repr(self) -> str:
        past_end = ", past_end='denoise'" if self.time_range[1] < 1 else ""  # the field beyond the network's end
        return f"kind={self.kind!r}, scheduler={self.scheduler!r}, time={self.time!r}, time_range={self.time_range}{past_end}"


class VelocityPrediction(Adapter):
    """The network predicts the velocity of ``scheduler``'s path (``fm-ot``, ``fm-cs``).

    With ``time="diffusion"`` the network runs from data (s = 0) to noise (s = 1): it is
    called at ``s = 1 - t`` and its velocity is negated.
    """

    kind = "velocity"
    predicts = "velocity"

    def network(self, x, t):
        out = super().network(x, t)
        return out if self.time == "flow" else -out


class NoisePrediction(Adapter):
    """The network predicts the noise ``eps = x_0``:
    ``u = (alpha'/alpha) x + (sigma' - alpha' sigma / alpha) eps``.

    Singular where ``alpha = 0`` (FM-OT and cosine at t = 0): there the network and the
    coefficients are evaluated at ``t_min`` (default 1e-3 when ``alpha_0 = 0``, else 0). Also
    singular where ``sigma'`` is infinite (VP at t = 1): evaluated at ``t_max`` there (default
    ``1 - 1e-3``, the usual score-SDE stopping time ``s = 1e-3``; else 1).
    """

    kind = "eps"
    predicts = "eps"

    def __init__(self, model, scheduler, time="flow", t_min: float | None = None, t_max: float | None = None):
        super().__init__(model, scheduler, time)
        ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
        if t_min is None:
            t_min = 1e-3 if float(scheduler.alpha(ends[0])) == 0 else 0.0
        if t_max is None:
            t_max = 1.0 if bool(torch.isfinite(scheduler.d_sigma(ends[1]))) else 1 - 1e-3
        if not 0 <= t_min < t_max <= 1:
            raise FlowsolveValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
        self.t_min, self.t_max = t_min, t_max

    @property
    def time_range(self) -> tuple[float, float]:
        return (self.t_min, self.t_max)

    def times(self, t, x):
        return _expand(t, x).clamp(self.t_min, self.t_max)


class DataPrediction(Adapter):
    """The network predicts the data ``x_1``:
    ``u = (sigma'/sigma) x + (alpha' - sigma' alpha / sigma) x1``.

    Singular where ``sigma = 0`` (t = 1): evaluated at ``1 - t_min`` there (default 1e-3 when
    ``sigma_1 = 0``, else 0: a path that ends above zero noise is used up to its end).
    """

    kind = "x-pred"
    predicts = "x1"

    def __init__(self, model, scheduler, time="flow", t_min: float | None = None):
        super().__init__(model, scheduler, time)
        if t_min is None:
            ends_clean = float(scheduler.sigma(torch.tensor(1.0, dtype=torch.float64))) < 1e-12  # cos(pi/2) != 0 in floats
            t_min = 1e-3 if ends_clean else 0.0
        if not 0 <= t_min < 1:
            raise FlowsolveValueError(f"need 0 <= t_min < 1, got t_min={t_min}")
        self.t_min = t_min

    @property
    def time_range(self) -> tuple[float, float]:
        return (0.0, 1 - self.t_min)

    def times(self, t, x):
        return _expand(t, x).clamp(max=1 - self.t_min)


class VPrediction(Adapter):
    """The network predicts ``v = alpha eps - sigma x1`` (Salimans & Ho) on a variance-preserving
    path (``alpha^2 + sigma^2 = 1``): ``u = (sigma' alpha - alpha' sigma) v``. Regular on the
    cosine path; on VP the factor is infinite at t = 1, so the network is held at ``t_max``
    (default ``1 - 1e-3``) there."""

    kind = "v-pred"
    predicts = "v"

    def __init__(self, model, scheduler, time="flow", t_max: float | None = None):
        super().__init__(model, scheduler, time)
        if not scheduler.is_variance_preserving():
            raise FlowsolveValueError(
                f"v-prediction needs a variance-preserving scheduler (alpha^2 + sigma^2 = 1); {scheduler!r} is not. "
                "Use schedulers.Cosine() or schedulers.VP()"
            )
        if t_max is None:  # VP's sigma' is infinite at t = 1: stop at s = 1e-3 there
            t_max = 1.0 if bool(torch.isfinite(scheduler.d_sigma(torch.tensor(1.0, dtype=torch.float64)))) else 1 - 1e-3
        self.t_max = t_max

    @property
    def time_range(self) -> tuple[float, float]:
        return (0.0, self.t_max)

    def times(self, t, x):
        return _expand(t, x).clamp(max=self.t_max)


class EDMDenoiser(Adapter):
    """A Karras et al. (EDM) denoiser ``D(x, sigma)`` estimating the data from ``x1 + sigma n``.

    Sampled on the FM-OT path: ``x_t = t x1 + (1 - t) x0`` is ``t`` times the EDM state at
    ``sigma = (1 - t) / t``, so ``x1_hat = D(x_t / t, (1 - t)/t)`` and ``u = (x1_hat - x_t)/(1 - t)``.
    ``sigma`` is clamped to ``[sigma_min, sigma_max]`` (the range the denoiser was trained on),
    which also keeps both end points finite.
    """

    kind = "edm"
    predicts = "x1"

    def __init__(self, model, sigma_min: float = 0.002, sigma_max: float = 80.0):
        super().__init__(model, _schedulers.FMOT())
        if not 0 < sigma_min < sigma_max:
            raise FlowsolveValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    @property
    def time_range(self) -> tuple[float, float]:
        return (1 / (1 + self.sigma_max), 1 / (1 + self.sigma_min))

    def times(self, t, x):
        return _expand(t, x).clamp(1 / (1 + self.sigma_max), 1 / (1 + self.sigma_min))

    def network(self, x, t):
        """``D(x_t / t, (1 - t) / t)``: the denoiser's data estimate at flow time ``t``."""
        return self.model(x / per_sample(t, x), (1 - t) / t)

    def forward(self, t, x):
        # The x1 conversion on FM-OT (alpha = t, sigma = 1 - t) in EDM's closed form: the general
        # formula rounds differently, and fingerprints hash the output bit for bit.
        t = self.times(t, x)
        return (self.network(x, t) - x) / (1 - per_sample(t, x))


def _scheduler_option(scheduler, default):
    if scheduler is None:
        return default
    if isinstance(scheduler, _schedulers.Scheduler):
        return scheduler
    if scheduler in _schedulers.BUILTIN_SCHEDULERS:
        return _schedulers.BUILTIN_SCHEDULERS[scheduler]()
    raise FlowsolveValueError(
        f"unknown scheduler {scheduler!r}; use a flowsolve.schedulers object or one of {sorted(_schedulers.BUILTIN_SCHEDULERS)}"
    )


def fm_ot(model, time: str = "flow") -> VelocityField:
    return VelocityPrediction(model, _schedulers.FMOT(), time)


def fm_cs(model, time: str = "flow") -> VelocityField:
    return VelocityPrediction(model, _schedulers.Cosine(), time)


def eps_vp(model, beta_max: float = 20.0, beta_min: float = 0.1, s_min: float = 1e-3) -> VelocityField:
    """Score-SDE convention: ``eps_model(x, s)`` with diffusion time ``s = 1 - t``, VP scheduler;
    the network is never called below ``s_min`` (the usual stopping time: the field is singular at s = 0)."""
    return NoisePrediction(model, _schedulers.VP(beta_max, beta_min), time="diffusion", t_max=1 - s_min)


def eps(model, scheduler=None, time: str = "flow", t_min: float | None = None, t_max: float | None = None) -> VelocityField:
    return NoisePrediction(model, _scheduler_option(scheduler, _schedulers.VP()), time, t_min, t_max)


def x_pred(model, scheduler=None, time: str = "flow", t_min: float | None = None) -> VelocityField:
    return DataPrediction(model, _scheduler_option(scheduler, _schedulers.Cosine()), time, t_min)


def v_pred(model, scheduler=None, time: str = "flow", t_max: float | None = None) -> VelocityField:
    return VPrediction(model, _scheduler_option(scheduler, _schedulers.Cosine()), time, t_max)


def edm(model, sigma_min: float = 0.002, sigma_max: float = 80.0) -> VelocityField:
    return EDMDenoiser(model, sigma_min, sigma_max)


BUILTIN_ADAPTERS = {"fm-ot": fm_ot, "fm-cs": fm_cs, "eps-vp": eps_vp, "eps": eps, "x-pred": x_pred,
                    "v-pred": v_pred, "edm": edm}


def adapt(model, kind: str | None = None, **options) -> VelocityField:
    """Turn ``model`` into a velocity field ``u(t, x)`` (t = 0 noise, t = 1 data).

    Args:
        model: the network (called as ``model(x, time)``; EDM: ``model(x, sigma)``).
        kind: a registered adapter kind (``fm-ot``, ``fm-cs``, ``eps-vp``, ``eps``, ``x-pred``,
            ``v-pred``, ``edm``, or one a plugin adds); ``None`` asks the plugins to recognise the model.
        options: passed to the adapter (e.g. ``scheduler=``, ``time="diffusion"``).

    Example:
        >>> import torch
        >>> u = adapt(lambda x, s: torch.zeros_like(x), "eps-vp")
        >>> u(torch.tensor(0.5), torch.ones(2, 3)).shape
        torch.Size([2, 3])
    """
    # Adapter kinds are named in the plugin registry, a layer above: resolved when adapt() is called.
    from flowsolve.plugins.registry import UnknownNameError, lookup, registry

    if kind is None:
        detected = registry().detect_adapter(model)
        if detected is None:
            raise UnknownNameError(
                f"no plugin recognises a {type(model).__name__}; pass kind= one of {sorted(registry().adapters())}"
            )
        kind, detected_options = detected
        options = {**detected_options, **options}
    factory = lookup("model adapter", kind)
    return factory(model, **options)
