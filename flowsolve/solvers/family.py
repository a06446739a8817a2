"""A solver family: a transform composed with a base method; ``at(nfe)`` gives a solver."""

from __future__ import annotations

import warnings
from typing import cast

import attrs

from flowsolve.core.errors import FlowsolveTypeError
from flowsolve.core.solver_file import part_spec
from flowsolve.methods.adams import AdamsBashforth
from flowsolve.methods.base import BaseMethod
from flowsolve.solvers.family_base import Family
from flowsolve.solvers.multistep import MultistepSolver
from flowsolve.solvers.parametric import TRANSFORM_X_BASE, ParametricSolver
from flowsolve.solvers.transforms import Transform

# The solver module of each kind of base method, first match wins.
_SOLVER_OF_METHOD: tuple[tuple[type[BaseMethod], type[ParametricSolver]], ...] = (
    (AdamsBashforth, MultistepSolver),
    (BaseMethod, ParametricSolver),
)


def _check_transform(instance, attribute, value):
    if not isinstance(value, Transform):
        raise FlowsolveTypeError(
            f"transform must be a flowsolve.Transform instance (e.g. ScaleTime()), got {type(value).__name__} {value!r}"
        )


def _check_base(instance, attribute, value):
    if not isinstance(value, BaseMethod):
        raise FlowsolveTypeError(
            f"base must be a flowsolve.BaseSolver instance (e.g. Midpoint()), got {type(value).__name__} {value!r}"
        )


def parametric_solver(transform: Transform, base: BaseMethod, n_steps: int) -> ParametricSolver:
    """The solver module of ``transform`` x ``base`` with ``n_steps`` steps."""
    solver_class = next(solver for method, solver in _SOLVER_OF_METHOD if isinstance(base, method))
    return solver_class(transform, base, n_steps)


@attrs.frozen
class ParametricFamily(Family):
    """All parametric solvers ``transform x base`` (paper sec. 2.2), one per step count.

    Example:
        >>> import flowsolve
        >>> family = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint())
        >>> family.at(nfe=10).n_steps
        5
    """

    transform: Transform = attrs.field(validator=_check_transform)
    base: BaseMethod = attrs.field(validator=_check_base)

    name = TRANSFORM_X_BASE
    has_local_steps = True  # its solvers have step(i, x): RMSE-Bound is the default loss
    conformance_checks = ("base", "transform", "parametric")

    def to_dict(self) -> dict:
        return {"transform": self.transform.to_dict(), "base": self.base.name}

    def to_spec(self) -> dict:
        return part_spec(self.kind, self.name, {"transform": self.transform.to_spec(), "base": self.base.to_spec()})

    @classmethod
    def from_spec(cls, name: str, options: dict) -> ParametricFamily:
        return cls(options["transform"], options["base"])

    def new_solver(self, nfe: int) -> ParametricSolver:
        return parametric_solver(self.transform, self.base, self.base.n_steps(nfe))

    @property
    def label(self) -> str:
        return f"{self.transform.name} {self.base.name}"

    def at(self, nfe: int, init=None, model=None) -> ParametricSolver:
        """The solver spending ``nfe`` evaluations (whole steps of the base): identity-initialised,
        or started from ``init`` (see :meth:`ParametricSolver.initialise`; schedules need ``model``)."""
        solver = self.new_solver(nfe)
        if init is not None:
            solver.initialise(init, model)
        return solver

    def fit(self, model, nfe: int, **options) -> ParametricSolver:
        """Fit the family's solver at ``nfe`` to ``model`` (Algorithm 3) and return the best one.

        Ground truth comes from dopri5 (once per store), training minimises ``loss`` with Adam,
        and the parameters with the lowest validation RMSE on held-out noise are kept.

        Args:
            model: velocity field ``u(t, x)`` (t = 0 noise, 1 data); a ``torch.nn.Module`` or
                any callable. Its sample shape comes from ``model.sample_shape`` or ``sample_shape=``.
            nfe: evaluation budget of the fitted solver.
            loss: a :class:`~flowsolve.training.losses.Loss`; default ``RMSEBound(L_tau)``.
            L_tau: Lipschitz hyper-parameter of the default loss (1.0).
            iterations, batch_size, lr: Adam training loop (defaults 1000, 32, and the
                family's ``default_lr`` times ``sqrt(batch_size / 32)``, Adam's square-root
                rule: ``default_lr`` is 2e-3 here, 3e-2 for the non-stationary families whose
                parameters are stored relative to their scale).
            lr_schedule: ``"constant"``, ``"cosine"`` (decay to 5% over ``iterations``) or
                ``"warmup-cosine"`` (the same after a linear warm-up over the first 10%);
                default the family's ``default_lr_schedule`` (``"constant"`` here,
                ``"warmup-cosine"`` for the non-stationary families).
            max_minutes: a wall-time budget for the whole call, ground truth included. The sizes
                not given (path counts, batch, iterations, validation interval) are planned from
                the model's measured cost to fit in it (:mod:`flowsolve.training.budget`: full
                sizes for a cheap model, fewer paths and smaller batches for an expensive one),
                and training stops at the deadline (validated and checkpointed there;
                ``solver.metadata["stopped_at"]`` says where, ``["plan"]`` what was measured).
                A rerun with the same checkpoint keeps the first run's plan and continues.
            train_trajectories, val_trajectories: ground-truth paths for training and
                for validation (held-out noise); defaults 1024 and 256.
            validate_every: iterations between validations (and checkpoints); default 50, or
                a tenth of the steps under ``max_minutes``.
            seed: minibatch seed; the same seeds give the same result.
            noise_seed: seed of the ground-truth noise (part of the store's key).
            device, dtype: where and in which precision the model runs (default: the model's).
            store: a directory (or :class:`~flowsolve.training.store.GroundTruthStore`) to keep the
                ground truth in for reuse across step counts, families and runs; ``None`` keeps it in memory.
            rtol, atol, max_step: dopri5 settings of the ground truth.
            checkpoint: file to save progress to; an interrupted fit with the same settings
                resumes from it.
            init: where to start (default: the identity, i.e. the base solver on a uniform
                grid): a fitted solver of this family at this or another NFE, or the name of a
                time schedule of the model's scheduler: ``"log-snr"``, ``"edm"``, ``"cosine"``,
                ``"uniform"``, optionally with DDIM's scale: ``"log-snr+ddim"`` (see
                :mod:`flowsolve.paths.time_grids`); for the non-stationary families also a
                baseline or base-solver name. A list of these: the fit starts from the one with
                the lowest validation RMSE (``solver.metadata["starts"]`` has their scores).
            progress: draw progress bars (default: when stderr is a terminal).
            conditions: for a conditional model, the
                :class:`~flowsolve.ConditionDistribution` each path's conditions (class labels,
                guidance scales) are drawn from and stored with; default the model's
                ``condition_distribution``. Every loss and validation step runs the field with
                its paths' conditions bound.
            autocast: ``torch.bfloat16`` or ``torch.float16``: the training and validation
                rollouts run the network under :func:`torch.autocast` (faster on GPUs with
                low-precision units; much slower on CPUs without them). The ground truth stays in
                ``dtype``; sample the same way (``with torch.autocast(...)``) to match the fit.

        Returns:
            The fitted :class:`~flowsolve.ParametricSolver`; ``solver.metadata`` holds the model
            fingerprint, the settings, the best validation RMSE/PSNR and the history.

        Example:
            >>> import flowsolve
            >>> from flowsolve.models.gaussian_mixture import GaussianMixtureFlow
            >>> flow = GaussianMixtureFlow.random(dim=8, components=3)
            >>> family = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint())
            >>> solver = family.fit(flow, nfe=4, iterations=20, train_trajectories=64,
            ...                     val_trajectories=32, progress=False)
        """
        return cast(ParametricSolver, super().fit(model, nfe, **options))


def compose(transform: Transform, base: BaseMethod) -> ParametricFamily:
    """Combine a :class:`Transform` and a :class:`BaseSolver` into a :class:`ParametricFamily`.

    Example:
        >>> import flowsolve
        >>> solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Euler()).at(nfe=4)
        >>> solver.num_params  # 4n - 1
        15
    """
    return ParametricFamily(transform, base)


def __getattr__(name: str):
    if name == "SolverFamily":  # renamed in this release; the old name goes in the next one
        warnings.warn("SolverFamily is now ParametricFamily", DeprecationWarning, stacklevel=2)
        return ParametricFamily
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
