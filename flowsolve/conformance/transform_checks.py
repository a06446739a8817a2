"""Boundary conditions of a transform (t_0 = 0, t_1 = 1, s_0 = 1, s_r > 0) for any parameter values.

An optimiser may move the parameters anywhere, so the parametrisation itself must keep
``t_0 = 0``, ``t_last = 1``, ``t`` strictly increasing, ``s_0 = 1`` and ``s > 0`` (all finite).
Checked at the identity initialisation and at raw parameter values drawn by Hypothesis in
``[-3, 3]``, on the node grids of Euler, Midpoint and RK4 with 1 to 6 steps.
"""

from __future__ import annotations

import torch

from flowsolve.conformance.check import Check, CheckFailed, Outcome
from flowsolve.conformance.parametric_checks import transform_name
from flowsolve.conformance.problems import bounded
from flowsolve.conformance.profiles import Effort, check_property
from flowsolve.conformance.profiles import strategies as st
from flowsolve.core.grid import NodeGrid
from flowsolve.methods.runge_kutta import RK4, Euler, Midpoint
from flowsolve.solvers.transforms import Transform

EXACT = 1e-12
GRID_BASES = (Euler(), Midpoint(), RK4())


def boundary_check(transform: Transform, effort: Effort) -> Check:
    return Check(f"boundary[{transform_name(transform)}]",
                 "t_0 = 0, t_last = 1, t increasing, s_0 = 1, s > 0 for any parameter values",
                 lambda: _boundary(transform, effort))


def violations(values, grid: NodeGrid) -> list[str]:
    """What is wrong with node values ``(t, dt, s, ds)`` on ``grid``; empty if nothing."""
    size = grid.size
    found = []
    for name, value in zip(("t", "dt", "s", "ds"), values):
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (size,):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            return [f"{name} has shape {shape}, the grid has {size} nodes"]
        if not bool(torch.isfinite(value).all()):
            found.append(f"{name} is not finite at nodes {torch.nonzero(~torch.isfinite(value)).flatten().tolist()}")
    t, _, s, _ = (v.detach().double().cpu() for v in values)
    if abs(float(t[0])) > EXACT:
        found.append(f"t_0 = {float(t[0]):.6g}, must be 0")
    if abs(float(t[-1]) - 1) > EXACT:
        found.append(f"t_last = {float(t[-1]):.6g}, must be 1")
    steps = t.diff()
    if not bool((steps > 0).all()):
        j = int(torch.nonzero(~(steps > 0))[0])
        found.append(f"t is not increasing: t[{j}] = {float(t[j]):.6g}, t[{j + 1}] = {float(t[j + 1]):.6g}")
    if abs(float(s[0]) - 1) > EXACT:
        found.append(f"s_0 = {float(s[0]):.6g}, must be 1")
    if not bool((s > 0).all()):
        j = int(torch.nonzero(~(s > 0))[0])
        found.append(f"s[{j}] = {float(s[j]):.6g}, must be > 0")
    return found


def _boundary(transform: Transform, effort: Effort) -> Outcome:
    name = transform_name(transform)
    for base in GRID_BASES:
        grid = NodeGrid.build(base.tableau, 2)
        found = violations(transform.values(transform.init_parameters(grid), grid), grid)
        if found:
            raise CheckFailed("; ".join(found) + f" (identity-initialised {name}, {base.name} grid, 2 steps)")

    def trial(data):
        base = data.draw(st.sampled_from(GRID_BASES), label="grid of")
        steps = data.draw(st.integers(1, 6), label="steps")
        grid = NodeGrid.build(base.tableau, steps)
        params = {}
        for key, initial in transform.init_parameters(grid).items():
            drawn = data.draw(st.lists(bounded(-3.0, 3.0), min_size=initial.numel(), max_size=initial.numel()),
                              label=key)
            params[key] = torch.tensor(drawn, dtype=initial.dtype).reshape(initial.shape)
        found = violations(transform.values(params, grid), grid)
        if found:
            shown = {key: [round(v, 4) for v in value.flatten().tolist()] for key, value in params.items()}
            raise CheckFailed("; ".join(found) + f" ({name} on the {base.name} grid, steps={steps}, "
                                                 f"parameters {shown})")

    check_property(st.data(), trial, examples=25, effort=effort)
    return Outcome.passed("t_0 = 0, t_last = 1, t increasing, s_0 = 1, s > 0 at identity and at drawn parameters")
