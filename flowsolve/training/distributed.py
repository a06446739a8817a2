"""Running a fit across processes with torch.distributed (launched by ``torchrun``).

Ranks split the ground-truth shards and each global minibatch; gradients of the solver
parameters are averaged with ``all_reduce`` so all ranks hold identical parameters. Rank 0
alone writes files, logs and progress bars. Backends: gloo on CPU, NCCL on GPUs.
"""

from __future__ import annotations

import atexit
import datetime
import math
import os
import warnings

import attrs
import torch
import torch.distributed as dist

TIMEOUT_VARIABLE = "FLOWSOLVE_DIST_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 600.0
DEFAULT_TIMEOUT = datetime.timedelta(seconds=DEFAULT_TIMEOUT_SECONDS)  # without the variable; see timeout()


def timeout() -> datetime.timedelta:
    """How long collectives wait before giving up, so a dead rank is an error, not a hang:
    ``FLOWSOLVE_DIST_TIMEOUT`` seconds (default 600).

    Read when a process group is set up, not at import: a malformed value warns and falls back
    to the default instead of stopping ``import flowsolve``.
    """
    text = os.environ.get(TIMEOUT_VARIABLE)
    if text is None or not text.strip():
        return datetime.timedelta(seconds=DEFAULT_TIMEOUT_SECONDS)
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    # timedelta cannot hold inf, and 0 or a negative wait would fail every collective at once.
    if not (math.isfinite(seconds) and 0 < seconds <= datetime.timedelta.max.total_seconds()):
        warnings.warn(
            f"{TIMEOUT_VARIABLE}={text!r} is not a positive number of seconds; using the default "
            f"{DEFAULT_TIMEOUT_SECONDS:g} s (set it to e.g. {TIMEOUT_VARIABLE}=1800)",
            stacklevel=2,
        )
        seconds = DEFAULT_TIMEOUT_SECONDS
    return datetime.timedelta(seconds=seconds)


@attrs.frozen
class Context:
    """This process's place in the job: ``rank`` of ``world`` processes (1 without torch.distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def average_gradients(self, parameters) -> None:
        """Replace every gradient by its mean over the ranks."""
        if not self.active:
            return
        for parameter in parameters:
            if parameter.grad is not None:
                dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
                parameter.grad /= self.world

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over the ranks (returns a new tensor)."""
        values = values.clone()
        if self.active:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def share(self, obj, owner: int):
        """``obj`` as held by rank ``owner``, on every rank."""
        if not self.active:
            return obj
        box = [obj if self.rank == owner else None]
        dist.broadcast_object_list(box, src=owner)
        return box[0]


def current() -> Context:
    """The context of this process (a single process unless a process group is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size())
    return Context()


def setup(device: torch.device | None = None) -> Context:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1), once; else a single process."""
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timeout())
        # A group left alive at interpreter exit can abort the process ("terminate called ...").
        atexit.register(teardown)
    return current()


def teardown() -> None:
    """Leave the process group together (registered at exit by :func:`setup`; safe to call twice).

    The ranks meet first so that none tears its connections down while another still uses them.
    """
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()
