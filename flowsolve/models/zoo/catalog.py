"""The bundled digits models: names, architectures, adapters and weight files."""

from __future__ import annotations

from importlib import resources
from typing import Callable

import attrs
import torch

from flowsolve.core.errors import FlowsolveFileNotFoundError, FlowsolveValueError
from flowsolve.models.adapters import adapt
from flowsolve.models.zoo.networks import DigitsMLP


@attrs.frozen
class ZooModel:
    """How one bundled model is built.

    Attributes:
        name: the model's name (also the weight file's stem).
        kind: the :func:`flowsolve.adapt` kind that turns the network into a velocity field.
        width, depth: the :class:`DigitsMLP` architecture.
        description: one line for listings.
    """

    name: str
    kind: str
    width: int
    depth: int
    description: str


ZOO = {
    spec.name: spec
    for spec in (
        ZooModel("digits-fm-ot", "fm-ot", 256, 3,
                 "8x8 digits, velocity prediction, flow matching on the FM-OT path"),
        ZooModel("digits-fm-cs", "fm-cs", 256, 3,
                 "8x8 digits, velocity prediction, flow matching on the cosine path"),
        ZooModel("digits-eps-vp", "eps-vp", 256, 3,
                 "8x8 digits, noise prediction on the VP path (score-SDE time s = 1 - t, stopped at s = 1e-3)"),
    )
}

MODEL_NAMES: tuple[str, ...] = tuple(ZOO)


def spec(name: str) -> ZooModel:
    """The :class:`ZooModel` called ``name``; ``ValueError`` listing the valid names otherwise."""
    if name not in ZOO:
        raise FlowsolveValueError(f"unknown zoo model {name!r}; choose one of {list(MODEL_NAMES)}")
    return ZOO[name]


def weights_path(name: str):
    """The packaged weight file of model ``name`` (an ``importlib.resources`` traversable)."""
    return resources.files(__package__).joinpath("weights").joinpath(f"{spec(name).name}.pt")


def new_network(name: str) -> DigitsMLP:
    """An untrained network with model ``name``'s architecture."""
    model = spec(name)
    return DigitsMLP(width=model.width, depth=model.depth)


def network(name: str) -> DigitsMLP:
    """The trained network of model ``name`` (float32, CPU, eval mode, no parameter gradients).

    It is called as ``net(x, time)`` in the model's own convention (``eps-vp``: diffusion time).
    """
    path = weights_path(name)
    if not path.is_file():
        raise FlowsolveFileNotFoundError(
            f"the weights of zoo model {name!r} are missing ({path}); "
            f"recreate them with: python scripts/train_digits.py --model {name}"
        )
    with path.open("rb") as handle:
        state = torch.load(handle, map_location="cpu", weights_only=True)
    net = new_network(name)
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)


def velocity_field(name: str, net: torch.nn.Module):
    """Turn a network of model ``name`` into its velocity field ``u(t, x)`` (t = 0 noise, t = 1 data)."""
    model = spec(name)
    return adapt(net, model.kind)


def load_model(name: str):
    """The velocity field of bundled model ``name`` (one of :data:`MODEL_NAMES`).

    The field is a ``torch.nn.Module`` with ``sample_shape == (64,)``: draw ``x0`` of shape
    ``(batch, 64)`` from a standard normal and integrate from ``t = 0`` to ``t = 1`` to get
    flattened 8x8 digits with pixels in about ``[-1, 1]``. It accepts 0-dim or per-sample
    ``(batch,)`` times; float32 and float64 states (the weights stay float32 unless moved with
    ``.to(dtype)``). Its fingerprint hashes the weights.

    Example:
        >>> import torch, flowsolve
        >>> u = load_model("digits-fm-ot")
        >>> x0 = torch.randn(4, *u.sample_shape, generator=torch.Generator().manual_seed(0))
        >>> flowsolve.RK4().sample(u, x0, nfe=20).shape
        torch.Size([4, 64])
    """
    return velocity_field(name, network(name))


def models() -> dict[str, Callable]:
    """``{name: factory}`` for the ``flowsolve_models`` hook; ``factory()`` loads the field."""
    return {name: (lambda name=name: load_model(name)) for name in MODEL_NAMES}
