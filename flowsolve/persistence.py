"""Saving and loading solvers: tensors + JSON header, checksummed, written atomically.

The file is a ``torch.save`` archive of plain tensors and strings only, read back with
``weights_only=True`` (no arbitrary pickle).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import warnings
from pathlib import Path

import torch

from flowsolve._version import __version__
from flowsolve.core.atomic import atomic_write
from flowsolve.core.errors import FlowsolveValueError
from flowsolve.core.tableau import ButcherTableau
from flowsolve.methods.runge_kutta import BaseSolver

FORMAT_NAME = "flowsolve.solvers.parametric"
FORMAT_VERSION = 2  # 2: solver families other than transform x base ("family" in the header)


class SolverFileError(FlowsolveValueError):
    """A solver file is corrupt, from a newer format, describes an unknown family, or has options
    that nothing installed here understands."""


# Header entries that describe the file rather than the solver.
_FILE_KEYS = ("library_version", "metadata")
# What a base solver's ``to_dict()`` stores for its Butcher tableau; anything else is an option.
_TABLEAU_KEYS = frozenset({"name", "a", "b", "c", "order"})


def atomic_torch_save(payload, path) -> None:
    """``torch.save`` through :func:`flowsolve.atomic.atomic_write` (atomic, honours the umask)."""
    atomic_write(path, lambda stream: torch.save(payload, stream))


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
    try:
        header = json.loads(header_text)
    except ValueError as error:
        raise SolverFileError(f"{path}: the header is not JSON ({error}); the file is corrupt") from error
    if not isinstance(header, dict):
        raise SolverFileError(f"{path}: the header is a {type(header).__name__}, not a mapping; the file is corrupt")
    if "family" in header:
        solver = _family_solver(header, path)
    else:
        missing = [key for key in ("transform", "base", "n_steps") if key not in header]
        if missing:
            raise SolverFileError(f"{path}: the header lacks {missing}; the file is corrupt")
        transform = _transform_from_dict(header["transform"], path)
        base = _base_from_dict(header["base"], path)
        try:
            solver = base.parametric_solver(transform, header["n_steps"])
        except (TypeError, ValueError) as error:
            raise SolverFileError(f"{path}: cannot build the stored {base.name} solver with n_steps="
                                  f"{header['n_steps']!r}: {error}") from error
    _check_description(header, solver, path)
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
    from flowsolve.plugins.registry import UnknownNameError, lookup

    try:
        family = lookup("solver family", header["family"])
    except UnknownNameError as error:
        raise SolverFileError(f"{path} was written for solver family {header['family']!r}: {error}") from error
    try:
        return family.solver_class.from_header(header)
    except Exception as error:  # a plugin's from_header: say which file and family failed
        raise SolverFileError(f"{path}: solver family {header['family']!r} cannot rebuild its solver from the stored "
                              f"header: {type(error).__name__}: {error}") from error


def _transform_from_dict(data, path):
    from flowsolve.plugins.registry import NameClashError, UnknownNameError, lookup

    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str):
        raise SolverFileError(f"{path}: the stored transform {data!r} has no name; the file is corrupt")
    try:
        cls = lookup("transform", name)
    except NameClashError as error:
        raise SolverFileError(f"{path} was written for transform {name!r}, which cannot be loaded here: {error}") from error
    except UnknownNameError as error:
        raise SolverFileError(
            f"{path} was written for transform {name!r}, which is not registered here; known transforms: "
            f"{sorted(_registered('transform'))} (install the plugin that provides {name!r})"
        ) from error
    options = {k: v for k, v in data.items() if k != "name"}
    if not hasattr(cls, "from_dict"):
        unknown = sorted(set(options) - _accepted(cls, options))
        if unknown:
            raise SolverFileError(_unknown_option(path, unknown[0], f"header's transform ({name})"))
    try:
        return cls.from_dict(options) if hasattr(cls, "from_dict") else cls(**options)
    except Exception as error:  # a plugin's constructor: say which file and transform failed
        raise SolverFileError(f"{path}: transform {name!r} ({cls.__module__}.{cls.__qualname__}) cannot be rebuilt "
                              f"from the stored {data!r}: {type(error).__name__}: {error}") from error


def _base_from_dict(data, path) -> BaseSolver:
    """The base solver registered under the stored name, as the class its plugin registered; a bare
    tableau under a name nothing registers (e.g. ``BaseSolver(my_tableau)``) as a plain BaseSolver."""
    from flowsolve.plugins.registry import NameClashError, UnknownNameError, lookup

    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str):
        raise SolverFileError(f"{path}: the stored base solver {data!r} has no name; the file is corrupt")
    options = sorted(set(data) - _TABLEAU_KEYS)
    try:
        factory = lookup("base solver", name)
    except NameClashError as error:
        raise SolverFileError(f"{path} was written for base solver {name!r}, which cannot be loaded here: {error}") from error
    except UnknownNameError as error:
        if options:
            raise SolverFileError(
                f"{path} was written for base solver {name!r} with option(s) {options}, which is not registered "
                f"here; known base solvers: {sorted(_registered('base solver'))} (install the plugin that provides "
                f"{name!r})"
            ) from error
        return BaseSolver(_tableau(data, path))
    rebuild = getattr(factory, "from_dict", None)
    try:
        base = rebuild(data) if rebuild is not None else factory()
    except Exception as error:  # a plugin's factory: say which file and base failed
        raise SolverFileError(f"{path}: the registered base solver {name!r} cannot be rebuilt from the stored "
                              f"{data!r}: {type(error).__name__}: {error}") from error
    if rebuild is None and not options and _as_json(base.to_dict(), path) != data:
        # A bare tableau under a registered name, but not the registered method (a user's own
        # tableau, or one the plugin has since changed): the stored method is what was fitted.
        warnings.warn(f"{path}: the stored base solver {name!r} is not the registered {name!r} "
                      f"({type(base).__name__}); loading the stored tableau as a plain BaseSolver", stacklevel=3)
        return BaseSolver(_tableau(data, path))
    return base


def _tableau(data: dict, path) -> ButcherTableau:
    try:
        return ButcherTableau.from_dict(data)
    except (KeyError, TypeError, ValueError) as error:
        raise SolverFileError(f"{path}: the stored base tableau is invalid: {error}") from error


def _registered(kind: str) -> dict:
    from flowsolve.plugins.registry import registry

    return registry().table(kind)


def _accepted(cls, options: dict) -> set[str]:
    """The keyword arguments ``cls(...)`` accepts (all of ``options`` if it cannot tell)."""
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return set(options)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return set(options)
    return {p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def _unknown_option(path, option: str, place: str) -> str:
    return (f"{path}: unknown option {option!r} in the {place}; nothing installed here understands it "
            f"(the file was written by a newer or different version of flowsolve or of the plugin that provides "
            f"it: install that version to load it)")


def _as_json(value, path):
    """``value`` as a solver file would store it (tuples become lists, ...)."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as error:
        raise SolverFileError(f"{path}: the loaded solver describes itself with values a solver file cannot store: "
                              f"{error}") from error


def _check_description(header: dict, solver, path) -> None:
    """Refuse a file whose header says more than, or other than, the solver rebuilt from it: an
    option nothing here knows, or one a plugin's ``from_dict`` / ``from_header`` did not restore."""
    stored = {key: value for key, value in header.items() if key not in _FILE_KEYS}
    rebuilt = _as_json({"nfe": solver.nfe, **solver.header()}, path)
    problem = _difference(stored, rebuilt, path, place="header")
    if problem is not None:
        raise SolverFileError(problem)


def _difference(stored: dict, rebuilt: dict, path, place: str) -> str | None:
    for key in sorted(stored, key=lambda k: (k in _TABLEAU_KEYS, k)):  # options before the tableau they imply
        if key not in rebuilt:
            return _unknown_option(path, key, place)
        if isinstance(stored[key], dict) and isinstance(rebuilt[key], dict):
            name = stored[key].get("name")
            problem = _difference(stored[key], rebuilt[key], path,
                                  f"header's {key}" + ("" if name is None else f" ({name})"))
            if problem is not None:
                return problem
        elif stored[key] != rebuilt[key]:
            return (f"{path}: the {place} stores {key!r} = {stored[key]!r}, but the solver rebuilt from it "
                    f"has {key!r} = {rebuilt[key]!r}: whatever provides it does not restore this option on loading "
                    f"(a plugin base solver or transform with options needs a from_dict that reads them; see "
                    f"flowsolve.plugins.hookspecs)")
    return None
