"""Transforms: how a parametric solver re-times and re-scales the sampling path (paper sec. 2.2).

A transform turns learnable parameters into the values ``t, dt, s, ds`` of
``xbar(r) = s_r x(t_r)`` at the nodes of a :class:`~flowsolve.core.grid.NodeGrid`.
"""

from __future__ import annotations

import abc
import inspect
from typing import ClassVar, NamedTuple

import torch

from flowsolve.core.errors import FlowsolveValueError
from flowsolve.core.grid import NodeGrid
from flowsolve.core.solver_file import part_spec

# Floor on the positive parameters |theta| so that t stays strictly increasing and the
# normalising sum never vanishes, whatever values the optimiser produces.
_MIN_POSITIVE = 1e-6


class NodeValues(NamedTuple):
    """Transform values at the grid nodes, each ``(G,)``: time ``t_r``, ``dt = dt_r/dr``,
    scale ``s_r`` and ``ds = ds_r/dr``."""

    t: torch.Tensor
    dt: torch.Tensor
    s: torch.Tensor
    ds: torch.Tensor


class Transform(abc.ABC):
    """Abstract scale-time transform ``(t_r, s_r)`` with ``t_0 = 0``, ``t_1 = 1``, ``s_0 = 1``, ``s_r > 0``.

    Subclasses define the learnable parameters and how they map to node values, and declare
    what they learn: ``learns_time`` (``t_r`` may differ from ``r``) and ``learns_scale`` (``s_r``
    may differ from 1); both default to True, the general transform. A transform registered by
    ``name`` can be saved and loaded (:meth:`to_spec` / :meth:`from_spec`).
    """

    kind: ClassVar[str] = "transform"  # the registry kind a solver file rebuilds it through
    name: ClassVar[str]
    learns_time: ClassVar[bool] = True
    learns_scale: ClassVar[bool] = True

    @abc.abstractmethod
    def init_parameters(self, grid: NodeGrid) -> dict[str, torch.Tensor]:
        """Float64 parameter tensors for ``grid``, initialised to the identity transform."""

    @abc.abstractmethod
    def values(self, params: dict[str, torch.Tensor], grid: NodeGrid) -> NodeValues:
        """Node values computed from ``params`` (differentiable)."""

    @abc.abstractmethod
    def num_params(self, grid: NodeGrid) -> int:
        """Degrees of freedom (the paper's count)."""

    def parameters_for(self, values: NodeValues, grid: NodeGrid) -> dict[str, torch.Tensor]:
        """Parameters that reproduce given node values (the inverse of :meth:`values`).

        Used to start from a known transform, e.g. a continuous ``(t_r, s_r)`` discretised on
        ``grid``. Raises ``ValueError`` if the transform cannot represent ``values``.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot be set from node values")

    def to_dict(self) -> dict:
        """``name`` and the options :meth:`from_dict` rebuilds the transform from."""
        return {"name": self.name}

    def to_spec(self) -> dict:
        """``{kind, name, options}``: what a solver file stores to rebuild this transform."""
        return part_spec(self.kind, self.name, {k: v for k, v in self.to_dict().items() if k != "name"})

    @classmethod
    def from_spec(cls, name: str, options: dict) -> Transform:
        """The transform stored as ``name`` with ``options`` (see :meth:`to_spec`)."""
        return cls.from_dict(options)

    @classmethod
    def from_dict(cls, options: dict) -> Transform:
        """The transform of ``options`` (``to_dict()`` less ``name``): ``cls(**options)`` by default.

        Options the constructor does not take are left out, so that rebuilding does not fail on
        them and the loader can name the option it does not understand.
        """
        return cls(**{key: value for key, value in options.items() if key in _keyword_arguments(cls, options)})

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    def __hash__(self) -> int:
        return hash((type(self), repr(sorted(self.to_dict().items()))))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _keyword_arguments(cls, options: dict) -> set[str]:
    """The keyword arguments ``cls(...)`` accepts (all of ``options`` if it cannot tell)."""
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return set(options)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return set(options)
    return {p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


class _LearnedScaleTime(Transform):
    """Appendix F's parametrisation (corrected), time and/or scale learned.

    ``t``: positive increments over the grid intervals, cumulated and normalised by their total
    (so ``t_0 = 0``, ``t_last = 1``, strictly increasing); ``dt = |theta|``. ``s_0 = 1`` and
    ``s = exp(theta)`` at the later nodes; ``ds = theta``. The identity starts the increments at
    the grid's spacing (all ones when the nodes are evenly spaced), so ``t_r = r`` for any tableau.
    """

    def init_parameters(self, grid: NodeGrid) -> dict[str, torch.Tensor]:
        params = {}
        intervals, evals = grid.size - 1, grid.num_eval_nodes
        if self.learns_time:
            # Increments proportional to the node gaps, so the identity is t_r = r on any grid
            # (all ones on an evenly spaced one; a tableau's c can space its nodes unevenly).
            params["time_increments"] = grid.spacing.clone()
            params["time_derivative"] = torch.ones(evals, dtype=torch.float64)
        if self.learns_scale:
            params["log_scale"] = torch.zeros(intervals, dtype=torch.float64)
            params["scale_derivative"] = torch.zeros(evals, dtype=torch.float64)
        return params

    def values(self, params: dict[str, torch.Tensor], grid: NodeGrid) -> NodeValues:
        device = next(iter(params.values())).device
        r = grid.r.to(device)
        eval_index = grid.eval_index.to(device)
        ones, zeros = torch.ones_like(r), torch.zeros_like(r)
        if self.learns_time:
            cumulated = torch.cumsum(params["time_increments"].abs().clamp_min(_MIN_POSITIVE), 0)
            # Dividing by the last cumulant (not a separate sum) makes t_last exactly 1.
            t = torch.cat([zeros[:1], cumulated / cumulated[-1]])
            positive = params["time_derivative"].abs().clamp_min(_MIN_POSITIVE)
            dt = ones.index_put((eval_index,), positive)
        else:
            t, dt = r, ones
        if self.learns_scale:
            s = torch.cat([ones[:1], torch.exp(params["log_scale"])])
            ds = zeros.index_put((eval_index,), params["scale_derivative"])
        else:
            s, ds = ones, zeros
        return NodeValues(t=t, dt=dt, s=s, ds=ds)

    def parameters_for(self, values: NodeValues, grid: NodeGrid) -> dict[str, torch.Tensor]:
        t, dt, s, ds = (torch.as_tensor(v, dtype=torch.float64) for v in values)
        r, evals = grid.r, grid.eval_index
        if t[0] != 0 or t[-1] != 1 or not bool((t.diff() > 0).all()) or not bool((dt[evals] > 0).all()):
            raise FlowsolveValueError("node values need t increasing from exactly 0 to exactly 1 and dt > 0")
        if s[0] != 1 or not bool((s > 0).all()):
            raise FlowsolveValueError("node values need s_0 = 1 and s > 0")
        if not self.learns_time and not (torch.equal(t, r) and bool((dt[evals] == 1).all())):
            raise FlowsolveValueError(f"{type(self).__name__} fixes t_r = r and dt = 1; these node values re-time the path")
        if not self.learns_scale and not (bool((s == 1).all()) and bool((ds[evals] == 0).all())):
            raise FlowsolveValueError(f"{type(self).__name__} fixes s = 1 and ds = 0; these node values re-scale the path")
        params = {}
        if self.learns_time:
            params["time_increments"] = t.diff()
            params["time_derivative"] = dt[evals]
        if self.learns_scale:
            params["log_scale"] = torch.log(s[1:])
            params["scale_derivative"] = ds[evals]
        return params

    def num_params(self, grid: NodeGrid) -> int:
        count = 0
        if self.learns_time:
            count += (grid.size - 2) + grid.num_eval_nodes  # t_0, t_last fixed
        if self.learns_scale:
            count += (grid.size - 1) + grid.num_eval_nodes  # s_0 fixed
        return count


class ScaleTime(_LearnedScaleTime):
    """Learn both time ``t_r`` and scale ``s_r`` (the paper's Bespoke solver).

    Parameters with a Midpoint base and ``n`` steps: ``8n - 1``; Euler: ``4n - 1``.

    Example:
        >>> import flowsolve
        >>> flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=10).num_params
        39
    """

    name = "scale-time"
    learns_time = True
    learns_scale = True


class TimeOnly(_LearnedScaleTime):
    """Learn only the time grid; ``s = 1``, ``ds = 0`` (ablation, appendix K.2)."""

    name = "time-only"
    learns_time = True
    learns_scale = False


class ScaleOnly(_LearnedScaleTime):
    """Learn only the scale; ``t_r = r``, ``dt = 1`` (ablation, appendix K.2)."""

    name = "scale-only"
    learns_time = False
    learns_scale = True


BUILTIN_TRANSFORMS: dict[str, type[Transform]] = {cls.name: cls for cls in (ScaleTime, TimeOnly, ScaleOnly)}
