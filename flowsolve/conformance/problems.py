"""Test problems with a known answer ``x(1)``, and the Hypothesis strategies that draw them.

Every problem is a frozen value (so a diagnosis can name the drawn example) that builds an
:class:`Instance` in float64 on a device. ``generic`` problems (nonlinear *and*
time-dependent) show a method's order exactly; on the others some methods converge faster
than their order (RK3 on ``dx/dt = w cos(w t) x``, any method whose ``c`` is wrong on an
autonomous problem), so there only a lower bound on the order is meaningful.

The Gaussian-mixture problem has no closed form: its reference is torchdiffeq's dopri5 at
``rtol = atol = 1e-14``, cached per drawn mixture.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import attrs
import torch
import torchdiffeq

from flowsolve.conformance.profiles import strategies as st
from flowsolve.core.field import batched_time
from flowsolve.models.gaussian_mixture import GaussianMixtureFlow

BATCH = 4
SEEDS = st.integers(0, 2**16 - 1)


def bounded(low: float, high: float):
    """Finite, NaN-free floats in ``[low, high]``."""
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


def signed(low: float, high: float):
    """Floats with magnitude in ``[low, high]`` and either sign: never (near) zero, so that no
    drawn problem degenerates (Hypothesis tries the simplest values first)."""
    return st.tuples(bounded(low, high), st.sampled_from([1.0, -1.0])).map(lambda pair: pair[0] * pair[1])


@attrs.frozen
class Instance:
    """A velocity field ``u(t, x)``, a batch of initial states ``x0`` and the true ``x(1)``."""

    field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    x0: torch.Tensor
    x1: torch.Tensor


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def noise(shape, seed: int, dtype, device) -> torch.Tensor:
    """Standard normal ``shape`` from ``seed`` (drawn on the CPU, so the same on every device)."""
    return torch.randn(shape, dtype=torch.float64, generator=_generator(seed)).to(device=device, dtype=dtype)


@attrs.frozen
class LinearSystem:
    """``dx/dt = M x``, ``x(1) = expm(M) x0``, ``M = gain * G / sqrt(dim)`` with ``G`` standard normal
    from ``seed``; Lipschitz constant ``||M||_2``. Special: autonomous, linear."""

    dim: int
    gain: float
    seed: int
    name = "linear-system"
    generic = False
    floor = 5e-13  # ~10x the round-off measured at 1024 steps (states up to ~10)

    def matrix(self, device="cpu") -> torch.Tensor:
        draw = torch.randn(self.dim, self.dim, dtype=torch.float64, generator=_generator(self.seed))
        return (self.gain / math.sqrt(self.dim) * draw).to(device)

    @property
    def lipschitz(self) -> float:
        return float(torch.linalg.matrix_norm(self.matrix(), ord=2))

    def field(self, device):
        matrix = self.matrix(device)
        return batched_time(lambda t, x: x @ matrix.to(x).T)

    def initial_state(self, batch: int, device, seed_offset: int = 1) -> torch.Tensor:
        generator = _generator(self.seed + seed_offset)
        return torch.randn(batch, self.dim, dtype=torch.float64, generator=generator).to(device)

    def build(self, device) -> Instance:
        x0 = self.initial_state(BATCH, device)
        return Instance(self.field(device), x0, x0 @ torch.linalg.matrix_exp(self.matrix(device)).T)


@attrs.frozen
class Logistic:
    """``dx/dt = k x (1 - x)`` per coordinate. Special: autonomous."""

    rate: float
    seed: int
    name = "logistic"
    generic = False
    floor = 1e-13  # ~10x the round-off measured at 1024 steps

    def build(self, device) -> Instance:
        k = self.rate
        x0 = (0.1 + 0.8 * torch.rand(BATCH, 3, dtype=torch.float64, generator=_generator(self.seed))).to(device)
        growth = math.exp(k)
        return Instance(lambda t, x: k * x * (1 - x), x0, x0 * growth / (1 - x0 + x0 * growth))


@attrs.frozen
class CosineGrowth:
    """``dx_j/dt = w_j cos(w_j t) x_j``, ``x_j(1) = x0_j exp(sin w_j)``, one frequency per coordinate.

    Special: linear (RK3 superconverges on ``cos(t) x``). Distinct frequencies keep the
    coordinates' errors from changing sign at the same step count.
    """

    frequencies: tuple[float, float, float]
    seed: int
    name = "cosine-growth"
    generic = False
    floor = 2e-13  # ~10x the round-off measured at 1024 steps

    def build(self, device) -> Instance:
        w = torch.tensor(self.frequencies, dtype=torch.float64, device=device)
        x0 = torch.randn(BATCH, 3, dtype=torch.float64, generator=_generator(self.seed)).to(device)
        return Instance(lambda t, x: w * torch.cos(w * t) * x, x0, x0 * torch.exp(torch.sin(w)))


@attrs.frozen
class VaryingLogistic:
    """``dx/dt = k(t) x (1 - x)``, ``k(t) = a + b cos(w t)``: nonlinear and time-dependent (generic).

    ``x(1) = x0 e^K / (1 - x0 + x0 e^K)`` with ``K = a + (b / w) sin w``.
    """

    base_rate: float
    amplitude: float
    frequency: float
    seed: int
    name = "varying-logistic"
    generic = True
    floor = 1e-13  # ~10x the round-off measured at 1024 steps

    def field(self, t, x):
        return (self.base_rate + self.amplitude * torch.cos(self.frequency * t)) * x * (1 - x)

    def build(self, device) -> Instance:
        x0 = (0.1 + 0.8 * torch.rand(BATCH, 3, dtype=torch.float64, generator=_generator(self.seed))).to(device)
        growth = math.exp(self.base_rate + self.amplitude / self.frequency * math.sin(self.frequency))
        return Instance(self.field, x0, x0 * growth / (1 - x0 + x0 * growth))


@attrs.frozen
class GaussianMixture:
    """The exact flow of a Gaussian mixture in 2-D (FM-OT path): nonlinear, time-dependent (generic).

    Component means are ``spread * U(-1, 1)`` from ``seed``; ``stds`` and ``weights`` are drawn.
    """

    spread: float
    stds: tuple[float, ...]
    weights: tuple[float, ...]
    seed: int
    name = "gaussian-mixture"
    generic = True
    floor = 2e-13  # ~15x the reference's error: dopri5 agrees with dopri8 (rtol 1e-14) to ~1e-14
    dim = 2

    def flow(self) -> GaussianMixtureFlow:
        draw = torch.rand(len(self.stds), self.dim, dtype=torch.float64, generator=_generator(self.seed))
        return GaussianMixtureFlow(self.spread * (2 * draw - 1), self.stds, self.weights)

    def initial_state(self, device) -> torch.Tensor:
        return torch.randn(BATCH, self.dim, dtype=torch.float64, generator=_generator(self.seed + 1)).to(device)

    def build(self, device) -> Instance:
        return Instance(self.flow(), self.initial_state(device), _mixture_reference(self, str(device)))


@functools.lru_cache(maxsize=64)
def _mixture_reference(problem: GaussianMixture, device: str) -> torch.Tensor:
    flow, x0 = problem.flow(), problem.initial_state(device)
    times = torch.tensor([0.0, 1.0], dtype=torch.float64, device=device)
    # dopri5 probes t slightly past 1; the field must never see it.
    with torch.no_grad():
        return torchdiffeq.odeint(lambda t, x: flow(t.clamp(0.0, 1.0), x), x0, times, method="dopri5",
                                  rtol=1e-14, atol=1e-14, options={"step_t": times[1:]})[-1]


def linear_systems(min_dim: int = 2, max_dim: int = 3, max_gain: float = 2.0):
    return st.builds(LinearSystem, dim=st.integers(min_dim, max_dim), gain=bounded(0.5, max_gain), seed=SEEDS)


def logistics():
    return st.builds(Logistic, rate=bounded(0.5, 2.0), seed=SEEDS)


def cosine_growths():
    return st.builds(CosineGrowth, frequencies=st.tuples(bounded(0.5, 1.3), bounded(1.4, 2.2), bounded(2.3, 3.0)),
                     seed=SEEDS)


def varying_logistics():
    # |b| >= 0.5 keeps the field genuinely time-dependent (a wrong c must show).
    return st.builds(VaryingLogistic, base_rate=bounded(0.5, 1.5), amplitude=signed(0.5, 1.5),
                     frequency=bounded(1.0, 4.0), seed=SEEDS)


def gaussian_mixtures():
    def mixture(components):
        return st.builds(GaussianMixture, spread=bounded(0.5, 1.5), stds=st.tuples(*[bounded(0.3, 0.8)] * components),
                         weights=st.tuples(*[bounded(0.5, 1.5)] * components), seed=SEEDS)

    return st.integers(2, 3).flatmap(mixture)


ORDER_PROBLEMS = (
    (LinearSystem, linear_systems),
    (Logistic, logistics),
    (CosineGrowth, cosine_growths),
    (VaryingLogistic, varying_logistics),
    (GaussianMixture, gaussian_mixtures),
)
"""(problem class, strategy factory) for every problem a base solver's order is measured on."""


@attrs.frozen
class SmoothField:
    """``u(t, x) = a sin(w t) x - b tanh(x) + c t^2``: a shape-agnostic nonlinear field for contracts."""

    a: float
    b: float
    c: float
    w: float

    def __call__(self, t, x):
        return self.a * torch.sin(self.w * t) * x - self.b * torch.tanh(x) + self.c * t * t


def smooth_fields():
    return st.builds(SmoothField, a=signed(0.3, 1.5), b=signed(0.3, 1.5), c=signed(0.3, 1.5), w=bounded(1.0, 4.0))
