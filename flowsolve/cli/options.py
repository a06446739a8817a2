"""Argument types and the model options shared by the ``flowsolve`` commands.

argparse calls each type on the raw text and reports an ``ArgumentTypeError`` as
``flowsolve <command>: error: argument --name: <message>`` with exit status 2, before any work starts.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import attrs

DTYPES = ("float32", "float64", "float16", "bfloat16")
# The command line's own precision when --dtype is not given (stores and noise are float32).
DEFAULT_DTYPE = "float32"


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (``inf`` and ``nan`` parse as floats, so are checked here)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive finite number such as 2e-3, got {text!r}")
    return value


def nfe_list(text: str) -> list[int]:
    """Comma-separated positive integers: ``4,8,10`` -> ``[4, 8, 10]``."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 4,8,10, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"NFEs must be positive integers, got {text!r}")
    return values


def sample_shape(text: str) -> tuple[int, ...]:
    """The shape of one sample: ``3,32,32`` -> ``(3, 32, 32)``."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"expected the shape of one sample as positive integers separated by commas, e.g. 3,32,32 or 64; "
            f"got {text!r}"
        )
    return shape


def device(text: str) -> str:
    """A device string torch understands (checked now, not after the ground truth is solved)."""
    import torch  # deferred: `flowsolve --help` does not load torch

    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu, cuda or cuda:1, got {text!r}") from None
    return text


def samples_file(text: str) -> Path:
    """An output path ending in ``.png`` (an image grid) or ``.npy`` (the raw array)."""
    path = Path(text)
    if path.suffix not in (".png", ".npy"):
        raise argparse.ArgumentTypeError(f"expected a file name ending in .png or .npy, got {text!r}")
    return path


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and how it runs: the options of ``fit``, ``sample`` and ``eval`` (read by :class:`ModelOptions`)."""
    parser.add_argument("model", help="registered model name (see `flowsolve plugins`) or module:object")
    parser.add_argument("--kind", help="adapter kind for a module:object model (e.g. eps-vp, fm-ot)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--sample-shape", type=sample_shape, metavar="D[,D...]",
                        help="shape of one sample, e.g. 3,32,32 (default: the model's sample_shape attribute)")
    parser.add_argument("--device", type=device,
                        help="torch device to run on, e.g. cuda or cuda:1 (default cpu); a torch.nn.Module model is "
                             "moved there, other models must follow their input's device")
    parser.add_argument("--dtype", choices=DTYPES,
                        help=f"precision of the noise, ground truth and solver (default {DEFAULT_DTYPE}); a "
                             "torch.nn.Module model is cast to it")
    parser.add_argument("--guidance", type=float, metavar="W",
                        help="classifier-free guidance weight w of a class-conditional registered model "
                             "((1 + w) cond - w uncond; default 0: the conditional model); fits draw a label per path")


@attrs.frozen
class ModelOptions:
    """Which model a command runs, and where: the options of :func:`add_model_arguments`.

    ``None`` means the option was not given. The defaults describe a bundled model run as it is
    (``flowsolve demo``).

    Attributes:
        spec: a registered model name or ``module:object``.
        kind: the adapter kind for a ``module:object`` model.
        sample_shape: the shape of one sample, when the model does not say.
        device: the torch device to run on (cpu when not given).
        dtype: the name of the precision (:data:`DEFAULT_DTYPE` when not given).
        guidance: the guidance weight of a class-conditional registered model.
    """

    spec: str = ""
    kind: str | None = None
    sample_shape: tuple[int, ...] | None = None
    device: str | None = None
    dtype: str | None = None
    guidance: float | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ModelOptions:
        """The model options parsed into ``args``."""
        return cls(args.model, args.kind, args.sample_shape, args.device, args.dtype, args.guidance)

    @property
    def torch_dtype(self):
        """The precision as a ``torch.dtype``."""
        import torch

        return getattr(torch, self.dtype or DEFAULT_DTYPE)

    @property
    def torch_device(self):
        """The device as a ``torch.device``."""
        import torch

        return torch.device(self.device or "cpu")
