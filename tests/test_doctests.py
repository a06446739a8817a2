"""Every docstring example in flowsolve runs, as part of the ordinary test command.

Each module of the package is one test. A module whose import needs an optional package that
is not installed (e.g. ``diffusers``) is skipped, naming the package; an example that uses a
deprecated module name fails, so the documentation shows the current layout.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import warnings

import pytest

import flowsolve

# Modules whose import has side effects on the running pytest session.
_NOT_IMPORTED = {"flowsolve.conformance.pytest_plugin"}


def _module_names() -> list[str]:
    """The modules whose source holds a docstring example (found without importing them)."""
    names = []
    for info in pkgutil.walk_packages([*flowsolve.__path__], prefix="flowsolve."):
        spec = info.module_finder.find_spec(info.name, None)  # type: ignore[call-arg]
        if info.name in _NOT_IMPORTED or spec is None or spec.origin is None:
            continue
        with open(spec.origin, encoding="utf-8") as source:
            if ">>>" in source.read():
                names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _module_names())
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] == "flowsolve":
            raise
        pytest.skip(f"{name} needs the optional package {error.name!r}")
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    examples = [test for test in finder.find(module, name) if test.examples]
    report: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for test in examples:
            runner.run(test, out=report.append)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, f"{failed} of {attempted} docstring examples in {name} failed:\n" + "".join(report)
