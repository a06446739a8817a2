import importlib.metadata
import json
import os
import re
import sys
import types
from fractions import Fraction

import pytest
import torch

import flowsolve
from flowsolve.core.solver_file import checksum as _checksum
from flowsolve.persistence import FORMAT_VERSION, SolverFileError
from flowsolve.plugins import registry

from .solver_parameters import randomize_parameters
from .test_solver import BASES, TRANSFORMS, nonlinear_field


@pytest.mark.parametrize("transform", TRANSFORMS, ids=repr)
@pytest.mark.parametrize("base", BASES, ids=repr)
def test_save_load_round_trips_bit_exactly(tmp_path, transform, base):
    solver = flowsolve.compose(transform, base).at(nfe=3 * base.stages)
    randomize_parameters(solver, seed=4)
    solver.metadata = {"model_fingerprint": "abc123", "validation": {"rmse": 0.01}}
    path = tmp_path / "solver.pt"
    solver.save(path)
    loaded = flowsolve.load(path)
    assert loaded.transform == transform and loaded.base == base and loaded.nfe == solver.nfe
    assert type(loaded.base) is type(base)
    assert loaded.metadata == solver.metadata
    for name, p in solver.params.items():
        assert torch.equal(loaded.params[name], p), name
    x0 = torch.randn(3, 2, dtype=torch.float64)
    assert torch.equal(loaded.sample(nonlinear_field, x0), solver.sample(nonlinear_field, x0))
    assert os.listdir(tmp_path) == ["solver.pt"]  # no temporary file left behind


def test_custom_tableau_round_trips(tmp_path):
    ralston = flowsolve.ButcherTableau("ralston", a=[[0, 0], ["2/3", 0]], b=["1/4", "3/4"], c=[0, "2/3"], order=2)
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.BaseSolver(ralston)).at(nfe=4)
    solver.save(tmp_path / "s.pt")
    assert flowsolve.load(tmp_path / "s.pt").base.tableau == ralston


def _saved(tmp_path):
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=6)
    randomize_parameters(solver, seed=1)
    path = tmp_path / "solver.pt"
    solver.save(path)
    return path


def test_truncated_file_is_refused(tmp_path):
    path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SolverFileError, match="corrupt or truncated"):
        flowsolve.load(path)


def test_flipped_parameter_byte_is_refused(tmp_path):
    path = _saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    payload["tensors"]["log_scale"][2] += 1e-9
    torch.save(payload, path)
    with pytest.raises(SolverFileError, match="checksum"):
        flowsolve.load(path)


def test_newer_format_is_refused(tmp_path):
    path = _saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, path)
    with pytest.raises(SolverFileError, match="upgrade flowsolve"):
        flowsolve.load(path)


def test_unknown_family_is_refused(tmp_path):
    path = _saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    header = json.loads(payload["header"])
    _part(header, "transform")["name"] = "warp-drive"
    payload["header"] = json.dumps(header, sort_keys=True)
    payload["checksum"] = _checksum(payload["header"], payload["tensors"])
    torch.save(payload, path)
    with pytest.raises(SolverFileError, match=r"'warp-drive'.*known transforms: \['scale-only', 'scale-time', 'time-only'\]"):
        flowsolve.load(path)


def test_foreign_file_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.ones(3)}, path)
    with pytest.raises(SolverFileError, match="not a flowsolve solver file"):
        flowsolve.load(path)
    with pytest.raises(FileNotFoundError):
        flowsolve.load(tmp_path / "missing.pt")


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    before = path.read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=6).save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["solver.pt"]


# -- bases from plugins, unknown options ------------------------------------------------------------
class Ralston(flowsolve.BaseSolver):
    tableau = flowsolve.ButcherTableau("ralston", a=[[0, 0], ["2/3", 0]], b=["1/4", "3/4"], c=[0, "2/3"], order=2)


class Theta(flowsolve.BaseSolver):
    """The two-stage second-order methods, by their second node ``theta``: an option the tableau name omits."""

    def __init__(self, theta="1/2"):
        theta = Fraction(theta)
        super().__init__(flowsolve.ButcherTableau("theta-rk2", a=[[0, 0], [theta, 0]], b=[1 - 1 / (2 * theta), 1 / (2 * theta)],
                                                  c=[0, theta], order=2))
        self.theta = theta

    def to_dict(self):
        return {**super().to_dict(), "theta": str(self.theta)}

    @classmethod
    def from_dict(cls, data):
        return cls(data["theta"])


def registry_with_fake_bases(monkeypatch):
    module = types.ModuleType("fake_base_plugin")
    module.flowsolve_base_solvers = flowsolve.hookimpl(lambda: {"ralston": Ralston, "theta-rk2": Theta})
    monkeypatch.setitem(sys.modules, "fake_base_plugin", module)
    points = list(importlib.metadata.entry_points(group=registry.ENTRY_POINT_GROUP))
    points.append(importlib.metadata.EntryPoint(name="fake-bases", value="fake_base_plugin", group=registry.ENTRY_POINT_GROUP))
    monkeypatch.setattr(registry, "_REGISTRY", registry.Registry(points))


@pytest.mark.parametrize("base", [Ralston(), Theta("1/3")], ids=repr)
def test_a_plugin_base_solver_loads_back_as_its_own_class_with_its_options(tmp_path, monkeypatch, base):
    registry_with_fake_bases(monkeypatch)
    solver = flowsolve.compose(flowsolve.ScaleTime(), base).at(nfe=4)
    randomize_parameters(solver, seed=2)
    solver.save(tmp_path / "s.pt")
    loaded = flowsolve.load(tmp_path / "s.pt")
    assert type(loaded.base) is type(base) and loaded.base.to_dict() == base.to_dict()
    x0 = torch.randn(3, 2, dtype=torch.float64)
    assert torch.equal(loaded.sample(nonlinear_field, x0), solver.sample(nonlinear_field, x0))


def test_a_plugin_base_without_its_plugin(tmp_path, monkeypatch):
    registry_with_fake_bases(monkeypatch)
    for base in (Ralston(), Theta("1/3")):
        flowsolve.compose(flowsolve.ScaleTime(), base).at(nfe=4).save(tmp_path / f"{base.name}.pt")
    monkeypatch.setattr(registry, "_REGISTRY", registry.Registry())
    # A bare tableau needs no plugin: it loads as a BaseSolver taking the same steps.
    assert type(flowsolve.load(tmp_path / "ralston.pt").base) is flowsolve.BaseSolver
    with pytest.raises(SolverFileError, match=r"theta-rk2\.pt.*base solver 'theta-rk2'.*'theta'.*not registered"):
        flowsolve.load(tmp_path / "theta-rk2.pt")


def test_a_torchdiffeq_base_loads_back_as_itself(tmp_path):
    plugin = pytest.importorskip("flowsolve_torchdiffeq")
    registry.reset()
    try:
        solver = flowsolve.compose(flowsolve.TimeOnly(), plugin.TorchdiffeqMethod("heun3")).at(nfe=6)
        solver.save(tmp_path / "s.pt")
        loaded = flowsolve.load(tmp_path / "s.pt")
        assert type(loaded.base) is plugin.TorchdiffeqMethod and loaded.base.method == "heun3"
    finally:
        registry.reset()


def _part(header, name):
    """A part of the transform x base family in a (format 3) header: {kind, name, options}."""
    return header["family"]["options"][name]


def _rewrite_header(path, change):
    payload = torch.load(path, weights_only=True)
    header = json.loads(payload["header"])
    change(header)
    payload["header"] = json.dumps(header, sort_keys=True)
    payload["checksum"] = _checksum(payload["header"], payload["tensors"])
    torch.save(payload, path)


@pytest.mark.parametrize("where", ["transform", "base", "top level", "non-stationary"])
def test_an_unknown_header_option_is_a_solver_file_error_naming_it(tmp_path, where):
    if where == "non-stationary":
        path = tmp_path / "ns.pt"
        flowsolve.NonStationary().at(nfe=4).save(path)
    else:
        path = _saved(tmp_path)
    section = {"transform": lambda h: _part(h, "transform"), "base": lambda h: _part(h, "base")}.get(where, lambda h: h)
    _rewrite_header(path, lambda header: section(header).update(flavour="strange"))
    with pytest.raises(SolverFileError, match=rf"{re.escape(str(path))}.*unknown option 'flavour'"):
        flowsolve.load(path)


def test_an_option_a_plugin_drops_on_loading_is_refused(tmp_path, monkeypatch):
    class Forgetful(Theta):
        @classmethod
        def from_dict(cls, data):
            return cls()  # ignores the stored theta

    registry_with_fake_bases(monkeypatch)
    module = sys.modules["fake_base_plugin"]
    module.flowsolve_base_solvers = flowsolve.hookimpl(lambda: {"theta-rk2": Forgetful})
    monkeypatch.setattr(registry, "_REGISTRY", registry.Registry(
        list(importlib.metadata.entry_points(group=registry.ENTRY_POINT_GROUP))
        + [importlib.metadata.EntryPoint(name="fake-bases", value="fake_base_plugin", group=registry.ENTRY_POINT_GROUP)]))
    flowsolve.compose(flowsolve.ScaleTime(), Theta("1/3")).at(nfe=4).save(tmp_path / "s.pt")
    with pytest.raises(SolverFileError, match=r"s\.pt: the header's base \(theta-rk2\) stores 'theta' = '1/3'.*has 'theta' = '1/2'"):
        flowsolve.load(tmp_path / "s.pt")


# -- format versions ----------------------------------------------------------------------------------
def _write_old(path, version, header, tensors):
    text = json.dumps({"library_version": "0.1.0", **header}, sort_keys=True)
    torch.save({"format": "flowsolve.solver", "format_version": version, "header": text,
                "tensors": tensors, "checksum": _checksum(text, tensors)}, path)


@pytest.mark.parametrize("base", [flowsolve.Midpoint(), flowsolve.AdamsBashforth(3)], ids=repr)
def test_a_version_1_or_2_file_still_loads(tmp_path, base):
    solver = flowsolve.compose(flowsolve.ScaleTime(), base).at(nfe=6)
    randomize_parameters(solver, seed=3)
    tensors = {name: p.detach().clone() for name, p in solver.params.items()}
    version = 2 if isinstance(base, flowsolve.AdamsBashforth) else 1  # what flowsolve 2 wrote for each
    _write_old(tmp_path / "old.pt", version, {"nfe": 6, "metadata": {"note": "old"}, "n_steps": solver.n_steps,
                                              "transform": {"name": "scale-time"}, "base": base.to_dict()}, tensors)
    loaded = flowsolve.load(tmp_path / "old.pt")
    assert type(loaded) is type(solver) and loaded.base == base and loaded.metadata == {"note": "old"}
    x0 = torch.randn(3, 2, dtype=torch.float64)
    assert torch.equal(loaded.sample(nonlinear_field, x0), solver.sample(nonlinear_field, x0))


def test_a_version_2_non_stationary_file_still_loads(tmp_path):
    solver = flowsolve.NonStationary().at(nfe=4)
    tensors = {name: p.detach().clone() for name, p in solver.params.items()}
    _write_old(tmp_path / "ns.pt", 2, {"nfe": 4, "metadata": {}, "family": "non-stationary"}, tensors)
    loaded = flowsolve.load(tmp_path / "ns.pt")
    x0 = torch.randn(3, 2, dtype=torch.float64)
    assert torch.equal(loaded.sample(nonlinear_field, x0), solver.sample(nonlinear_field, x0))


def test_an_old_file_with_a_wrong_step_count_is_refused(tmp_path):
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=6)
    tensors = {name: p.detach().clone() for name, p in solver.params.items()}
    _write_old(tmp_path / "old.pt", 1, {"nfe": 6, "metadata": {}, "n_steps": 4, "transform": {"name": "scale-time"},
                                        "base": flowsolve.Midpoint().to_dict()}, tensors)
    with pytest.raises(SolverFileError, match="n_steps = 4"):
        flowsolve.load(tmp_path / "old.pt")


def test_every_part_is_stored_as_kind_name_options(tmp_path):
    path = _saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    assert payload["format_version"] == FORMAT_VERSION == 3
    family = json.loads(payload["header"])["family"]
    assert (family["kind"], family["name"]) == ("solver family", "transform x base")
    assert _part(json.loads(payload["header"]), "transform") == {"kind": "transform", "name": "scale-time", "options": {}}
    base = _part(json.loads(payload["header"]), "base")
    assert (base["kind"], base["name"], set(base["options"])) == ("base solver", "midpoint", {"a", "b", "c", "order"})
