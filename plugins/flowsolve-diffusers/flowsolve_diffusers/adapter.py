"""A diffusers network (eps / v / sample prediction) + DDPM/DDIM scheduler as a flowsolve velocity field.

Nothing here imports diffusers: models and schedulers are recognised by what they offer
(``model(sample, timestep)``, ``scheduler.alphas_cumprod``, ``scheduler.config``), so loading
the plugin stays cheap and works with any diffusers version that keeps those names.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from flowsolve import Adapter
from flowsolve.paths.predictions import predictions_from, velocity_from

from .schedule import DiscreteVP

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_PREDICTION_CODES = {name: code for code, name in enumerate(PREDICTION_TYPES)}
# diffusers' prediction types in flowsolve's words (flowsolve.paths.predictions.PREDICTION_TYPES).
_FLOWSOLVE_PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x1"}


def _config_value(obj, name, default=None):
    config = getattr(obj, "config", None)
    if config is None:
        return default
    if isinstance(config, Mapping):
        return config.get(name, default)
    return getattr(config, name, default)


def is_pipeline(obj) -> bool:
    """``obj`` looks like a diffusers UNet pipeline: a callable ``.unet`` and a ``.scheduler``
    with an ``alphas_cumprod`` table (DDPMPipeline, DDIMPipeline, ...)."""
    unet = getattr(obj, "unet", None)
    scheduler = getattr(obj, "scheduler", None)
    return callable(unet) and scheduler is not None and getattr(scheduler, "alphas_cumprod", None) is not None


class DiffusersVelocity(Adapter):
    """Velocity field ``u(t, x)`` (t = 0 noise, t = 1 data) of a diffusers network and scheduler.

    The discrete schedule becomes the continuous path of :class:`~flowsolve_diffusers.DiscreteVP`
    (``.scheduler``, also ``.path``): flow time ``t`` is training timestep ``k = (N - 1)(1 - t)``,
    so ``t = 0`` is the noisiest trained step ``N - 1`` (where diffusers' DDIM starts from
    ``x ~ N(0, I)``) and ``t = 1`` the least noisy step ``0``; ``log alphas_cumprod`` is
    interpolated in between (monotone cubic by default, see ``interpolation``). The network is
    called at that fractional timestep (never outside ``[0, N - 1]``: ``t`` is clamped to
    ``[0, 1]``) and its prediction becomes the path's velocity as for any flowsolve
    :class:`~flowsolve.Adapter` (:mod:`flowsolve.paths.predictions`), with coefficients computed
    in float64.

    Ends: at ``t = 1`` the state is ``x`` at step 0, which still holds noise of standard deviation
    ``sqrt(beta_0)`` (0.01 for the usual betas); :meth:`denoise` gives the network's data estimate
    there (what DDIM's final step returns with ``set_alpha_to_one=True``). Every coefficient is
    finite on ``[0, 1]`` because ``alphas_cumprod`` stays strictly inside ``(0, 1)`` at both ends.

    The scheduler's ``clip_sample`` and ``thresholding`` are sampler heuristics, not part of the
    probability-flow ODE, and are not applied.

    Args:
        model: the network, called as ``model(sample, timestep, **model_kwargs)`` with a float
            ``(batch,)`` timestep; it returns a tensor, a tuple whose first item is one, or an
            object with ``.sample`` (diffusers' ``UNet2DOutput``).
        scheduler: a diffusers scheduler with ``alphas_cumprod`` (DDPMScheduler, DDIMScheduler, ...).
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``; default: the scheduler's
            ``config.prediction_type`` (``"epsilon"`` if it has none).
        model_kwargs: extra keyword arguments for every network call (e.g. ``class_labels``).
        interpolation: how ``log alphas_cumprod`` is interpolated between training timesteps:
            ``"cubic"`` (monotone cubic Hermite, smooth; default) or ``"linear"``.
    """

    kind = "diffusers"

    def __init__(self, model, scheduler, prediction_type: str | None = None, model_kwargs: Mapping | None = None,
                 interpolation: str = "cubic"):
        if not callable(model):
            raise TypeError(f"the model must be callable as model(sample, timestep), got {type(model).__name__}")
        table = getattr(scheduler, "alphas_cumprod", None)
        if table is None:
            raise TypeError(
                f"the scheduler must be a diffusers DDPM/DDIM-style scheduler with `alphas_cumprod`, "
                f"got {type(scheduler).__name__}"
            )
        table = torch.as_tensor(table).detach()
        expected = _config_value(scheduler, "num_train_timesteps")
        if expected is not None and int(expected) != table.numel():
            raise ValueError(
                f"scheduler.config.num_train_timesteps = {expected} but alphas_cumprod has {table.numel()} entries"
            )
        if prediction_type is None:
            prediction_type = _config_value(scheduler, "prediction_type", "epsilon")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        path = DiscreteVP(table, interpolation=interpolation, name=f"diffusers-{type(scheduler).__name__}")
        super().__init__(model, path)  # the model becomes a submodule when it is one: fingerprints see its weights
        self.prediction_type = prediction_type
        self.model_kwargs = dict(model_kwargs or {})
        self.interpolation = interpolation
        # Buffers, so that flowsolve's model fingerprint also tells schedules and prediction types apart.
        self.register_buffer("log_alphas_cumprod", path.log_alphas_cumprod.clone())
        self.register_buffer("prediction_code", torch.tensor([_PREDICTION_CODES[prediction_type]]))
        channels, size = _config_value(model, "in_channels"), _config_value(model, "sample_size")
        if channels is not None and size is not None:
            size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
            self.sample_shape = (int(channels), *(int(s) for s in size))

    @property
    def predicts(self) -> str:
        return _FLOWSOLVE_PREDICTIONS[self.prediction_type]

    @property
    def path(self) -> DiscreteVP:
        """The continuous path (a flowsolve :class:`~flowsolve.schedulers.Scheduler`); same as ``.scheduler``."""
        return self.scheduler

    @property
    def num_train_timesteps(self) -> int:
        return self.path.num_train_timesteps

    # --- the Adapter hooks ---------------------------------------------------------------------
    def times(self, t, x: torch.Tensor) -> torch.Tensor:
        """``t`` as ``(batch,)`` flow times in its own float dtype, clamped to ``[0, 1]``."""
        t = torch.as_tensor(t, device=x.device)
        if not t.is_floating_point():
            t = t.to(x.dtype)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        elif t.shape != (x.shape[0],):
            raise ValueError(f"t must be 0-dim or ({x.shape[0]},) for x of shape {tuple(x.shape)}, got {tuple(t.shape)}")
        return t.clamp(0.0, 1.0)

    def network(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network's prediction at flow time ``t``: called at the fractional training timestep, in its dtype."""
        timestep = self.path.timestep(t).to(torch.float32)
        dtype = getattr(self.model, "dtype", None)
        sample = x.to(dtype) if isinstance(dtype, torch.dtype) else x
        out = self.model(sample, timestep, **self.model_kwargs)
        if hasattr(out, "sample"):
            out = out.sample
        elif isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the diffusers model returned {got} for a sample of shape {tuple(x.shape)}")
        return out.to(x.dtype)

    # --- public --------------------------------------------------------------------------------
    # The network sees the times as given; the path's coefficients are taken in float64, where the
    # interpolated table keeps its digits.
    def forward(self, t, x: torch.Tensor) -> torch.Tensor:
        t = self.times(t, x)
        return velocity_from(self.predicts, self.network(x, t), x, t.to(torch.float64), self.path)

    def predictions(self, t, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's estimates ``(x1_hat, eps_hat)`` of the data and the noise at flow time ``t``."""
        t = self.times(t, x)
        return predictions_from(self.predicts, self.network(x, t), x, t.to(torch.float64), self.path)

    def denoise(self, x: torch.Tensor) -> torch.Tensor:
        """The data estimate at ``t = 1`` (step 0): removes the last ``sqrt(beta_0)`` of noise."""
        return self.predictions(torch.ones((), dtype=x.dtype, device=x.device), x)[0]

    def extra_repr(self) -> str:
        # flowsolve's model fingerprint hashes this text: every setting that changes the field is here.
        kwargs = {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in sorted(self.model_kwargs.items())}
        return (f"prediction_type={self.prediction_type!r}, num_train_timesteps={self.num_train_timesteps}, "
                f"interpolation={self.interpolation!r}, model_kwargs={kwargs!r}")


def diffusers_adapter(model, scheduler=None, prediction_type: str | None = None, **options) -> DiffusersVelocity:
    """Factory registered as adapter kind ``"diffusers"``.

    ``model`` is a network (with ``scheduler=`` given) or a pipeline with ``.unet`` and
    ``.scheduler`` (an explicit ``scheduler=`` overrides the pipeline's). ``options``:
    ``model_kwargs``, ``interpolation`` (see :class:`DiffusersVelocity`).
    """
    if is_pipeline(model):
        scheduler = model.scheduler if scheduler is None else scheduler
        model = model.unet
    if scheduler is None:
        raise TypeError(
            "the 'diffusers' adapter needs scheduler= (a diffusers DDPM/DDIM-style scheduler) "
            "unless the model is a pipeline with .unet and .scheduler"
        )
    return DiffusersVelocity(model, scheduler, prediction_type=prediction_type, **options)
