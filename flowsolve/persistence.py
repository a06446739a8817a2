"""Saving and loading solvers: tensors + JSON header, checksummed, written atomically.

The file is a ``torch.save`` archive of plain tensors and strings only, read back with
``weights_only=True`` (no arbitrary pickle).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from ._version import __version__
from .base_solvers import BUILTIN_BASE_SOLVERS, BaseSolver
from .tableau import ButcherTableau

FORMAT_NAME = "flowsolve.solver"
FORMAT_VERSION = 2  # 2: solver families other than transform x base ("family" in the header)


class SolverFileError(ValueError):
    """A solver file is corrupt, from a newer format, or describes an unknown family."""


def atomic_torch_save(payload, path) -> None:
    """``torch.save`` to a temporary file in the target directory, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _checksum(header: str, tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256(header.encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def save_solver(solver, path) -> None:
    tensors = {name: p.detach().cpu().clone() for name, p in solver.params.items()}
    description = solver.header()
    header = json.dumps(
        {"library_version": __version__, "nfe": solver.nfe, "metadata": solver.metadata, **description},
        sort_keys=True,
    )
    payload = {
        "format": FORMAT_NAME,
        # Files that format 1 can describe stay readable by flowsolve versions that only know it.
        "format_version": 2 if "family" in description or "multistep" in description.get("base", {}) else 1,
        "header": header,
        "tensors": tensors,
        "checksum": _checksum(header, tensors),
    }
    atomic_torch_save(payload, path)


def load(path, map_location: str | torch.device = "cpu"):
    """Load a solver written by :meth:`ParametricSolver.save`.

    Raises:
        FileNotFoundError: no file at ``path``.
        SolverFileError: the file is corrupt, of a newer format version, or of an unknown family.

    Example:
        >>> import flowsolve, tempfile, os
        >>> solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=4)
        >>> path = os.path.join(tempfile.mkdtemp(), "solver.pt")
        >>> solver.save(path)
        >>> flowsolve.load(path).nfe
        4
    """

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no solver file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated / not a torch archive / foreign pickle
        raise SolverFileError(f"{path} is not a readable flowsolve solver file (corrupt or truncated?): {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise SolverFileError(f"{path} is not a flowsolve solver file (no '{FORMAT_NAME}' marker)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SolverFileError(
            f"{path} uses solver format version {version}, but flowsolve {__version__} reads up to version "
            f"{FORMAT_VERSION}; upgrade flowsolve to load it"
        )
    header_text, tensors = payload.get("header"), payload.get("tensors")
    if not isinstance(header_text, str) or not isinstance(tensors, dict):
        raise SolverFileError(f"{path} is missing its header or parameters; the file is corrupt")
    if _checksum(header_text, tensors) != payload.get("checksum"):
        raise SolverFileError(f"{path} failed its checksum: the file is corrupt; re-save or re-fit the solver")
    header = json.loads(header_text)
    if "family" in header:
        solver = _family_solver(header, path)
    else:
        transform = _transform_from_dict(header["transform"], path)
        base = _base_from_dict(header["base"], path)
        solver = base.parametric_solver(transform, header["n_steps"])
    expected = {name: tuple(p.shape) for name, p in solver.params.items()}
    found = {name: tuple(t.shape) for name, t in tensors.items()}
    if expected != found:
        raise SolverFileError(f"{path}: parameters {found} do not match the family's {expected}; the file is corrupt")
    with torch.no_grad():
        for name, tensor in tensors.items():
            solver.params[name].copy_(tensor)
    solver.metadata = header.get("metadata", {})
    return solver.to(map_location)


def _family_solver(header: dict, path):
    from .registry import lookup, UnknownNameError

    try:
        family = lookup("solver family", header["family"])
    except UnknownNameError as error:
        raise SolverFileError(f"{path} was written for solver family {header['family']!r}: {error}") from error
    return family.solver_class.from_header(header)


def _transform_from_dict(data: dict, path):
    from .registry import transform_classes

    classes = transform_classes()
    name = data.get("name")
    if name not in classes:
        raise SolverFileError(
            f"{path} was written for transform {name!r}, which is not registered here; known transforms: "
            f"{sorted(classes)} (install the plugin that provides {name!r})"
        )
    cls = classes[name]
    options = {k: v for k, v in data.items() if k != "name"}
    return cls.from_dict(options) if hasattr(cls, "from_dict") else cls(**options)


def _base_from_dict(data: dict, path) -> BaseSolver:
    if data.get("multistep") == "adams-bashforth":
        from .multistep import AdamsBashforth

        return AdamsBashforth(int(data["order"]))
    try:
        tableau = ButcherTableau.from_dict(data)
    except (KeyError, TypeError, ValueError) as error:
        raise SolverFileError(f"{path}: the stored base tableau is invalid: {error}") from error
    builtin = BUILTIN_BASE_SOLVERS.get(tableau.name)
    if builtin is not None and builtin.tableau == tableau:
        return builtin()
    return BaseSolver(tableau)
