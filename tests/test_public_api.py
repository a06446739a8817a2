import subprocess
import sys

import pytest

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


@pytest.mark.parametrize("old, new", [("SolverFamily", "ParametricFamily"), ("TrajectoryStore", "GroundTruthStore")])
def test_renamed_names_still_resolve_with_a_deprecation_warning(old, new):
    with pytest.warns(DeprecationWarning, match=new):
        assert getattr(flowsolve, old) is getattr(flowsolve, new)


def test_a_submodule_under_an_old_package_name_is_the_same_module():
    code = ("import warnings; warnings.simplefilter('ignore')\n"
            "import flowsolve.zoo.networks as old, flowsolve.models.zoo.networks as new\n"
            "assert old is new and old.DigitsMLP is new.DigitsMLP\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
