"""Sizing a fit to a wall-time budget (flowsolve.training.budget and fit(max_minutes=))."""

import time

import pytest
import torch

import flowsolve
from flowsolve.models.gaussian_mixture import GaussianMixtureFlow
from flowsolve.training import budget


def test_path_counts_follow_the_ground_truth_budget_in_whole_shards():
    # 100 s at 0.5 s a path: 200 paths, 8 already stored -> 208 -> 13 shards of 16.
    val, train = budget.plan_paths(100.0, 0.5, available=8, shard_size=16)
    assert (val, train) == (208 // 5, 208 - 208 // 5)
    # A cheap model gets the full sizes; an impossible budget still gets the minimum.
    assert budget.plan_paths(1e6, 1e-3, available=0, shard_size=256) == (256, 1024)
    assert budget.plan_paths(0.0, 10.0, available=0, shard_size=16) == (16, 32)
    # Given counts are kept; the other one takes what is left.
    assert budget.plan_paths(100.0, 0.5, available=0, shard_size=16, val_trajectories=64) == (64, 192 - 64)  # 200 -> 12 shards
    with pytest.raises(ValueError, match="seconds_per_path"):
        budget.plan_paths(1.0, 0.0, available=0, shard_size=16)


def test_steps_shrink_the_batch_before_the_number_of_steps():
    # 610 s, validations 1 s each (11 of them): 599 s of training at 0.1 s per path-step.
    iterations, batch, every = budget.plan_steps(610.0, 0.1, 1.0)
    assert batch == 16 and iterations == int(5990 / 16) and every == iterations // 10  # 5990 / 300 -> 16
    # Plenty of time: the full sizes; very little: the smallest batch and fewer steps.
    assert budget.plan_steps(1e6, 1e-4, 0.0) == (1000, 32, 50)
    iterations, batch, every = budget.plan_steps(10.0, 0.1, 0.0)
    assert batch == budget.MIN_BATCH_SIZE and iterations == 50 and every == 5
    # Given values are kept.
    assert budget.plan_steps(10.0, 0.1, 0.0, iterations=7, batch_size=3, validate_every=2) == (7, 3, 2)


class SlowField(torch.nn.Module):
    """A mixture flow that costs a fixed time per call, like a network whose batch fits its device."""

    def __init__(self, flow, seconds):
        super().__init__()
        self.flow, self.seconds, self.sample_shape = flow, seconds, flow.sample_shape

    def forward(self, t, x):
        time.sleep(self.seconds)
        return self.flow(t, x)


def test_a_budgeted_fit_sizes_itself_from_the_models_cost_and_keeps_to_the_budget(tmp_path):
    slow = SlowField(GaussianMixtureFlow.random(dim=4, components=3, seed=1), seconds=0.004)
    measured = budget.seconds_per_evaluation(slow, slow.sample_shape)
    assert 0.004 / 16 <= measured < 0.05  # one call's sleep shared by 16 paths
    family = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint())
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # its first use imports for seconds: not the fit's time
    began = time.perf_counter()
    solver = family.fit(slow, nfe=4, max_minutes=0.1, progress=False, checkpoint=tmp_path / "fit.ckpt",
                        store=tmp_path / "store")
    seconds = time.perf_counter() - began
    settings, plan = solver.metadata["fit"], solver.metadata["plan"]
    assert settings["store"]["shard_size"] == budget.SMALL_SHARD_SIZE  # an expensive model: small shards
    assert (settings["val_trajectories"] + settings["train_trajectories"]) % budget.SMALL_SHARD_SIZE == 0
    assert settings["train_trajectories"] < budget.FULL_SIZES["train_trajectories"]
    assert settings["batch_size"] < budget.FULL_SIZES["batch_size"]
    assert plan["seconds_per_path_step"] > 0 and plan["stored_paths"] == 0
    # The validation paths' real cost replaced the guess of dopri5's evaluations (250 a path).
    assert plan["ground_truth_seconds_per_path"] != 250 * plan["seconds_per_evaluation"]
    assert settings["train_trajectories"] >= plan["guessed_train_trajectories"]  # this mixture takes ~130
    assert seconds < 3 * 6.0  # the 6 s budget, with room for a loaded machine
    history = solver.metadata["history"]
    assert min(r["val_rmse"] for r in history) < history[0]["val_rmse"]
    # A rerun resumes the first run's plan from its checkpoint, whatever its own budget.
    again = family.fit(slow, nfe=4, max_minutes=5, progress=False, checkpoint=tmp_path / "fit.ckpt",
                       store=tmp_path / "store")
    for name in ("val_trajectories", "train_trajectories", "iterations", "batch_size", "validate_every"):
        assert again.metadata["fit"][name] == settings[name]
    # An unbudgeted fit on the same directory reuses the store as it is (no timing, no mismatch).
    plain = family.fit(slow, nfe=4, iterations=1, train_trajectories=16, val_trajectories=16, batch_size=4,
                       progress=False, store=tmp_path / "store")
    assert plain.metadata["fit"]["store"] == settings["store"]


def test_without_a_budget_fit_uses_the_full_sizes():
    flow = GaussianMixtureFlow.random(dim=2, components=2, seed=0)
    family = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Euler())
    solver = family.fit(flow, nfe=2, iterations=1, val_trajectories=8, batch_size=4, progress=False)
    settings = solver.metadata["fit"]
    assert settings["train_trajectories"] == budget.FULL_SIZES["train_trajectories"]
    assert settings["validate_every"] == 50 and "plan" not in solver.metadata
