"""Dependencies between flowsolve's layers point one way: no module imports a higher layer.

Checked on the source (every ``import`` statement, module level or in a function body), for
every module outside the top layers (cli/, plugins/, conformance/ and the package's own entry
modules). Exceptions are listed below, each with its reason; the list only shrinks. (An import
inside a function still couples the layers: it only defers the cost, so it counts here too.)
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "flowsolve"

# Lowest first. persistence (flowsolve.load) rebuilds parts through the plugins' registry, so it
# sits above plugins.registry / plugins.hookspecs.
LAYERS = ("core", "methods", "solvers", "paths", "models", "baselines", "training", "plugins", "persistence")
TOP = ("cli", "conformance", "__init__", "__main__", "_moved_modules", "_version")

# (importing module, imported module): why the import points upwards.
KNOWN_EXCEPTIONS = {
    # family.fit(model, nfe) is the public entry point; the training loop is the layer above.
    ("flowsolve.solvers.family_base", "flowsolve.training.fit"),
    # solver.initialise("log-snr", model) resolves a schedule name (fit resolves names itself).
    ("flowsolve.solvers.parametric", "flowsolve.paths.time_grids"),
    # A non-stationary solver starts from a baseline or a registered base solver named by a string.
    ("flowsolve.solvers.nonstationary", "flowsolve.baselines"),
    ("flowsolve.solvers.nonstationary", "flowsolve.plugins.registry"),
    # Names resolved through the registry of the plugin layer, on demand: adapt(model, kind) and
    # the report comparing every registered baseline.
    ("flowsolve.models.adapters", "flowsolve.plugins.registry"),
    ("flowsolve.training.evaluation", "flowsolve.plugins.registry"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int | None:
    """The index of ``module``'s layer, or None for the top layers (and anything outside flowsolve)."""
    parts = module.split(".")
    if parts[0] != "flowsolve" or len(parts) < 2 or parts[1] in TOP:
        return None
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def _imports(path: Path):
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target


def _sources():
    return sorted(p for p in PACKAGE.rglob("*.py") if _layer(_module_name(p)) is not None)


def _upward_imports() -> list[str]:
    found: list[str] = []
    for path in _sources():
        module = _module_name(path)
        own = _layer(module)
        for line, target in _imports(path):
            layer = _layer(target)
            if layer is not None and layer > own and (module, target) not in KNOWN_EXCEPTIONS:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} ({LAYERS[own]}) imports {target} "
                             f"({LAYERS[layer]})")
    return found


def test_the_layering_test_sees_the_package():
    assert {_layer(_module_name(p)) for p in _sources()} >= {LAYERS.index("core"), LAYERS.index("solvers")}


def test_no_module_imports_a_higher_layer():
    assert _upward_imports() == []


def test_every_listed_exception_is_still_needed():
    present = {(_module_name(path), target) for path in _sources() for _, target in _imports(path)}
    assert KNOWN_EXCEPTIONS <= present, f"no longer imported, remove from KNOWN_EXCEPTIONS: {KNOWN_EXCEPTIONS - present}"
