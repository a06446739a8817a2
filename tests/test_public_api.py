import ast
import pathlib
import subprocess
import sys

import flowsolve
from flowsolve._moved_modules import MOVED

PINNED = ["compose", "load", "ScaleTime", "TimeOnly", "ScaleOnly", "Euler", "Midpoint", "Heun", "RK3", "RK4",
          "ButcherTableau", "adapt", "reschedule", "schedulers", "hookimpl"]


def test_every_name_in_all_resolves():
    for name in flowsolve.__all__:
        assert getattr(flowsolve, name) is not None, name


def test_pinned_names_are_public():
    assert set(PINNED) <= set(flowsolve.__all__)


def test_public_classes_have_docstrings():
    for name in flowsolve.__all__:
        obj = getattr(flowsolve, name)
        if callable(obj) and not isinstance(obj, type(flowsolve)):
            assert obj.__doc__ and obj.__doc__.strip(), name


def test_documented_submodules_are_attributes_after_import_flowsolve():
    # A fresh interpreter: in this one another test may already have imported the submodule.
    code = ("import flowsolve; assert callable(flowsolve.nonstationary.trace); "
            "assert 'nonstationary' in flowsolve.__all__")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


# The layers of docs/architecture.md, lower to higher: a module imports only from its own layer
# or lower ones at module level. (Imports inside functions may reach higher, where the importing
# module's comment says why; type-only imports under ``if TYPE_CHECKING:`` are free.)
LAYERS = ["core", "methods", "solvers", "paths", "models", "baselines", "training", "persistence", "plugins",
          "conformance", "cli"]
# Module-level imports that still point upwards, to be removed; do not add to this list.
KNOWN_UPWARD_IMPORTS = {
    ("flowsolve.paths.time_grids", "flowsolve.baselines.training_free"),
    ("flowsolve.training.fit", "flowsolve.persistence"),
    # persistence rebuilds parts through the registry: either import it inside the functions that
    # look names up, or move the registry below persistence in the layer order.
    ("flowsolve.persistence", "flowsolve.plugins.registry"),
}


def _layer_rank(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return len(LAYERS)  # the public facade, flowsolve/__init__.py: above every layer
    if parts[1] in ("_version", "_moved_modules"):
        return -1  # below every layer
    return LAYERS.index(parts[1])


def _module_level_imports(tree):
    """``(line, module)`` of the imports a module runs when it is imported."""
    def is_type_checking(test):
        return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")

    def visit(statements):
        for node in statements:
            if isinstance(node, ast.Import):
                yield from ((node.lineno, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield node.lineno, node.module
            elif isinstance(node, ast.If):
                if not is_type_checking(node.test):
                    yield from visit(node.body)
                yield from visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                    yield from visit(block)

    return visit(tree.body)


def test_module_level_imports_point_down_the_layers():
    root = pathlib.Path(flowsolve.__file__).parent
    upward = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if module.count(".") == 0 or module.split(".")[1] not in LAYERS:
            continue
        for line, imported in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if imported.split(".")[0] != "flowsolve" or (module, imported) in KNOWN_UPWARD_IMPORTS:
                continue
            if _layer_rank(imported) > _layer_rank(module):
                upward.append(f"{path.relative_to(root.parent)}:{line} imports {imported}")
    assert not upward, "imports against the layer order of docs/architecture.md:\n" + "\n".join(upward)


def test_old_module_names_resolve_with_a_deprecation_warning():
    # A fresh interpreter, so that each old name is imported for the first time.
    code = (
        "import importlib, warnings\n"
        f"for old, new in {sorted(MOVED.items())!r}:\n"
        "    with warnings.catch_warnings(record=True) as caught:\n"
        "        warnings.simplefilter('always')\n"
        "        module = importlib.import_module(old)\n"
        "    assert module is importlib.import_module(new), old\n"
        "    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught), old\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
