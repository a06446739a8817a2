"""Plugin discovery through entry points: faked entry points, broken plugins, disabling, the CLI."""

import importlib.metadata
import inspect
import re
import sys
import types
import warnings

import pytest

import flowsolve
from flowsolve.cli import main
from flowsolve.plugins import hookspecs, registry


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
    module.flowsolve_baselines = flowsolve.hookimpl(lambda: {"half-euler": HalfEuler})
    module.flowsolve_detect_adapter = flowsolve.hookimpl(
        lambda model: ("doubled", {}) if getattr(model, "is_fake", False) else None
    )
    monkeypatch.setitem(sys.modules, "fake_flowsolve_plugin", module)
    points = list(importlib.metadata.entry_points(group=registry.ENTRY_POINT_GROUP))
    points.append(fake_entry_point("fake", "fake_flowsolve_plugin"))
    monkeypatch.setattr(registry, "_REGISTRY", registry.Registry(points))
    yield module
    registry.reset()


class HalfEuler(flowsolve.baselines.Baseline):
    """A plugin's baseline: Euler with half the budget (it reports what it really spent)."""

    needs_scheduler = False
    name = "half-euler"

    def sample(self, u, x0, nfe):
        steps = max(nfe // 2, 1)
        return flowsolve.Euler().sample(u, x0, steps), steps


def test_builtins_come_through_the_entry_point():
    found = registry.Registry()
    builtin = next(r for r in found.records if r.name == "builtin")
    assert builtin.error is None and builtin.source.startswith("flowsolve.plugins.builtin")
    assert {"euler", "midpoint", "heun", "rk3", "rk4", "rk38"} <= set(found.base_solvers())
    assert set(found.transforms()) >= {"scale-time", "time-only", "scale-only"}
    assert set(found.losses()) >= {"rmse", "rmse-bound", "lte"}
    assert set(found.adapters()) >= {"fm-ot", "fm-cs", "eps-vp", "x-pred", "v-pred", "edm"}
    assert list(found.baselines()) == list(flowsolve.baselines.builtin_baselines())  # the built-ins, in report order


def test_a_third_party_plugin_adds_every_kind(third_party, tmp_path):
    assert registry.base_solver("ralston").order == 2
    assert registry.lookup("solver family", "euler-started")().at(nfe=3).num_params == 12
    assert "warp" in registry.transform_classes() and "huber" in registry.registry().losses()
    assert registry.model("fake-flow").dim == 2
    assert registry.lookup("baseline", "half-euler") is HalfEuler

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
    assert "builtin" in out and "flowsolve.plugins.builtin" in out and "fake_flowsolve_plugin" in out
    assert "ralston" in out and "doubled" in out and "euler-started" in out and "non-stationary" in out


def test_every_hook_is_prefixed_documented_and_exercised():
    specs = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("flowsolve_")]
    assert set(specs) == {"flowsolve_model_adapters", "flowsolve_detect_adapter", "flowsolve_base_solvers",
                          "flowsolve_transforms", "flowsolve_losses", "flowsolve_models", "flowsolve_solver_families",
                          "flowsolve_overrides", "flowsolve_baselines"}
    for name in specs:
        doc = getattr(hookspecs, name).__doc__
        assert doc and ":return:" in doc, name
    source = inspect.getsource(sys.modules[__name__])
    for name in specs:
        assert f"module.{name}" in source, f"{name} is not exercised by a fake plugin here"


# -- name clashes, overrides and failing hooks ------------------------------------------------------
class Impostor(flowsolve.BaseSolver):
    """Calls itself midpoint, but is Ralston's method."""

    tableau = flowsolve.ButcherTableau("midpoint", a=[[0, 0], ["2/3", 0]], b=["1/4", "3/4"], c=[0, "2/3"], order=2)


def plugin_module(monkeypatch, module_name):
    module = types.ModuleType(module_name)
    monkeypatch.setitem(sys.modules, module_name, module)
    return module


def discover(*plugins):
    """A registry of the installed plugins plus ``(entry-point name, module name)`` fakes."""
    points = list(importlib.metadata.entry_points(group=registry.ENTRY_POINT_GROUP))
    return registry.Registry(points + [fake_entry_point(name, module) for name, module in plugins])


def record_of(found, name):
    return next(r for r in found.records if r.name == name)


@pytest.mark.parametrize("plugin_name", ["aaa", "zzz"])  # sorted before and after "builtin"
def test_a_plugin_cannot_silently_replace_a_builtin(monkeypatch, capsys, plugin_name):
    module = plugin_module(monkeypatch, "impostor_plugin")
    module.flowsolve_base_solvers = flowsolve.hookimpl(lambda: {"midpoint": Impostor})
    with pytest.warns(UserWarning, match=rf"plugin '{plugin_name}' \(impostor_plugin.*provides base solver 'midpoint'.*"
                                         r"built-in.*flowsolve\.plugins\.builtin.*ignored.*flowsolve_overrides"):
        found = discover((plugin_name, "impostor_plugin"))
    monkeypatch.setattr(registry, "_REGISTRY", found)
    assert type(registry.base_solver("midpoint")) is flowsolve.Midpoint  # what `flowsolve fit` uses by default
    record = record_of(found, plugin_name)
    assert record.error is None and any("'midpoint'" in note and "ignored" in note for note in record.notes)
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "base solver 'midpoint'" in out and "ignored" in out


def test_a_plugin_replaces_a_builtin_only_when_it_declares_so(monkeypatch, capsys):
    module = plugin_module(monkeypatch, "overriding_plugin")
    module.flowsolve_base_solvers = flowsolve.hookimpl(lambda: {"midpoint": Impostor})
    module.flowsolve_overrides = flowsolve.hookimpl(lambda: {"base solver": ["midpoint"]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = discover(("aaa", "overriding_plugin"))  # "aaa" sorts before "builtin": order must not matter
    assert not [w for w in caught if "midpoint" in str(w.message)]
    monkeypatch.setattr(registry, "_REGISTRY", found)
    assert type(registry.base_solver("midpoint")) is Impostor
    assert any("replaces" in note and "base solver 'midpoint'" in note for note in record_of(found, "aaa").notes)
    assert main(["plugins"]) == 0
    assert "replaces" in capsys.readouterr().out


@pytest.mark.parametrize("names", [("aaa", "zzz"), ("zzz", "aaa")])
def test_two_plugins_offering_one_name_are_refused_naming_both_whatever_their_order(monkeypatch, tmp_path, names):
    tableau = flowsolve.ButcherTableau("ralston", a=[[0, 0], ["2/3", 0]], b=["1/4", "3/4"], c=[0, "2/3"], order=2)
    for module_name in ("ralston_one", "ralston_two"):
        cls = type(f"Ralston_{module_name}", (flowsolve.BaseSolver,), {"tableau": tableau})
        module = plugin_module(monkeypatch, module_name)
        module.flowsolve_base_solvers = flowsolve.hookimpl(lambda cls=cls: {"ralston": cls})
        module.flowsolve_overrides = flowsolve.hookimpl(lambda: {"base solver": ["ralston"]})  # no built-in to replace
    both = r"plugin 'aaa' \(ralston_(one|two).*plugin 'zzz' \(ralston_(one|two)"
    with pytest.warns(UserWarning, match=rf"base solver 'ralston'.*{both}"):
        found = discover((names[0], "ralston_one"), (names[1], "ralston_two"))
    monkeypatch.setattr(registry, "_REGISTRY", found)
    assert "ralston" not in found.base_solvers()
    with pytest.raises(registry.NameClashError, match=rf"{both}.*FLOWSOLVE_DISABLE_PLUGINS"):
        registry.base_solver("ralston")
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.BaseSolver(tableau)).at(nfe=4)
    solver.save(tmp_path / "s.pt")
    with pytest.raises(flowsolve.SolverFileError, match=both):
        flowsolve.load(tmp_path / "s.pt")
    monkeypatch.setenv(registry.DISABLE_VARIABLE, "zzz")  # the fix the message names
    registry.reset()
    monkeypatch.setattr(registry, "_REGISTRY", discover((names[0], "ralston_one"), (names[1], "ralston_two")))
    assert type(registry.base_solver("ralston")).__name__ == ("Ralston_ralston_one" if names[0] == "aaa" else "Ralston_ralston_two")


def test_a_raising_hook_is_isolated_and_reported_like_a_failed_import(monkeypatch, capsys):
    class Huber(flowsolve.losses.LTE):
        name = "huber"

    def boom():
        raise RuntimeError("boom")

    module = plugin_module(monkeypatch, "raising_plugin")
    module.flowsolve_base_solvers = flowsolve.hookimpl(boom)
    module.flowsolve_models = flowsolve.hookimpl(lambda: ["not", "a", "mapping"])
    module.flowsolve_losses = flowsolve.hookimpl(lambda: {"huber": Huber})
    module.flowsolve_detect_adapter = flowsolve.hookimpl(lambda model: 1 / 0)
    with pytest.warns(UserWarning) as caught:
        found = discover(("raising", "raising_plugin"))
    messages = [str(w.message) for w in caught]
    assert any(re.search(r"plugin 'raising'.*flowsolve_base_solvers raised RuntimeError: boom", m) for m in messages)
    assert any(re.search(r"plugin 'raising'.*flowsolve_models returned a list, not a mapping", m) for m in messages)
    error = record_of(found, "raising").error
    assert "flowsolve_base_solvers raised RuntimeError: boom" in error and "flowsolve_models returned a list" in error
    assert "midpoint" in found.base_solvers() and "gmm-fm-ot" in found.models() and "huber" in found.losses()
    monkeypatch.setattr(registry, "_REGISTRY", found)
    with pytest.warns(UserWarning, match=r"plugin 'raising'.*flowsolve_detect_adapter raised ZeroDivisionError"):
        with pytest.raises(registry.UnknownNameError, match="no plugin recognises"):
            flowsolve.adapt(object())
    assert "ZeroDivisionError" in record_of(found, "raising").error
    assert main(["plugins"]) == 1  # like a plugin that fails to import: listed as FAILED, the rest listed
    out = capsys.readouterr().out
    assert "FAILED" in out and "RuntimeError: boom" in out and "midpoint" in out and "gmm-fm-ot" in out


def test_an_invalid_override_declaration_is_the_plugins_error(monkeypatch):
    module = plugin_module(monkeypatch, "confused_plugin")
    module.flowsolve_overrides = flowsolve.hookimpl(lambda: {"base solvers": ["midpoint"]})
    with pytest.warns(UserWarning, match=r"flowsolve_overrides.*'base solvers'.*'base solver'"):
        found = discover(("confused", "confused_plugin"))
    assert "flowsolve_overrides" in record_of(found, "confused").error


def test_two_plugins_recognising_one_model_are_refused_naming_both(monkeypatch):
    for module_name, kind in (("detect_one", "fm-ot"), ("detect_two", "eps-vp")):
        module = plugin_module(monkeypatch, module_name)
        module.flowsolve_detect_adapter = flowsolve.hookimpl(lambda model, kind=kind: (kind, {}) if getattr(model, "odd", False) else None)
    monkeypatch.setattr(registry, "_REGISTRY", discover(("zzz", "detect_one"), ("aaa", "detect_two")))

    class Model:
        odd = True

        def __call__(self, x, t):
            return x

    with pytest.raises(registry.NameClashError, match=r"plugin 'aaa'.*'eps-vp'.*plugin 'zzz'.*'fm-ot'.*kind="):
        flowsolve.adapt(Model())
    assert flowsolve.adapt(Model(), "fm-ot") is not None


def test_reports_compare_with_a_plugins_baseline(third_party):
    import torch

    from flowsolve.training.evaluation import compare, table

    flow = flowsolve.GaussianMixtureFlow.random(3, 2, seed=0)
    reference = flowsolve.ground_truth(flow, torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    rows = compare(flow, reference, [4, 6])
    methods = list(dict.fromkeys(row["method"] for row in rows))
    assert methods[:len(flowsolve.baselines.builtin_baselines())] == list(flowsolve.baselines.builtin_baselines())
    (row,) = [r for r in rows if r["method"] == "half-euler" and r["budget"] == 6]
    assert row["nfe"] == 3 and row["rmse"] > 0
    assert "| half-euler |" in table(rows, [4, 6])


def test_a_plugins_baseline_must_be_a_baseline(monkeypatch):
    import torch

    from flowsolve.training.evaluation import compare

    module = plugin_module(monkeypatch, "odd_baseline_plugin")
    module.flowsolve_baselines = flowsolve.hookimpl(lambda: {"odd": object})
    monkeypatch.setattr(registry, "_REGISTRY", discover(("odd", "odd_baseline_plugin")))
    flow = flowsolve.GaussianMixtureFlow.random(3, 2, seed=0)
    reference = flowsolve.ground_truth(flow, torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(flowsolve.FlowsolveError, match=r"baseline 'odd' is a object, not a flowsolve.baselines.Baseline"):
        compare(flow, reference, [4])


def test_a_plugins_baseline_cannot_silently_replace_a_builtin(monkeypatch):
    module = plugin_module(monkeypatch, "ddim_impostor_plugin")
    module.flowsolve_baselines = flowsolve.hookimpl(lambda: {"ddim": HalfEuler})
    with pytest.warns(UserWarning, match=r"provides baseline 'ddim'.*built-in.*ignored"):
        found = discover(("aaa", "ddim_impostor_plugin"))
    assert found.baselines()["ddim"] is flowsolve.baselines.DDIM
