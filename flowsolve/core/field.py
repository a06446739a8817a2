"""Calling a velocity field ``u(t, x)`` safely: shape, dtype and finiteness checks."""

from __future__ import annotations

from typing import Callable

import torch

from flowsolve.core.errors import (
    FlowsolveError,
    FlowsolveTypeError,
    FlowsolveValueError,
)

VelocityField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class NonFiniteVelocityError(FlowsolveError, FloatingPointError):
    """The velocity field returned inf or NaN."""


def batched_time(field: VelocityField) -> VelocityField:
    """Declare that ``field`` accepts per-sample times ``t`` of shape ``(batch,)``.

    Fields without this mark are only ever called with a 0-dim ``t``; per-sample calls are
    grouped by their distinct times (see :func:`call_field`).

    Example:
        >>> u = batched_time(lambda t, x: -x * t.reshape(-1, *[1] * (x.dim() - 1)))
    """
    # A plain attribute on the callable (functions and modules accept one); mypy cannot see it.
    try:
        field.accepts_batched_time = True  # type: ignore[attr-defined]
        return field
    except AttributeError:  # e.g. a builtin or a bound method: wrap it

        def wrapped(t, x):
            return field(t, x)

        wrapped.accepts_batched_time = True  # type: ignore[attr-defined]
        return wrapped


def accepts_batched_time(field: VelocityField) -> bool:
    return bool(getattr(field, "accepts_batched_time", False))


def call_field(field: VelocityField, t: torch.Tensor, x: torch.Tensor, *, where="", check_finite: bool = True):
    """Evaluate ``field(t, x)`` and check the result.

    Args:
        field: the velocity field.
        t: 0-dim time, or ``(batch,)`` per-sample times. A field not marked with
            :func:`batched_time` gets one call per distinct time in ``t``.
        x: state, ``(batch, ...)``.
        where: text naming the solver step, used in error messages; or a function that
            receives the ``(batch,)`` mask of non-finite samples and returns that text.
        check_finite: raise :class:`NonFiniteVelocityError` on inf/NaN output.
    """
    label = where if isinstance(where, str) else "in the solver"
    if t.dim() == 1 and not accepts_batched_time(field):
        out = _call_grouped(field, t, x, label)
    else:
        out = field(t, x)
        _check_output(out, x, label)
    if check_finite and not bool(torch.isfinite(out).all()):
        bad = ~torch.isfinite(out.reshape(out.shape[0], -1)).all(1)
        times = sorted(set(t[bad].tolist())) if t.dim() else [float(t)]
        label = where if isinstance(where, str) else where(bad)
        raise NonFiniteVelocityError(
            f"the velocity field returned non-finite values {label} at t = {[round(v, 6) for v in times[:8]]}; "
            "check the model (and its time convention: flowsolve calls u(t, x) with t in [0, 1], 0 = noise)"
        )
    return out


def _call_grouped(field, t, x, where):
    if t.shape[0] != x.shape[0]:
        raise FlowsolveValueError(f"per-sample times have shape {tuple(t.shape)} but x has batch size {x.shape[0]}")
    distinct, inverse = torch.unique(t.detach(), return_inverse=True)
    # Each group's time is one of its own entries of t (not the detached unique value), so
    # gradients with respect to the times still flow.
    if distinct.numel() == 1:
        out = field(t[0], x)
        _check_output(out, x, where)
        return out
    pieces = [None] * distinct.numel()
    for g in range(distinct.numel()):
        members = (inverse == g).nonzero(as_tuple=True)[0]
        piece = field(t[members[0]], x[members])
        _check_output(piece, x[members], where)
        pieces[g] = (members, piece)
    out = torch.empty_like(x, dtype=pieces[0][1].dtype)
    for members, piece in pieces:
        out = out.index_copy(0, members, piece)
    return out


def _check_output(out, x, where):
    if not isinstance(out, torch.Tensor):
        raise FlowsolveTypeError(f"the velocity field must return a torch.Tensor, got {type(out).__name__} {where}")
    if out.shape != x.shape:
        raise FlowsolveValueError(
            f"the velocity field returned shape {tuple(out.shape)} for x of shape {tuple(x.shape)} {where}; "
            "u(t, x) must return a tensor shaped like x"
        )
    if out.dtype != x.dtype:
        raise FlowsolveTypeError(
            f"the velocity field returned dtype {out.dtype} for x of dtype {x.dtype} {where}; "
            "cast the model output (or the noise) so both match"
        )
