"""Bundled pre-trained example models: small MLPs trained on scikit-learn's 8x8 digits.

Three models, one per model type of the Bespoke Solvers paper, all sampled as velocity
fields in flowsolve's convention (t = 0 noise, t = 1 data):

- ``digits-fm-ot``: velocity prediction, flow matching on the FM-OT path;
- ``digits-fm-cs``: velocity prediction, flow matching on the cosine path;
- ``digits-eps-vp``: noise prediction on the VP path, score-SDE time ``s = 1 - t``.

Loading needs only torch; ``scripts/train_digits.py`` (which needs scikit-learn) retrains
them and reproduces the shipped weights.

Example:
    >>> import torch, flowsolve
    >>> from flowsolve import zoo
    >>> u = zoo.load_model("digits-fm-cs")
    >>> x0 = torch.randn(8, *u.sample_shape, generator=torch.Generator().manual_seed(0))
    >>> digits = flowsolve.RK4().sample(u, x0, nfe=40).reshape(8, 8, 8)
"""

from flowsolve.models.zoo.catalog import (
    MODEL_NAMES,
    ZOO,
    ZooModel,
    CONDITIONAL_MODEL_NAMES,
    DIGITS_MODEL_NAMES,
    load_model,
    models,
    network,
    new_network,
    velocity_field,
    weights_path,
)
from flowsolve.models.zoo.networks import DigitsMLP, SinusoidalTimeEmbedding

__all__ = [
    "DigitsMLP",
    "MODEL_NAMES",
    "SinusoidalTimeEmbedding",
    "ZOO",
    "ZooModel",
    "CONDITIONAL_MODEL_NAMES",
    "DIGITS_MODEL_NAMES",
    "load_model",
    "models",
    "network",
    "new_network",
    "velocity_field",
    "weights_path",
]
