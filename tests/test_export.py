"""``flowsolve export``: a solver's time grid as sigmas, timesteps or JSON, and the diffusers hand-off."""

import json
import sys
import types

import pytest
import torch

import flowsolve
from flowsolve.cli import main
from flowsolve.paths.schedulers import VP

TIMES = [0.0, 5 / 32, 3 / 8, 21 / 32, 1.0]  # t = (r + r^2) / 2 on 4 Euler steps


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWSOLVE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def time_only(tmp_path):
    """A tiny time-only Euler solver with times t = (r + r^2) / 2, saved."""
    solver = flowsolve.compose(flowsolve.TimeOnly(), flowsolve.Euler()).at(nfe=4)
    solver.set_transform(lambda r: (r + r**2) / 2, lambda r: torch.ones_like(r))
    path = tmp_path / "time-only.pt"
    solver.save(path)
    return path


def export(capsys, *argv):
    status = main(["export", *map(str, argv)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_sigmas_are_the_fm_ot_noise_levels_with_a_final_zero(time_only, capsys):
    status, out, err = export(capsys, time_only, "--format", "sigmas", "--sigma-max", 80)
    assert status == 0 and err == ""
    expected = [80.0] + [(1 - t) / t for t in TIMES[1:-1]] + [0.0]  # t = 0 is pure noise: held at --sigma-max
    assert json.loads(out) == pytest.approx(expected, rel=1e-12)
    status, out, err = export(capsys, time_only, "--format", "sigmas")
    assert status == 1 and "sigma is infinite; pass --sigma-max" in err


def test_sigmas_of_a_models_scheduler(time_only, capsys):
    status, out, _ = export(capsys, time_only, "--format", "sigmas", "--model", "gmm-vp")
    assert status == 0
    grid = torch.tensor(TIMES[:-1], dtype=torch.float64)
    expected = (VP().sigma(grid) / VP().alpha(grid)).tolist() + [0.0]
    assert json.loads(out) == pytest.approx(expected, rel=1e-12)


def test_timesteps_and_json(time_only, capsys, tmp_path):
    status, out, _ = export(capsys, time_only, "--format", "timesteps", "--num-train-timesteps", 1000)
    assert status == 0 and json.loads(out) == pytest.approx([999 * (1 - t) for t in TIMES[:-1]], rel=1e-12)
    target = tmp_path / "grid.json"
    status, _, err = export(capsys, time_only, "--format", "json", "--sigma-max", 80, "-o", target)
    assert status == 0 and str(target) in err
    grid = json.loads(target.read_text())
    assert grid["times"] == pytest.approx(TIMES, rel=1e-12) and grid["nfe"] == 4 and grid["time_only"] is True
    assert grid["evaluation_times"] == pytest.approx(TIMES[:-1], rel=1e-12)  # Euler: one evaluation per step start
    assert grid["path"] == "fm-ot" and len(grid["sigmas"]) == 5 and len(grid["timesteps"]) == 4


def test_a_solver_with_more_than_times_warns(tmp_path, capsys):
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Heun()).at(nfe=4)
    solver.save(tmp_path / "scale-time.pt")
    status, out, err = export(capsys, tmp_path / "scale-time.pt", "--format", "timesteps")
    assert status == 0 and "warning" in err and "--format diffusers" in err
    assert json.loads(out) == pytest.approx([999.0, 499.5], rel=1e-12)  # 2 Heun steps: the step starts

    flowsolve.NonStationary(flowsolve.Euler()).at(3).save(tmp_path / "ns.pt")
    status, out, err = export(capsys, tmp_path / "ns.pt", "--format", "json")
    grid = json.loads(out)
    assert status == 0 and grid["times"] == pytest.approx([0, 1 / 3, 2 / 3, 1], rel=1e-12) and "warning" in err


def test_a_guidance_range_solver_needs_its_scale(tmp_path, capsys):
    solver = flowsolve.GuidanceRange(anchors=(0.0, 4.0)).at(4)
    solver.save(tmp_path / "range.pt")
    status, _, err = export(capsys, tmp_path / "range.pt", "--format", "timesteps")
    assert status == 1 and "pass --guidance W" in err
    status, out, _ = export(capsys, tmp_path / "range.pt", "--format", "timesteps", "--guidance", 2.0)
    assert status == 0 and len(json.loads(out)) == 4


def test_diffusers_format_hands_the_solver_to_the_plugin(time_only, tmp_path, capsys, monkeypatch):
    calls = []
    plugin = types.ModuleType("flowsolve_diffusers")
    plugin.export_scheduler = lambda solver, path, **options: calls.append((solver.nfe, path, options))
    monkeypatch.setitem(sys.modules, "flowsolve_diffusers", plugin)
    status, out, _ = export(capsys, time_only, "--format", "diffusers", "-o", tmp_path / "scheduler")
    assert status == 0 and calls == [(4, tmp_path / "scheduler", {})] and "diffusers scheduler" in out
    status, _, err = export(capsys, time_only, "--format", "diffusers")
    assert status == 1 and "-o FOLDER" in err
    monkeypatch.setitem(sys.modules, "flowsolve_diffusers", None)  # not installed
    status, _, err = export(capsys, time_only, "--format", "diffusers", "-o", tmp_path / "scheduler")
    assert status == 1 and "needs the flowsolve-diffusers plugin" in err


def test_help_says_what_a_plain_list_cannot_carry(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = capsys.readouterr().out
    assert "Only a time-only solver's grid carries its full effect" in text and "--format diffusers" in text
