"""Loading solvers: rebuild every stored part through the plugin registry.

A solver file (:mod:`flowsolve.core.solver_file`, written by ``solver.save``) stores the solver's
family as ``{kind, name, options}``; the options hold the family's parts (base method, transform)
in the same shape. Loading rebuilds each part bottom-up as ``lookup(kind, name).from_spec(name,
options)`` (or, for a registered factory that is not a class, ``factory()`` when it describes
itself as stored), builds the family's solver at the stored NFE and copies the tensors in. A
header that says more than, or other than, what the rebuilt solver says of itself is refused.

Files of format versions 1 and 2 stored the parts in another shape; :func:`_upgrade_header`
reads them.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from flowsolve.core.solver_file import (
    FORMAT_NAME,
    FORMAT_VERSION,
    SolverFileError,
    atomic_torch_save,
    is_part_spec,
    part_spec,
    read_solver_file,
)
from flowsolve.core.solver_file import checksum as _checksum  # noqa: F401  (its former home)
from flowsolve.methods.runge_kutta import BaseSolver
from flowsolve.plugins.registry import (
    NameClashError,
    UnknownNameError,
    lookup,
    registry,
)
from flowsolve.solvers.family import ParametricFamily

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "SolverFileError", "atomic_torch_save", "load"]

# Header entries that describe the file rather than the solver.
_FILE_KEYS = ("library_version", "metadata")
# What a Runge--Kutta base stores for its Butcher tableau; anything else is an option of a plugin's.
_TABLEAU_KEYS = frozenset({"a", "b", "c", "order"})
# Parts flowsolve rebuilds without a registry entry: the transform x base family (built by
# compose, not registered), and a Runge--Kutta base fully described by its stored tableau.
_UNREGISTERED = {("solver family", ParametricFamily.name): ParametricFamily}
_KNOWN_AS = {"base solver": "base solvers", "transform": "transforms", "solver family": "solver families",
             "loss": "losses"}


def load(path, map_location: str | torch.device = "cpu"):
    """Load a solver written by ``solver.save(path)``.

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
    stored = read_solver_file(path)
    header, n_steps = (stored.header, None) if stored.version == FORMAT_VERSION else _upgrade_header(stored.header, path)
    missing = [key for key in ("family", "nfe") if key not in header]
    if missing:
        raise SolverFileError(f"{path}: the header lacks {missing}; the file is corrupt")
    family = _rebuild(header["family"], path, place="family")
    nfe = header["nfe"]
    try:
        solver = family.new_solver(nfe)
    except (TypeError, ValueError) as error:
        raise SolverFileError(f"{path}: cannot build the stored {family.label} solver with nfe={nfe!r}: {error}") from error
    if n_steps is not None and n_steps != solver.n_steps:
        raise SolverFileError(f"{path}: the header stores n_steps = {n_steps!r}, but a {family.label} solver with "
                              f"nfe={nfe!r} has {solver.n_steps} steps; the file is corrupt")
    _check_description(header, {"nfe": solver.nfe, "family": family.to_spec()}, path)
    tensors = type(solver).upgrade_parameters(stored.tensors)
    expected = {name: tuple(p.shape) for name, p in solver.params.items()}
    found = {name: tuple(t.shape) for name, t in tensors.items()}
    if expected != found:
        raise SolverFileError(f"{path}: parameters {found} do not match the family's {expected}; the file is corrupt")
    with torch.no_grad():
        for name, tensor in tensors.items():
            solver.params[name].copy_(tensor)
    solver.metadata = header.get("metadata", {})
    return solver.to(map_location)


# -- rebuilding parts -------------------------------------------------------------------------------
def _rebuild(spec, path, place: str):
    """The part ``spec`` describes, its nested parts rebuilt first."""
    if not is_part_spec(spec):
        raise SolverFileError(f"{path}: the stored {place} {spec!r} is not a {{kind, name, options}} part; the file "
                              "is corrupt")
    kind, name = spec["kind"], spec["name"]
    options = {key: _rebuild(value, path, place=key) if is_part_spec(value) else value
               for key, value in spec["options"].items()}
    factory = _factory(kind, name, spec["options"], path)
    try:
        return _construct(factory, name, options, spec)
    except SolverFileError:
        raise
    except Exception as error:  # a plugin's constructor: say which file and part failed
        raise SolverFileError(f"{path}: {kind} {name!r} ({_qualified(factory)}) cannot be rebuilt from the stored "
                              f"{spec!r}: {type(error).__name__}: {error}") from error


def _factory(kind: str, name: str, options: dict, path):
    """What the registry provides as ``name`` of ``kind`` (or flowsolve's unregistered default)."""
    try:
        return lookup(kind, name)
    except NameClashError as error:
        raise SolverFileError(f"{path} was written for {kind} {name!r}, which cannot be loaded here: {error}") from error
    except UnknownNameError as error:
        if (kind, name) in _UNREGISTERED:
            return _UNREGISTERED[(kind, name)]
        extra = sorted(set(options) - _TABLEAU_KEYS)
        if kind == "base solver" and not extra:  # a bare tableau needs no plugin
            return BaseSolver
        known = f"known {_KNOWN_AS.get(kind, kind)}: {sorted(registry().table(kind))}"
        with_options = f" with option(s) {extra}" if kind == "base solver" else ""
        raise SolverFileError(f"{path} was written for {kind} {name!r}{with_options}, which is not registered here; "
                              f"{known} (install the plugin that provides {name!r})") from error


def _construct(factory: Any, name: str, options: dict, spec: dict):
    """``factory.from_spec(name, options)`` for a class; for another factory (e.g. a partial
    binding a method's options), ``factory()`` if it describes itself as stored, else its class's
    ``from_spec``."""
    if isinstance(factory, type):
        part_class: Any = factory  # a BaseMethod, Transform, Family or Loss subclass
        return part_class.from_spec(name, options)
    part: Any = factory()
    if _as_json(part.to_spec()) == _as_json(spec):
        return part
    return type(part).from_spec(name, options)


def _qualified(factory) -> str:
    target = factory if isinstance(factory, type) else type(factory)
    return f"{target.__module__}.{target.__qualname__}"


# -- format versions 1 and 2 ------------------------------------------------------------------------
def _upgrade_header(header: dict, path) -> tuple[dict, int | None]:
    """A version 1 or 2 header in the current shape, and the step count it stored (if any).

    Version 1 / 2 stored ``{"transform": {"name", **options}, "base": {"name", **tableau or options},
    "n_steps"}`` for transform x base solvers, and ``{"family": name, "nfe"}`` for the others.
    """
    upgraded = {key: value for key, value in header.items() if key not in ("transform", "base", "n_steps", "family")}
    if "family" in header:
        if not isinstance(header["family"], str):
            raise SolverFileError(f"{path}: the stored family {header['family']!r} has no name; the file is corrupt")
        upgraded["family"] = part_spec("solver family", header["family"])
        return upgraded, None
    missing = [key for key in ("transform", "base", "n_steps") if key not in header]
    if missing:
        raise SolverFileError(f"{path}: the header lacks {missing}; the file is corrupt")
    transform = _old_part("transform", header["transform"], path)
    base = _old_part("base solver", header["base"], path)
    upgraded["family"] = part_spec("solver family", ParametricFamily.name, {"transform": transform, "base": base})
    return upgraded, header["n_steps"]


def _old_part(kind: str, data, path) -> dict:
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str):
        raise SolverFileError(f"{path}: the stored {kind} {data!r} has no name; the file is corrupt")
    return part_spec(kind, name, {key: value for key, value in data.items() if key != "name"})


# -- refusing what the rebuilt solver does not say of itself ------------------------------------------
def _as_json(value, path=None):
    """``value`` as a solver file would store it (tuples become lists, ...)."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as error:
        raise SolverFileError(f"{path}: the loaded solver describes itself with values a solver file cannot store: "
                              f"{error}") from error


def _check_description(header: dict, rebuilt: dict, path) -> None:
    """Refuse a file whose header says more than, or other than, the solver rebuilt from it: an
    option nothing here knows, or one a plugin's ``from_spec`` did not restore."""
    stored = {key: value for key, value in header.items() if key not in _FILE_KEYS}
    problem = _difference(stored, _as_json(rebuilt, path), path, place="header")
    if problem is not None:
        raise SolverFileError(problem)


def _difference(stored: dict, rebuilt: dict, path, place: str) -> str | None:
    for key in sorted(stored, key=lambda k: (k in _TABLEAU_KEYS, k)):  # options before the tableau they imply
        if key not in rebuilt:
            return _unknown_option(path, key, place)
        if is_part_spec(stored[key]) and isinstance(rebuilt[key], dict):
            part_place = f"header's {key} ({stored[key]['name']})"
            problem = (_difference({k: v for k, v in stored[key].items() if k != "options"},
                                   {k: v for k, v in rebuilt[key].items() if k != "options"}, path, part_place)
                       or _difference(stored[key]["options"], rebuilt[key].get("options", {}), path, part_place))
            if problem is not None:
                return problem
        elif isinstance(stored[key], dict) and isinstance(rebuilt[key], dict):
            problem = _difference(stored[key], rebuilt[key], path, f"header's {key}")
            if problem is not None:
                return problem
        elif stored[key] != rebuilt[key]:
            return (f"{path}: the {place} stores {key!r} = {stored[key]!r}, but the solver rebuilt from it "
                    f"has {key!r} = {rebuilt[key]!r}: whatever provides it does not restore this option on loading "
                    f"(a plugin base solver or transform with options needs a from_spec (or from_dict) that reads "
                    f"them; see flowsolve.plugins.hookspecs)")
    return None


def _unknown_option(path, option: str, place: str) -> str:
    return (f"{path}: unknown option {option!r} in the {place}; nothing installed here understands it "
            f"(the file was written by a newer or different version of flowsolve or of the plugin that provides "
            f"it: install that version to load it)")
