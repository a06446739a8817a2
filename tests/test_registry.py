"""Plugin discovery through entry points: faked entry points, broken plugins, disabling, the CLI."""

import importlib.metadata
import inspect
import sys
import types

import pytest

import flowsolve
from flowsolve import hookspecs, registry
from flowsolve.cli import main


def fake_entry_point(name, module_name):
    return importlib.metadata.EntryPoint(name=name, value=module_name, group=registry.ENTRY_POINT_GROUP)


@pytest.fixture
def third_party(monkeypatch):
    """A plugin module that adds one of everything."""
    module = types.ModuleType("fake_flowsolve_plugin")

    class Ralston(flowsolve.BaseSolver):
        tableau = flowsolve.ButcherTableau("ralston", a=[[0, 0], ["2/3", 0]], b=["1/4", "3/4"], c=[0, "2/3"], order=2)

    class Warp(flowsolve.TimeOnly):
        name = "warp"

    class Huber(flowsolve.losses.LTE):
        name = "huber"

    module.flowsolve_base_solvers = flowsolve.hookimpl(lambda: {"ralston": Ralston})
    module.flowsolve_transforms = flowsolve.hookimpl(lambda: {"warp": Warp})
    module.flowsolve_losses = flowsolve.hookimpl(lambda: {"huber": Huber})
    module.flowsolve_solver_families = flowsolve.hookimpl(lambda: {"euler-started": lambda **_: flowsolve.NonStationary(flowsolve.Euler())})
    module.flowsolve_model_adapters = flowsolve.hookimpl(lambda: {"doubled": lambda model: lambda t, x: 2 * model(x, t)})
    module.flowsolve_models = flowsolve.hookimpl(lambda: {"fake-flow": lambda: flowsolve.GaussianMixtureFlow.random(2, 2)})
    module.flowsolve_detect_adapter = flowsolve.hookimpl(
        lambda model: ("doubled", {}) if getattr(model, "is_fake", False) else None
    )
    monkeypatch.setitem(sys.modules, "fake_flowsolve_plugin", module)
    points = list(importlib.metadata.entry_points(group=registry.ENTRY_POINT_GROUP))
    points.append(fake_entry_point("fake", "fake_flowsolve_plugin"))
    monkeypatch.setattr(registry, "_REGISTRY", registry.Registry(points))
    yield module
    registry.reset()


def test_builtins_come_through_the_entry_point():
    found = registry.Registry()
    builtin = next(r for r in found.records if r.name == "builtin")
    assert builtin.error is None and builtin.source.startswith("flowsolve.builtin_plugin")
    assert {"euler", "midpoint", "heun", "rk3", "rk4", "rk38"} <= set(found.base_solvers())
    assert set(found.transforms()) >= {"scale-time", "time-only", "scale-only"}
    assert set(found.losses()) >= {"rmse", "rmse-bound", "lte"}
    assert set(found.adapters()) >= {"fm-ot", "fm-cs", "eps-vp", "x-pred", "v-pred", "edm"}


def test_a_third_party_plugin_adds_every_kind(third_party, tmp_path):
    assert registry.base_solver("ralston").order == 2
    assert registry.lookup("solver family", "euler-started")().at(nfe=3).num_params == 12
    assert "warp" in registry.transform_classes() and "huber" in registry.registry().losses()
    assert registry.model("fake-flow").dim == 2

    class Model:
        is_fake = True

        def __call__(self, x, t):
            return x

    import torch

    u = flowsolve.adapt(Model())
    assert torch.equal(u(torch.tensor(0.5), torch.ones(2)), 2 * torch.ones(2))
    # A solver of the plugin's family saves and loads by name.
    solver = flowsolve.compose(registry.transform_classes()["warp"](), registry.base_solver("ralston")).at(nfe=4)
    solver.save(tmp_path / "s.pt")
    assert flowsolve.load(tmp_path / "s.pt").transform.name == "warp"


def test_a_broken_plugin_is_reported_and_the_rest_work(monkeypatch):
    broken = fake_entry_point("broken", "module_that_does_not_exist_anywhere")
    points = list(importlib.metadata.entry_points(group=registry.ENTRY_POINT_GROUP)) + [broken]
    with pytest.warns(UserWarning, match="plugin 'broken'.*failed to load: ModuleNotFoundError"):
        found = registry.Registry(points)
    record = next(r for r in found.records if r.name == "broken")
    assert "ModuleNotFoundError" in record.error
    assert "midpoint" in found.base_solvers()


def test_environment_variable_disables_named_plugins(monkeypatch, third_party):
    monkeypatch.setenv(registry.DISABLE_VARIABLE, "fake, other")
    points = list(importlib.metadata.entry_points(group=registry.ENTRY_POINT_GROUP)) + [fake_entry_point("fake", "fake_flowsolve_plugin")]
    found = registry.Registry(points)
    assert "ralston" not in found.base_solvers() and "midpoint" in found.base_solvers()
    assert next(r for r in found.records if r.name == "fake").disabled


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(registry.UnknownNameError, match=r"unknown base solver 'rk5'; registered: \['ab2', 'ab3', 'euler'"):
        registry.base_solver("rk5")


def test_cli_lists_plugins_and_their_sources(capsys, third_party):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "builtin" in out and "flowsolve.builtin_plugin" in out and "fake_flowsolve_plugin" in out
    assert "ralston" in out and "doubled" in out and "euler-started" in out and "non-stationary" in out


def test_every_hook_is_prefixed_documented_and_exercised():
    specs = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("flowsolve_")]
    assert set(specs) == {"flowsolve_model_adapters", "flowsolve_detect_adapter", "flowsolve_base_solvers",
                          "flowsolve_transforms", "flowsolve_losses", "flowsolve_models", "flowsolve_solver_families"}
    for name in specs:
        doc = getattr(hookspecs, name).__doc__
        assert doc and ":return:" in doc, name
    source = inspect.getsource(sys.modules[__name__])
    for name in specs:
        assert f"module.{name}" in source, f"{name} is not exercised by a fake plugin here"
