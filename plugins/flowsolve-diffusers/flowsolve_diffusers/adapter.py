"""diffusers networks and schedulers as flowsolve velocity fields.

Two adapter kinds:

* ``"diffusers"``: a network predicting eps / v / sample (``UNet2DModel``, ``DiTTransformer2DModel``,
  ...) with a DDPM/DDIM-style scheduler (an ``alphas_cumprod`` table), on the continuous path of
  :class:`~flowsolve.paths.discrete_vp.DiscreteVP`: :class:`DiffusersVelocity`;
* ``"diffusers-flow"``: a flow-matching network with a ``FlowMatchEulerDiscreteScheduler``
  (``x = (1 - sigma) x1 + sigma noise``, the network predicts ``noise - x1`` at timestep
  ``sigma * num_train_timesteps``), on flowsolve's FM-OT path with ``t = 1 - sigma``:
  :class:`FlowMatchVelocity`.

Both pass conditioning the way diffusers pipelines do (keyword arguments of the network:
``class_labels``, ``encoder_hidden_states``, ...), bind per-sample conditions with
``u.bind(conditions)`` (:mod:`flowsolve.models.conditioning`), and run classifier-free guidance
as one network call of twice the batch per evaluation, combined as diffusers combines it
(``uncond + scale * (cond - uncond)``).

Nothing here imports diffusers: models and schedulers are recognised by what they offer
(``model(sample, timestep)``, ``scheduler.alphas_cumprod``, ``scheduler.config``), so loading
the plugin stays cheap and works with any diffusers version that keeps those names.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
from collections.abc import Mapping
from typing import Any

import torch

from flowsolve import Adapter
from flowsolve.models.conditioning import ConditionDistribution, Conditions, Labels, check_conditions
from flowsolve.paths.predictions import predictions_from, velocity_from
from flowsolve.paths.schedulers import FMOT

from .schedule import DiscreteVP

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_PREDICTION_CODES = {name: code for code, name in enumerate(PREDICTION_TYPES)}
# diffusers' prediction types in flowsolve's words (flowsolve.paths.predictions.PREDICTION_TYPES).
_FLOWSOLVE_PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x1"}
# Where a pipeline keeps its denoising network, first found wins.
_NETWORK_NAMES = ("unet", "transformer")
# Tensors up to this size are written out in full in extra_repr (which fingerprints hash); larger
# ones (prompt embeddings) by shape, dtype and a hash of their bytes.
_LISTED_NUMEL = 64


def _config_value(obj, name, default=None):
    config = getattr(obj, "config", None)
    if config is None:
        return default
    if isinstance(config, Mapping):
        return config.get(name, default)
    return getattr(config, name, default)


def _network_of(pipeline):
    for name in _NETWORK_NAMES:
        network = getattr(pipeline, name, None)
        if callable(network):
            return network
    return None


def is_flow_matching_scheduler(scheduler) -> bool:
    """``scheduler`` (or a scheduler config) samples flow matching: a
    ``FlowMatchEulerDiscreteScheduler``-like scheduler without an ``alphas_cumprod`` table
    (``x = (1 - sigma) x1 + sigma noise``, timestep ``sigma * num_train_timesteps``), or a
    :class:`~flowsolve_diffusers.BespokeScheduler` in flow-matching mode."""
    if scheduler is None or getattr(scheduler, "alphas_cumprod", None) is not None:
        return False
    config = scheduler if isinstance(scheduler, Mapping) else getattr(scheduler, "config", None)
    if isinstance(config, Mapping):
        if config.get("path") == "flow-matching":
            return True
        name = config.get("_class_name", "")
        if isinstance(name, str) and name.startswith("FlowMatch"):
            return True
        if "beta_start" in config or "trained_betas" in config or "trained_alphas_cumprod" in config:
            return False
    return type(scheduler).__name__.startswith("FlowMatch") or (
        isinstance(config, Mapping) and "shift" in config)


def is_pipeline(obj) -> bool:
    """``obj`` looks like a diffusers pipeline of a DDPM/DDIM-style model: a callable ``.unet`` or
    ``.transformer`` and a ``.scheduler`` with an ``alphas_cumprod`` table (DDPMPipeline,
    DDIMPipeline, DiTPipeline, ...)."""
    scheduler = getattr(obj, "scheduler", None)
    return (_network_of(obj) is not None and scheduler is not None
            and getattr(scheduler, "alphas_cumprod", None) is not None)


def is_flow_pipeline(obj) -> bool:
    """``obj`` looks like a diffusers flow-matching pipeline: a callable ``.transformer`` (or
    ``.unet``) and a ``FlowMatchEulerDiscreteScheduler``-like ``.scheduler``."""
    return _network_of(obj) is not None and is_flow_matching_scheduler(getattr(obj, "scheduler", None))


def _pipeline_guidance_scale(pipeline) -> float | None:
    """The ``guidance_scale`` a pipeline's ``__call__`` uses by default (DiT: 4.0), if it has one."""
    try:
        parameter = inspect.signature(type(pipeline).__call__).parameters.get("guidance_scale")
    except (TypeError, ValueError):
        return None
    default = None if parameter is None else parameter.default
    return float(default) if isinstance(default, (int, float)) and not isinstance(default, bool) else None


def _takes_timestep_keyword(model) -> bool:
    """Whether ``model`` names a ``timestep`` parameter (diffusers networks do; SD3's transformer
    needs it as a keyword, its second positional parameter being the text embeddings)."""
    target = model.forward if isinstance(model, torch.nn.Module) else model
    try:
        return "timestep" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def _class_count(model) -> int | None:
    """Number of classes of a class-conditional diffusers network (DiT: ``num_embeds_ada_norm``,
    UNet: ``num_class_embeds``), else ``None``."""
    if not _takes_keyword(model, "class_labels"):
        return None
    for name in ("num_embeds_ada_norm", "num_class_embeds"):
        value = _config_value(model, name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _takes_keyword(model, name: str) -> bool:
    target = model.forward if isinstance(model, torch.nn.Module) else model
    try:
        return name in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def _describe(value) -> Any:
    """A keyword argument as extra_repr shows it (small tensors in full, large ones hashed)."""
    if isinstance(value, torch.Tensor):
        if value.numel() <= _LISTED_NUMEL:
            return value.tolist()
        data = value.detach().cpu().contiguous()
        digest = hashlib.sha256(str(data.dtype).encode() + data.reshape(-1).view(torch.uint8).numpy().tobytes())
        return f"tensor{tuple(value.shape)}:{str(value.dtype).replace('torch.', '')}:{digest.hexdigest()[:16]}"
    if isinstance(value, Mapping):
        return {k: _describe(v) for k, v in sorted(value.items())}
    return value


def _output_tensor(out, what: str) -> torch.Tensor:
    if hasattr(out, "sample"):
        out = out.sample
    elif isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the diffusers {what} returned {type(out).__name__}, not a tensor")
    return out


def flow_timestep(t: torch.Tensor, scale: float) -> torch.Tensor:
    """The flow-matching network's timestep at flow time ``t``: ``sigma * scale`` with
    ``sigma = 1 - t`` (computed in ``t``'s dtype, returned as float32, as diffusers'
    ``FlowMatchEulerDiscreteScheduler`` computes ``sigmas * num_train_timesteps``)."""
    return ((1 - t) * scale).to(torch.float32)


class _DiffusersNetwork:
    """Calling a diffusers network the way its pipelines do: keyword conditioning, learned-sigma
    channels dropped, classifier-free guidance batched into one call; per-sample conditions
    bound with :meth:`bind`. Mixed into the two adapters below (which are ``torch.nn.Module``)."""

    model: Any
    model_kwargs: dict
    negative_model_kwargs: dict | None
    guidance_scale: float
    negative_first: bool
    class_count: int | None
    _conditions: ConditionDistribution | None
    _timestep_keyword: bool

    def _setup_network(self, model, model_kwargs, negative_model_kwargs, guidance_scale, negative_first,
                       null_class_label, conditions) -> None:
        self.model_kwargs = dict(model_kwargs or {})
        self._timestep_keyword = _takes_timestep_keyword(model)
        self.class_count = _class_count(model)
        negative = None if negative_model_kwargs is None else dict(negative_model_kwargs)
        if self.class_count is not None:
            # A class-conditional network. DiT's label embedding has an extra row for the null
            # class, index num_classes (DiTPipeline's 1000 for the ImageNet models); a UNet's
            # (num_class_embeds) has none, so it is guided only with an explicit null_class_label.
            null = null_class_label
            if null is None and _config_value(model, "num_embeds_ada_norm") == self.class_count:
                null = self.class_count
            if null is not None:
                self.model_kwargs.setdefault("class_labels", torch.tensor([int(null)]))  # unbound: unconditional
                if negative is None:
                    negative = {"class_labels": torch.tensor([int(null)])}
            if conditions is None:
                conditions = Labels(self.class_count, key="class_labels")
        self.negative_model_kwargs = negative
        self.guidance_scale = float(guidance_scale)
        if self.guidance_scale > 1 and negative is None:
            raise ValueError(
                f"guidance_scale={self.guidance_scale} needs the unconditional inputs: pass negative_model_kwargs= "
                "(e.g. the negative prompt's encoder_hidden_states), or use a class-conditional network"
            )
        if conditions is not None and not isinstance(conditions, ConditionDistribution):
            raise TypeError(f"conditions must be a flowsolve ConditionDistribution (e.g. Labels(1000, key='class_labels')), "
                            f"got {type(conditions).__name__}")
        bindable = set(conditions.keys) if conditions is not None else set()
        unknown = sorted(set(negative or {}) - set(self.model_kwargs) - bindable)
        if unknown:
            raise ValueError(f"negative_model_kwargs has {unknown}, which neither model_kwargs nor the conditions "
                             "give: give both the conditional and the unconditional value of every guided input")
        # DiT puts the conditional half first; SD3 / Flux-style pipelines the negative prompt.
        self.negative_first = (self.class_count is None) if negative_first is None else bool(negative_first)
        self._conditions = conditions

    @property
    def guided(self) -> bool:
        """Whether each evaluation runs classifier-free guidance (``guidance_scale > 1``, as in diffusers)."""
        return self.guidance_scale > 1

    @property
    def condition_distribution(self) -> ConditionDistribution | None:
        """Where a fit draws each path's conditions from: class labels for a class-conditional
        network (``Labels(num_classes, key="class_labels")``), or the ``conditions=`` given."""
        return self._conditions

    # --- the network call --------------------------------------------------------------------------
    def _forward(self, sample: torch.Tensor, timestep: torch.Tensor, kwargs: dict) -> torch.Tensor:
        if self._timestep_keyword:
            out = self.model(sample, timestep=timestep, **kwargs)
        else:
            out = self.model(sample, timestep, **kwargs)
        out = _output_tensor(out, "model")
        if out.dim() == sample.dim() and out.shape[1] == 2 * sample.shape[1] and out.shape[2:] == sample.shape[2:]:
            out = out[:, : sample.shape[1]]  # learned sigma (DiT, IF): the prediction is the first half
        if out.shape != sample.shape:
            raise ValueError(f"the diffusers model returned {tuple(out.shape)} for a sample of shape {tuple(sample.shape)}")
        return out

    @staticmethod
    def _rows(kwargs: Mapping, batch: int, device) -> tuple[dict, set]:
        """The keyword arguments for a batch: tensors with one row per sample (or a single row,
        expanded) are per-sample; everything else is passed as given."""
        out, per_sample = {}, set()
        for name, value in kwargs.items():
            if isinstance(value, torch.Tensor):
                if value.device != device:
                    value = value.to(device)
                if value.dim() >= 1 and value.shape[0] == batch:
                    per_sample.add(name)
                elif value.dim() >= 1 and value.shape[0] == 1:
                    value = value.expand(batch, *value.shape[1:])
                    per_sample.add(name)
            out[name] = value
        return out, per_sample

    def _call_network(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """The network's prediction at ``(batch,)`` float32 ``timestep``: one call, of twice the
        batch when guided."""
        batch = x.shape[0]
        dtype = getattr(self.model, "dtype", None)
        sample = x.to(dtype) if isinstance(dtype, torch.dtype) else x
        kwargs, per_sample = self._rows(self.model_kwargs, batch, x.device)
        if not self.guided:
            return self._forward(sample, timestep, kwargs)
        negative, _ = self._rows(self.negative_model_kwargs or {}, batch, x.device)
        unbound = sorted(set(negative) - set(kwargs))
        if unbound:
            raise ValueError(f"the guided field has no conditional {unbound}: bind them first, "
                             f"u.bind({{{', '.join(repr(k) + ': ...' for k in unbound)}}})")
        merged = dict(kwargs)
        for name in per_sample:
            unconditional = negative.get(name, kwargs[name])
            pair = (unconditional, kwargs[name]) if self.negative_first else (kwargs[name], unconditional)
            merged[name] = torch.cat(pair)
        out = self._forward(torch.cat([sample, sample]), torch.cat([timestep, timestep]), merged)
        first, second = out[:batch], out[batch:]
        conditional, unconditional = (second, first) if self.negative_first else (first, second)
        return unconditional + self.guidance_scale * (conditional - unconditional)

    # --- conditions --------------------------------------------------------------------------------
    def bind(self, conditions: Conditions):
        """This field with per-sample ``conditions`` (network keyword arguments with one row per
        sample, e.g. ``{"class_labels": labels}``; ``"labels"`` is accepted for ``class_labels``)
        bound: a copy sharing the network (see :mod:`flowsolve.models.conditioning`)."""
        if not isinstance(conditions, Mapping):
            raise TypeError(f"conditions must be a dict of name -> tensor, got {type(conditions).__name__}")
        rows = {value.shape[0] for value in conditions.values() if isinstance(value, torch.Tensor) and value.dim()}
        check_conditions(dict(conditions), rows.pop() if len(rows) == 1 else -1)
        kwargs = {}
        for name, value in conditions.items():
            if name == "labels" and self.class_count is not None:
                name = "class_labels"
            if name in ("guidance", "guidance_scale"):
                raise ValueError("per-sample guidance scales are not supported by the diffusers adapters; adapt the "
                                 "pipeline once per guidance_scale")
            kwargs[name] = value
        bound = copy.copy(self)
        module = bound if isinstance(bound, torch.nn.Module) else None
        if module is not None:
            module._modules, module._buffers, module._parameters = (
                dict(self._modules), dict(self._buffers), dict(self._parameters))  # type: ignore[attr-defined]
        bound.model_kwargs = {**self.model_kwargs, **kwargs}
        # What select_rows needs to re-bind another arrangement of the same samples.
        vars(bound).update(bound_conditions=dict(conditions), unbound_field=self)
        return bound

    def _network_repr(self) -> str:
        """The guidance settings, when they differ from an unguided call (older fingerprints stay)."""
        if not self.guided and self.negative_model_kwargs is None:
            return ""
        return (f", guidance_scale={self.guidance_scale}, negative_first={self.negative_first}, "
                f"negative_model_kwargs={_describe(self.negative_model_kwargs or {})!r}")


class DiffusersVelocity(_DiffusersNetwork, Adapter):
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
        model: the network, called as ``model(sample, timestep, **model_kwargs)`` (``timestep=``
            as a keyword when it names that parameter) with a float ``(batch,)`` timestep; it
            returns a tensor, a tuple whose first item is one, or an object with ``.sample``
            (``UNet2DOutput``). An output with twice the channels (learned sigma) is cut to its
            first half.
        scheduler: a diffusers scheduler with ``alphas_cumprod`` (DDPMScheduler, DDIMScheduler, ...).
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``; default: the scheduler's
            ``config.prediction_type`` (``"epsilon"`` if it has none).
        model_kwargs: extra keyword arguments for every network call (e.g. ``class_labels``):
            tensors with one row per sample, or one row for all; others are passed as given.
        interpolation: how ``log alphas_cumprod`` is interpolated between training timesteps:
            ``"cubic"`` (monotone cubic Hermite, smooth; default) or ``"linear"``.
        guidance_scale: classifier-free guidance as diffusers runs it, ``uncond + scale (cond -
            uncond)`` for ``scale > 1`` (1: none), the two halves in one call of twice the batch.
        negative_model_kwargs: the unconditional values of guided inputs (default, for a
            class-conditional network: the null class).
        negative_first: order of the halves (default: conditional first for class labels, as
            ``DiTPipeline``; unconditional first otherwise, as the text-to-image pipelines).
        null_class_label: the null class of a class-conditional network (default its class count).
        conditions: the :class:`~flowsolve.ConditionDistribution` fits draw each path's conditions
            from (default, class-conditional: uniform class labels).

    A class-conditional network (``class_labels`` and ``num_embeds_ada_norm`` / ``num_class_embeds``
    in its config, e.g. DiT) is unconditional until labels are bound: ``u.bind({"class_labels": labels})``.
    """

    kind = "diffusers"

    def __init__(self, model, scheduler, prediction_type: str | None = None, model_kwargs: Mapping | None = None,
                 interpolation: str = "cubic", *, guidance_scale: float = 1.0,
                 negative_model_kwargs: Mapping | None = None, negative_first: bool | None = None,
                 null_class_label: int | None = None, conditions: ConditionDistribution | None = None):
        if not callable(model):
            raise TypeError(f"the model must be callable as model(sample, timestep), got {type(model).__name__}")
        table = getattr(scheduler, "alphas_cumprod", None)
        if table is None:
            hint = (" (a flow-matching scheduler: use the 'diffusers-flow' adapter)"
                    if is_flow_matching_scheduler(scheduler) else "")
            raise TypeError(
                f"the scheduler must be a diffusers DDPM/DDIM-style scheduler with `alphas_cumprod`, "
                f"got {type(scheduler).__name__}{hint}"
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
        self.interpolation = interpolation
        self._setup_network(model, model_kwargs, negative_model_kwargs, guidance_scale, negative_first,
                            null_class_label, conditions)
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
        return _flow_times(t, x)

    def network(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network's prediction at flow time ``t``: called at the fractional training timestep, in its dtype."""
        return self._call_network(x, self.path.timestep(t).to(torch.float32)).to(x.dtype)

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
        return (f"prediction_type={self.prediction_type!r}, num_train_timesteps={self.num_train_timesteps}, "
                f"interpolation={self.interpolation!r}, model_kwargs={_describe(self.model_kwargs)!r}"
                f"{self._network_repr()}")


class FlowMatchVelocity(_DiffusersNetwork, Adapter):
    """Velocity field of a diffusers flow-matching network (``FlowMatchEulerDiscreteScheduler``:
    SD3, Flux, Sana, ... style models).

    diffusers' flow matching runs ``sigma`` from 1 (noise) to 0 (data) on
    ``x = (1 - sigma) x1 + sigma noise`` and the network predicts ``noise - x1`` at timestep
    ``sigma * num_train_timesteps``. That is flowsolve's FM-OT path (``.scheduler``) with flow time
    ``t = 1 - sigma``, whose velocity ``x1 - noise`` is minus the network's output. The
    scheduler's ``shift`` / dynamic shifting only place diffusers' own steps; the field does not
    depend on them.

    Args:
        model: the transformer, called as ``model(latents, timestep=..., **model_kwargs)``.
        scheduler: the pipeline's flow-matching scheduler (its ``num_train_timesteps``), or ``None``.
        num_train_timesteps: overrides the scheduler's (default 1000).
        timestep_scale: what ``sigma`` is multiplied by for the network's timestep (default
            ``num_train_timesteps``; Flux-style pipelines, which divide by 1000 before the call, use 1).
        model_kwargs, negative_model_kwargs, guidance_scale, negative_first, null_class_label,
        conditions: as for :class:`DiffusersVelocity` (e.g. ``model_kwargs={"encoder_hidden_states":
        prompt_embeds, "pooled_projections": pooled}`` for SD3's transformer).
    """

    kind = "diffusers-flow"
    predicts = "velocity"

    def __init__(self, model, scheduler=None, *, num_train_timesteps: int | None = None,
                 timestep_scale: float | None = None, model_kwargs: Mapping | None = None,
                 negative_model_kwargs: Mapping | None = None, guidance_scale: float = 1.0,
                 negative_first: bool | None = None, null_class_label: int | None = None,
                 conditions: ConditionDistribution | None = None):
        if not callable(model):
            raise TypeError(f"the model must be callable as model(sample, timestep=...), got {type(model).__name__}")
        if scheduler is not None and not is_flow_matching_scheduler(scheduler):
            raise TypeError(f"{type(scheduler).__name__} is not a flow-matching scheduler (no "
                            "FlowMatchEulerDiscreteScheduler-like config); DDPM/DDIM-style schedulers use the "
                            "'diffusers' adapter")
        if num_train_timesteps is None:
            num_train_timesteps = int(_config_value(scheduler, "num_train_timesteps", 1000))
        super().__init__(model, FMOT())
        self.num_train_timesteps = int(num_train_timesteps)
        self.timestep_scale = float(self.num_train_timesteps if timestep_scale is None else timestep_scale)
        self._setup_network(model, model_kwargs, negative_model_kwargs, guidance_scale, negative_first,
                            null_class_label, conditions)
        channels, size = _config_value(model, "in_channels"), _config_value(model, "sample_size")
        if channels is not None and size is not None:
            size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
            self.sample_shape = (int(channels), *(int(s) for s in size))

    def times(self, t, x: torch.Tensor) -> torch.Tensor:
        """``t`` as ``(batch,)`` flow times in its own float dtype, clamped to ``[0, 1]``."""
        return _flow_times(t, x)

    def network(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The velocity ``x1 - noise``: minus the network's ``noise - x1`` at timestep ``(1 - t) * scale``."""
        return -self._call_network(x, flow_timestep(t, self.timestep_scale)).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"num_train_timesteps={self.num_train_timesteps}, timestep_scale={self.timestep_scale}, "
                f"model_kwargs={_describe(self.model_kwargs)!r}{self._network_repr()}")


def _flow_times(t, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, device=x.device)
    if not t.is_floating_point():
        t = t.to(x.dtype)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    elif t.shape != (x.shape[0],):
        raise ValueError(f"t must be 0-dim or ({x.shape[0]},) for x of shape {tuple(x.shape)}, got {tuple(t.shape)}")
    return t.clamp(0.0, 1.0)


def _pipeline_options(pipeline, options: dict) -> dict:
    """A pipeline's network and, for a class-conditional one, its default guidance scale."""
    network = _network_of(pipeline)
    if _class_count(network) is not None and "guidance_scale" not in options:
        scale = _pipeline_guidance_scale(pipeline)
        if scale is not None:
            options = {**options, "guidance_scale": scale}
    return options


def diffusers_adapter(model, scheduler=None, prediction_type: str | None = None, **options) -> DiffusersVelocity:
    """Factory registered as adapter kind ``"diffusers"``.

    ``model`` is a network (with ``scheduler=`` given) or a pipeline with ``.unet`` or
    ``.transformer`` and ``.scheduler`` (an explicit ``scheduler=`` overrides the pipeline's).
    For a class-conditional pipeline (DiT) the guidance scale defaults to the pipeline's own
    default (``DiTPipeline``: 4.0). ``options``: see :class:`DiffusersVelocity`.
    """
    if is_pipeline(model) or (_network_of(model) is not None and getattr(model, "scheduler", None) is not None):
        scheduler = model.scheduler if scheduler is None else scheduler
        options = _pipeline_options(model, options)
        model = _network_of(model)
    if scheduler is None:
        raise TypeError(
            "the 'diffusers' adapter needs scheduler= (a diffusers DDPM/DDIM-style scheduler) "
            "unless the model is a pipeline with .unet (or .transformer) and .scheduler"
        )
    return DiffusersVelocity(model, scheduler, prediction_type=prediction_type, **options)


def diffusers_flow_adapter(model, scheduler=None, **options) -> FlowMatchVelocity:
    """Factory registered as adapter kind ``"diffusers-flow"``: a flow-matching network (with
    ``scheduler=`` or not) or a pipeline with ``.transformer`` and a flow-matching ``.scheduler``.
    ``options``: see :class:`FlowMatchVelocity`."""
    if _network_of(model) is not None and getattr(model, "scheduler", None) is not None:
        scheduler = model.scheduler if scheduler is None else scheduler
        options = _pipeline_options(model, options)
        model = _network_of(model)
    return FlowMatchVelocity(model, scheduler, **options)
