"""The grid of ``r``-nodes a parametric solver needs, derived from the base tableau's ``c``."""

from __future__ import annotations

from fractions import Fraction

import attrs
import torch

from .tableau import ButcherTableau


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
    """

    n_steps: int
    r: torch.Tensor
    stage_index: torch.Tensor
    start_index: torch.Tensor
    eval_index: torch.Tensor

    @classmethod
    def build(cls, tableau: ButcherTableau, n_steps: int) -> "NodeGrid":
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
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
        )

    @property
    def size(self) -> int:
        return self.r.numel()

    @property
    def num_eval_nodes(self) -> int:
        return self.eval_index.numel()
