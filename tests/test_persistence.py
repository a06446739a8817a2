import json
import os

import pytest
import torch

import flowsolve
from flowsolve.persistence import FORMAT_VERSION, SolverFileError

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
    from flowsolve.persistence import _checksum

    path = _saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    header = json.loads(payload["header"])
    header["transform"]["name"] = "warp-drive"
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
