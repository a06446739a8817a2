"""The solver file format: a JSON header and plain tensors, checksummed, written atomically.

The file is a ``torch.save`` archive of plain tensors and strings only, read back with
``weights_only=True`` (no arbitrary pickle). This module knows the container, not what the
header describes: :mod:`flowsolve.persistence` rebuilds solvers from it.

Format versions: 1 (transform x Runge--Kutta base), 2 (adds other families and multistep bases),
3 (every part of a solver stored as ``{kind, name, options}``, see :mod:`flowsolve.persistence`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import torch

from flowsolve._version import __version__
from flowsolve.core.atomic import atomic_write
from flowsolve.core.errors import FlowsolveFileNotFoundError, FlowsolveValueError

FORMAT_NAME = "flowsolve.solver"  # the marker every version of the format has written
FORMAT_VERSION = 3  # 3: parts as {kind, name, options}; 2: other families; 1: transform x base


class SolverFileError(FlowsolveValueError):
    """A solver file is corrupt, from a newer format, describes an unknown family, or has options
    that nothing installed here understands."""


class SolverFile(NamedTuple):
    """What a solver file holds: its format version, its header (a mapping) and its tensors."""

    version: int
    header: dict
    tensors: dict


def atomic_torch_save(payload, path) -> None:
    """``torch.save`` through :func:`flowsolve.core.atomic.atomic_write` (atomic, honours the umask)."""
    atomic_write(path, lambda stream: torch.save(payload, stream))


def checksum(header: str, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the header text and every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(header.encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def write_solver_file(path, header: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``header`` (JSON-serialisable) and ``tensors`` to ``path`` atomically, as the current version."""
    text = json.dumps({"library_version": __version__, **header}, sort_keys=True)
    tensors = {name: t.detach().cpu().clone() for name, t in tensors.items()}
    payload = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "header": text, "tensors": tensors,
               "checksum": checksum(text, tensors)}
    atomic_torch_save(payload, path)


def read_solver_file(path) -> SolverFile:
    """Read and verify a solver file of any version up to :data:`FORMAT_VERSION`.

    Raises:
        FileNotFoundError: no file at ``path``.
        SolverFileError: not a solver file, corrupt, or of a newer format version.
    """
    path = Path(path)
    if not path.exists():
        raise FlowsolveFileNotFoundError(f"no solver file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated / not a torch archive / foreign pickle
        raise SolverFileError(f"{path} is not a readable flowsolve solver file (corrupt or truncated?): {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise SolverFileError(f"{path} is not a flowsolve solver file (no '{FORMAT_NAME}' marker)")
    version = payload.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise SolverFileError(
            f"{path} uses solver format version {version}, but flowsolve {__version__} reads versions 1 to "
            f"{FORMAT_VERSION}; upgrade flowsolve to load it"
        )
    text, tensors = payload.get("header"), payload.get("tensors")
    if not isinstance(text, str) or not isinstance(tensors, dict):
        raise SolverFileError(f"{path} is missing its header or parameters; the file is corrupt")
    if checksum(text, tensors) != payload.get("checksum"):
        raise SolverFileError(f"{path} failed its checksum: the file is corrupt; re-save or re-fit the solver")
    try:
        header = json.loads(text)
    except ValueError as error:
        raise SolverFileError(f"{path}: the header is not JSON ({error}); the file is corrupt") from error
    if not isinstance(header, dict):
        raise SolverFileError(f"{path}: the header is a {type(header).__name__}, not a mapping; the file is corrupt")
    return SolverFile(version, header, tensors)


# -- how a part of a solver (base method, transform, family, loss) is stored ------------------------
PART_KEYS = ("kind", "name", "options")


def part_spec(kind: str, name: str, options: dict | None = None) -> dict:
    """``{kind, name, options}``: what a solver file stores to rebuild one part through the registry."""
    return {"kind": kind, "name": name, "options": dict(options or {})}


def is_part_spec(value) -> bool:
    """Whether ``value`` is a stored part (a mapping with a string kind and name, and options)."""
    return (isinstance(value, dict) and isinstance(value.get("kind"), str) and isinstance(value.get("name"), str)
            and isinstance(value.get("options"), dict))
