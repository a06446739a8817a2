"""One solver for a range of guidance scales: interpolation, per-sample scales, fitting, files."""

import pytest
import torch

import flowsolve
from flowsolve.models.conditioning import GuidanceScales, Labels
from flowsolve.solvers.guidance_range import GuidanceRange, GuidanceRangeSolver, guidance_of
from tests.test_conditioning import guided_field

X0 = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
LABELS = torch.tensor([0, 1, 2, 0, 1, 2])


def test_single_anchor_is_the_non_stationary_solver():
    u, _, _ = guided_field(weight=2.0)
    field = u.bind({"labels": LABELS})
    solver = GuidanceRange(anchors=(2.0,)).at(6, init="dpm-solver++(2m)", model=u)
    plain = flowsolve.NonStationary().at(6, init="dpm-solver++(2m)", model=u)
    torch.testing.assert_close(solver.sample(field, X0), plain.sample(field, X0), rtol=1e-12, atol=1e-12)


def test_each_sample_gets_the_interpolated_solver_of_its_own_scale():
    u, _, _ = guided_field()
    solver = GuidanceRangeSolver(4, anchors=(0.0, 4.0))
    solver.set_anchor(0, flowsolve.NonStationary(flowsolve.Midpoint()).at(4))
    solver.set_anchor(1, flowsolve.NonStationary(flowsolve.Euler()).at(4))
    scales = torch.tensor([0.0, 1.0, 2.0, 4.0, 6.0, -1.0], dtype=torch.float64)
    out = solver.sample(u.bind({"labels": LABELS, "guidance": scales}), X0)
    midpoint = flowsolve.NonStationary(flowsolve.Midpoint()).at(4).coefficients()
    euler = flowsolve.NonStationary(flowsolve.Euler()).at(4).coefficients()
    for i, w in enumerate(scales.tolist()):
        fraction = min(max(w, 0.0), 4.0) / 4.0  # held constant beyond the end anchors
        single = flowsolve.NonStationary().at(4)
        single.set_coefficients(*((1 - fraction) * a + fraction * b for a, b in zip(midpoint, euler)))
        field = u.bind({"labels": LABELS[i : i + 1], "guidance": scales[i : i + 1]})
        torch.testing.assert_close(out[i : i + 1], single.sample(field, X0[i : i + 1]), rtol=1e-10, atol=1e-10)


def test_scale_comes_from_the_field():
    u, _, _ = guided_field(weight=3.0)
    like = torch.zeros(2, dtype=torch.float64)
    assert guidance_of(u, 2, like).tolist() == [3.0, 3.0]
    bound = u.bind({"labels": LABELS[:2], "guidance": torch.tensor([0.5, 1.5])})
    assert guidance_of(bound, 2, like).tolist() == [0.5, 1.5]
    assert guidance_of(lambda t, x: x, 2, like).tolist() == [0.0, 0.0]  # an unguided field is w = 0


def test_one_fit_over_a_range_of_scales_tracks_per_scale_fits(tmp_path):
    u, _, _ = guided_field(weight=0.0)
    options = dict(iterations=60, batch_size=16, lr=1e-2, train_trajectories=96, val_trajectories=32,
                   validate_every=20, progress=False, dtype=torch.float64, init="dpm-solver++(2m)")
    ranged = GuidanceRange(anchors=(0.0, 4.0)).fit(u, 4, conditions=Labels(3) & GuidanceScales(0.0, 4.0), **options)
    ranged.save(tmp_path / "range.pt")
    loaded = flowsolve.load(tmp_path / "range.pt")
    assert isinstance(loaded, GuidanceRangeSolver) and loaded.anchors == (0.0, 4.0)
    for w in (0.0, 2.0, 4.0):
        guided, _, _ = guided_field(weight=w)
        held_out = flowsolve.GroundTruthStore(None, guided, dtype=torch.float64, seed=7, shard_size=64).load(64, progress=False)
        start = flowsolve.evaluate(flowsolve.NonStationary().at(4, init="dpm-solver++(2m)", model=u), guided, held_out)
        learned = flowsolve.evaluate(loaded, guided, held_out)
        assert learned["rmse"] < 0.8 * start["rmse"], (w, learned, start)


def test_bad_anchors_are_refused():
    with pytest.raises(ValueError, match="increasing"):
        GuidanceRange(anchors=(2.0, 1.0))
    with pytest.raises(ValueError, match="same NFE"):
        GuidanceRange(anchors=(0.0, 1.0)).at(4, init=GuidanceRangeSolver(6, (0.0, 1.0)))
