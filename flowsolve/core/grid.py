"""The grid of ``r``-nodes a parametric solver needs, derived from the base tableau's ``c``."""

from __future__ import annotations

import math
from fractions import Fraction

import attrs
import torch

from flowsolve.core.errors import FlowsolveValueError
from flowsolve.core.tableau import ButcherTableau


@attrs.frozen(eq=False)
class NodeGrid:
    """Nodes ``r_i + c_k h`` (``h = 1/n``) of all steps, plus the step end points, sorted and unique.

    Attributes:
        n_steps: number of steps ``n``.
        r: ``(G,)`` float64 node positions in ``[0, 1]``; ``r[0] = 0``, ``r[-1] = 1``.
        stage_index: ``(n, stages)`` index into ``r`` of the node where stage ``k`` of step ``i``
            evaluates the field.
        start_index: ``(n + 1,)`` index into ``r`` of the step end points ``r_i = i h``.
        eval_index: sorted indices of the nodes where some stage evaluates the field; only
            there do ``dt`` and ``ds`` enter the solver (elsewhere they stay at the identity).
        spacing: ``(G - 1,)`` float64 gaps ``r[j + 1] - r[j]`` up to one common factor, chosen so
            that cumulating them and dividing by their total gives ``r`` (exactly when the nodes
            are fractions with a common denominator below ``2**53``, as in every usual tableau;
            to round-off otherwise). All ones on an evenly spaced grid; in general their mean lies
            in ``[1, 2)``. Transforms that learn ``t`` through increments start from them (a gap
            under ``1e-6`` of the mean, i.e. two ``c`` a millionth of a step apart, meets their
            floor on increments and is widened).
    """

    n_steps: int
    r: torch.Tensor
    stage_index: torch.Tensor
    start_index: torch.Tensor
    eval_index: torch.Tensor
    spacing: torch.Tensor = attrs.field(
        default=attrs.Factory(lambda grid: _spacing_of(grid.r), takes_self=True)
    )

    @classmethod
    def build(cls, tableau: ButcherTableau, n_steps: int) -> "NodeGrid":
        if n_steps < 1:
            raise FlowsolveValueError(f"n_steps must be >= 1, got {n_steps}")
        stage_nodes = [[(i + ck) / Fraction(n_steps) for ck in tableau.c] for i in range(n_steps)]
        step_points = [Fraction(i, n_steps) for i in range(n_steps + 1)]
        positions = sorted({p for row in stage_nodes for p in row} | set(step_points))
        where = {p: j for j, p in enumerate(positions)}
        stage_index = torch.tensor([[where[p] for p in row] for row in stage_nodes], dtype=torch.long)
        return cls(
            n_steps=n_steps,
            r=torch.tensor([float(p) for p in positions], dtype=torch.float64),
            stage_index=stage_index,
            start_index=torch.tensor([where[p] for p in step_points], dtype=torch.long),
            eval_index=torch.unique(stage_index),
            spacing=_exact_spacing(positions),
        )

    @property
    def size(self) -> int:
        return self.r.numel()

    @property
    def num_eval_nodes(self) -> int:
        return self.eval_index.numel()


def _exact_spacing(positions: list[Fraction]) -> torch.Tensor:
    """Gaps between sorted exact ``positions`` (``0`` to ``1``) as integers over their common
    denominator ``D``, times the power of two ``2**-m`` that brings their mean into ``[1, 2)``.

    Integers below ``2**53`` and their partial sums are exact in float64 and so is scaling by a
    power of two, so cumulated and divided by the total (``D 2**-m``) they give each position as
    the correctly rounded float, i.e. ``r`` itself.
    """
    gaps = [right - left for left, right in zip(positions, positions[1:])]
    denominator = math.lcm(*(gap.denominator for gap in gaps))
    # Gaps are positive integers over `denominator` summing to it, so the mean ratio is >= 1.
    halvings = (denominator // len(gaps)).bit_length() - 1
    return torch.tensor([float(gap * denominator / 2**halvings) for gap in gaps], dtype=torch.float64)


def _spacing_of(r: torch.Tensor) -> torch.Tensor:
    """Spacing of a grid given only as floats (to round-off): gaps times their count."""
    gaps = r.diff()
    return gaps * gaps.numel()
