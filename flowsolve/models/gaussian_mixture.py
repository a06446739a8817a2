"""The exact marginal velocity field of a Gaussian-mixture data distribution (eq. 23)."""

from __future__ import annotations

import torch

from flowsolve.core.errors import FlowsolveValueError
from flowsolve.core.fingerprint import tensor_fingerprint
from flowsolve.paths.schedulers import FMOT, Scheduler


class GaussianMixtureFlow:
    """Exact velocity ``u_t(x) = E[sigma'_t x_0 + alpha'_t x_1 | x_t = x]`` for data
    ``sum_k pi_k N(mu_k, tau_k^2 I)`` on a Gaussian path; an ideal model with a known answer.

    Accepts 0-dim or per-sample ``(batch,)`` times. Device and dtype follow ``x``.

    Args:
        means: ``(K, D)`` component means ``mu_k``.
        stds: ``(K,)`` component standard deviations ``tau_k > 0``.
        weights: ``(K,)`` mixture weights (normalised here).
        scheduler: the Gaussian path; FM-OT by default.

    Example:
        >>> flow = GaussianMixtureFlow.random(dim=8, components=3, seed=0)
        >>> flow(torch.tensor(0.5), torch.randn(4, 8)).shape
        torch.Size([4, 8])
    """

    accepts_batched_time = True

    def __init__(self, means, stds, weights, scheduler: Scheduler | None = None):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if self.means.dim() != 2 or self.stds.shape != self.means.shape[:1] or weights.shape != self.stds.shape:
            raise FlowsolveValueError(
                f"expected means (K, D), stds (K,), weights (K,); got {tuple(self.means.shape)}, "
                f"{tuple(self.stds.shape)}, {tuple(weights.shape)}"
            )
        if not bool((self.stds > 0).all()) or not bool((weights > 0).all()):
            raise FlowsolveValueError("component stds and weights must be positive")
        self.log_weights = torch.log(weights / weights.sum())
        self.scheduler = scheduler or FMOT()

    @classmethod
    def random(cls, dim: int, components: int, seed: int = 0, scheduler: Scheduler | None = None, spread: float = 1.0):
        """A reproducible random mixture with means in ``[-spread, spread]`` and stds in ``[0.05, 0.25]``."""
        generator = torch.Generator().manual_seed(seed)
        means = (torch.rand(components, dim, generator=generator, dtype=torch.float64) * 2 - 1) * spread
        stds = 0.05 + 0.2 * torch.rand(components, generator=generator, dtype=torch.float64)
        weights = 0.5 + torch.rand(components, generator=generator, dtype=torch.float64)
        return cls(means, stds, weights, scheduler)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample (what noise to draw)."""
        return (self.dim,)

    def fingerprint(self) -> str:
        return f"gmm-{self.scheduler!r}-" + tensor_fingerprint(self.means, self.stds, self.log_weights)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def __call__(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The exact velocity at ``(t, x)``."""
        return self._evaluate(t, x)[0]

    def posterior_means(self, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E[x_1 | x_t = x], E[x_0 | x_t = x])``: the exact data and noise (eps) predictions."""
        return self._evaluate(t, x)[1:]

    def _evaluate(self, t, x):
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise FlowsolveValueError(f"x has {flat.shape[1]} features per sample, the mixture has dimension {self.dim}")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.reshape(-1, 1, 1) if t.dim() == 1 else t  # (B, 1, 1) broadcasts over (B, K, D)
        means, stds2 = self.means.to(x), self.stds.to(x) ** 2
        sched = self.scheduler
        alpha, sigma, d_alpha = sched.alpha(t), sched.sigma(t), sched.d_alpha(t)
        variance = alpha**2 * stds2[:, None] + sigma**2  # (K, 1) or (B, K, 1)
        residual = flat[:, None, :] - alpha * means  # (B, K, D)
        log_density = -0.5 * (residual.square().sum(-1, keepdim=True) / variance + self.dim * torch.log(variance))
        responsibilities = torch.softmax(self.log_weights.to(x)[:, None] + log_density, dim=1)  # (B, K, 1)
        # Posterior means of x_1 and x_0 given x_t, per component (linear in x_t).
        data_mean = means + alpha * stds2[:, None] / variance * residual
        noise_mean = sigma / variance * residual
        data, noise = (responsibilities * data_mean).sum(1), (responsibilities * noise_mean).sum(1)
        # sigma' E[x0|x] with E[x0|x] = sigma/variance * residual: use sigma sigma', finite at VP's t = 1.
        noise_term = (responsibilities * (sched.sigma_d_sigma(t) / variance * residual)).sum(1)
        velocity = noise_term + d_alpha.reshape(-1, 1) * data
        return velocity.reshape(x.shape), data.reshape(x.shape), noise.reshape(x.shape)

    def sample_data(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``count`` float64 samples of the data distribution (``t = 1``)."""
        component = torch.multinomial(self.log_weights.exp(), count, replacement=True, generator=generator)
        noise = torch.randn(count, self.dim, generator=generator, dtype=torch.float64)
        return self.means[component] + self.stds[component, None] * noise




class ConditionalGaussianMixture(torch.nn.Module):
    """An exact class-conditional network ``net(x, t, labels)`` for classifier-free guidance:
    class ``k`` is component ``k`` of ``mixture`` alone, the null label ``K`` (the number of
    components) the whole mixture. Wrapped in :class:`~flowsolve.ClassifierFreeGuidance` and
    adapted as ``"fm-ot"`` (or the mixture's scheduler's velocity), every guided field has a
    closed form to test and benchmark against.

    Example:
        >>> mixture = GaussianMixtureFlow.random(dim=4, components=3, seed=0)
        >>> net = ConditionalGaussianMixture(mixture)
        >>> net(torch.zeros(2, 4), torch.full((2,), 0.5), torch.tensor([0, 3])).shape
        torch.Size([2, 4])
    """

    def __init__(self, mixture: GaussianMixtureFlow):
        super().__init__()
        self.mixture = mixture
        self.null_label = mixture.means.shape[0]
        self.per_class = [
            GaussianMixtureFlow(mixture.means[k : k + 1], mixture.stds[k : k + 1], torch.ones(1, dtype=torch.float64),
                                mixture.scheduler)
            for k in range(self.null_label)
        ]
        self.register_buffer("means", mixture.means.clone())  # so fingerprints see which mixture it is
        self.register_buffer("stds", mixture.stds.clone())
        self.sample_shape = mixture.sample_shape

    def class_flow(self, label: int) -> GaussianMixtureFlow:
        """The exact flow of one label (the mixture for the null label)."""
        return self.mixture if label == self.null_label else self.per_class[label]

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        out = torch.empty_like(x)
        for label in labels.unique().tolist():
            rows = labels == label
            out[rows] = self.class_flow(int(label))(t[rows], x[rows])
        return out
