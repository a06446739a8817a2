"""The bundled models: names, architectures, adapters and weight files."""

from __future__ import annotations

from importlib import resources
from typing import Any, Callable

import attrs
import torch

from flowsolve.core.errors import FlowsolveFileNotFoundError, FlowsolveValueError
from flowsolve.models.adapters import adapt
from flowsolve.models.conditioning import Labels
from flowsolve.models.guidance import ClassifierFreeGuidance
from flowsolve.models.zoo.networks import DigitsMLP
from flowsolve.models.zoo.unet import NULL_LABEL, NUM_CLASSES, ConditionalUNet
from flowsolve.paths.discrete_vp import DiscreteVP, linear_betas_alphas_cumprod


@attrs.frozen
class ZooModel:
    """How one bundled model is built.

    Attributes:
        name: the model's name (also the weight file's stem).
        kind: the :func:`flowsolve.adapt` kind that turns the network into a velocity field.
        description: one line for listings.
        architecture: ``"digits-mlp"`` (:class:`DigitsMLP`) or ``"conditional-unet"``
            (:class:`~flowsolve.models.zoo.unet.ConditionalUNet`, called ``net(x, t, labels)``).
        network_options: keyword arguments of the architecture.
        sample_shape: the shape of one sample (what noise to draw).
        adapter_options: a function returning the keyword arguments of :func:`flowsolve.adapt`
            (e.g. the scheduler of a DDPM table).
        classes: number of class labels of a class-conditional model (its null label is
            ``classes``); ``None`` for an unconditional one.
        weights_format: ``"pt"`` (a torch state dict) or ``"safetensors"``.
    """

    name: str
    kind: str
    description: str
    architecture: str = "digits-mlp"
    network_options: dict[str, Any] = attrs.field(factory=dict)
    sample_shape: tuple[int, ...] = (64,)
    adapter_options: Callable[[], dict[str, Any]] = dict
    classes: int | None = None
    weights_format: str = "pt"


def _ddpm_linear() -> dict[str, Any]:
    return {"scheduler": DiscreteVP(linear_betas_alphas_cumprod(1e-4, 2e-2, 1000), name="ddpm-linear")}


ZOO = {
    spec.name: spec
    for spec in (
        ZooModel("digits-fm-ot", "fm-ot", "8x8 digits, velocity prediction, flow matching on the FM-OT path",
                 network_options={"width": 256, "depth": 3}),
        ZooModel("digits-fm-cs", "fm-cs", "8x8 digits, velocity prediction, flow matching on the cosine path",
                 network_options={"width": 256, "depth": 3}),
        ZooModel("digits-eps-vp", "eps-vp",
                 "8x8 digits, noise prediction on the VP path (score-SDE time s = 1 - t, stopped at s = 1e-3)",
                 network_options={"width": 256, "depth": 3}),
        ZooModel("animals-fm-ot", "fm-ot",
                 "28x28 animal-mnist silhouettes, 10 classes + null label, U-Net, velocity on the FM-OT path",
                 architecture="conditional-unet", sample_shape=(1, 28, 28), classes=NUM_CLASSES,
                 weights_format="safetensors"),
        ZooModel("animals-eps-vp", "eps",
                 "28x28 animal-mnist silhouettes, 10 classes + null label, U-Net, DDPM noise prediction "
                 "(linear betas 1e-4..2e-2, 1000 steps)",
                 architecture="conditional-unet", sample_shape=(1, 28, 28), adapter_options=_ddpm_linear,
                 classes=NUM_CLASSES, weights_format="safetensors"),
    )
}

MODEL_NAMES: tuple[str, ...] = tuple(ZOO)
DIGITS_MODEL_NAMES: tuple[str, ...] = tuple(name for name in ZOO if name.startswith("digits-"))
CONDITIONAL_MODEL_NAMES: tuple[str, ...] = tuple(name for name, model in ZOO.items() if model.classes is not None)


def spec(name: str) -> ZooModel:
    """The :class:`ZooModel` called ``name``; ``ValueError`` listing the valid names otherwise."""
    if name not in ZOO:
        raise FlowsolveValueError(f"unknown zoo model {name!r}; choose one of {list(MODEL_NAMES)}")
    return ZOO[name]


def weights_path(name: str):
    """The packaged weight file of model ``name`` (an ``importlib.resources`` traversable)."""
    model = spec(name)
    return resources.files(__package__).joinpath("weights").joinpath(f"{model.name}.{model.weights_format}")


def new_network(name: str) -> torch.nn.Module:
    """An untrained network with model ``name``'s architecture."""
    model = spec(name)
    if model.architecture == "conditional-unet":
        return ConditionalUNet(**model.network_options)
    return DigitsMLP(**model.network_options)


def _read_weights(name: str, path) -> dict[str, torch.Tensor]:
    if spec(name).weights_format == "safetensors":
        from safetensors.torch import load as load_safetensors

        return load_safetensors(path.read_bytes())
    with path.open("rb") as handle:
        return torch.load(handle, map_location="cpu", weights_only=True)


def network(name: str) -> torch.nn.Module:
    """The trained network of model ``name`` (float32, CPU, eval mode, no parameter gradients).

    It is called in the model's own convention: ``net(x, time)`` (``digits-eps-vp``: diffusion
    time), or ``net(x, t, labels)`` for the class-conditional ``animals-*`` models (flow time).
    """
    path = weights_path(name)
    if not path.is_file():
        script = "train_animals.py --variant " + name.removeprefix("animals-") if name.startswith("animals-") \
            else f"train_digits.py --model {name}"
        raise FlowsolveFileNotFoundError(
            f"the weights of zoo model {name!r} are missing ({path}); recreate them with: python scripts/{script}"
        )
    net = new_network(name)
    net.load_state_dict(_read_weights(name, path))
    return net.eval().requires_grad_(False)


def velocity_field(name: str, net: torch.nn.Module, guidance: float = 0.0):
    """Turn a network of model ``name`` into its velocity field ``u(t, x)`` (t = 0 noise, t = 1 data).

    A class-conditional network is wrapped in :class:`~flowsolve.ClassifierFreeGuidance` at
    weight ``guidance``; its fits draw a uniform label per path (``Labels(classes)``).
    """
    model = spec(name)
    if model.classes is None:
        if guidance:
            raise FlowsolveValueError(f"zoo model {name!r} is unconditional: it takes no guidance scale")
        return adapt(net, model.kind, **model.adapter_options())
    guided = ClassifierFreeGuidance(net, guidance, null_condition=torch.tensor([NULL_LABEL]),
                                    distribution=Labels(model.classes))
    return adapt(guided, model.kind, **model.adapter_options())


def load_model(name: str, guidance: float = 0.0):
    """The velocity field of bundled model ``name`` (one of :data:`MODEL_NAMES`).

    The field is a ``torch.nn.Module`` with a ``sample_shape`` (``(64,)`` for the digits,
    ``(1, 28, 28)`` for the animals): draw ``x0`` of that shape per sample from a standard
    normal and integrate from ``t = 0`` to ``t = 1`` to get images with pixels in about
    ``[-1, 1]``. It accepts 0-dim or per-sample ``(batch,)`` times; float32 and float64 states
    (the weights stay float32 unless moved with ``.to(dtype)``). Its fingerprint hashes the weights.

    The ``animals-*`` models are class-conditional: bind labels per sample with
    ``u.bind({"labels": labels})`` (unbound, they are the unconditional model: the null label);
    ``guidance`` is the classifier-free guidance weight ``w`` of ``(1 + w) cond - w uncond``.

    Example:
        >>> import torch, flowsolve
        >>> u = load_model("digits-fm-ot")
        >>> x0 = torch.randn(4, *u.sample_shape, generator=torch.Generator().manual_seed(0))
        >>> flowsolve.RK4().sample(u, x0, nfe=20).shape
        torch.Size([4, 64])
    """
    return velocity_field(name, network(name), guidance)


def models() -> dict[str, Callable]:
    """``{name: factory}`` for the ``flowsolve_models`` hook; ``factory(**options)`` loads the field
    (options: ``guidance=`` for the class-conditional models)."""
    return {name: (lambda name=name, **options: load_model(name, **options)) for name in MODEL_NAMES}
