"""Bad input gets a clear error that says what was wrong and how to fix it."""

import pytest
import torch

import flowsolve


def test_nfe_that_does_not_split_into_whole_steps():
    family = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint())
    with pytest.raises(ValueError, match=r"nfe=7 does not split into whole steps of midpoint .* 2, 4, 6"):
        family.at(nfe=7)
    with pytest.raises(ValueError, match="nfe=0"):
        family.at(nfe=0)
    with pytest.raises(TypeError, match="nfe must be an int"):
        family.at(nfe=8.0)


def test_compose_rejects_non_objects():
    with pytest.raises(TypeError, match=r"e\.g\. Midpoint\(\)"):
        flowsolve.compose(flowsolve.ScaleTime(), "midpoint")
    with pytest.raises(TypeError, match=r"e\.g\. ScaleTime\(\)"):
        flowsolve.compose(flowsolve.ScaleTime, flowsolve.Midpoint())


def test_field_with_wrong_shape():
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=4)
    with pytest.raises(ValueError, match=r"returned shape \(3,\) for x of shape \(3, 2\) in step 0, stage 0"):
        solver.sample(lambda t, x: x.sum(1), torch.randn(3, 2))


def test_field_with_wrong_dtype():
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=4)
    with pytest.raises(TypeError, match="dtype torch.float32 for x of dtype torch.float64"):
        solver.sample(lambda t, x: x.float(), torch.randn(3, 2, dtype=torch.float64))


def test_non_finite_field_names_step_and_time():
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Euler()).at(nfe=4)

    def blows_up(t, x):
        return x / (t - 0.5)  # inf at t = 0.5, the start of step 2

    with pytest.raises(flowsolve.NonFiniteVelocityError, match=r"in step 2, stage 0 at t = \[0\.5\]"):
        solver.sample(blows_up, torch.randn(3, 2))


def test_state_without_batch_dimension_or_integer_dtype():
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Euler()).at(nfe=4)
    with pytest.raises(ValueError, match="batch dimension"):
        solver.sample(lambda t, x: x, torch.tensor(1.0))
    with pytest.raises(TypeError, match="floating-point"):
        solver.sample(lambda t, x: x, torch.ones(2, 2, dtype=torch.long))


def test_step_index_out_of_range():
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Euler()).at(nfe=4)
    with pytest.raises(ValueError, match=r"step index must lie in \[0, 4\)"):
        solver.step(4, torch.randn(2, 2), lambda t, x: x)


class Untouchable:
    """A model that must not be called: bad arguments are refused before any ground truth."""

    sample_shape = (2,)

    def fingerprint(self):
        return "untouchable"

    def __call__(self, t, x):
        raise AssertionError("the model was called although the arguments are invalid")


@pytest.mark.parametrize("options, message", [
    (dict(lr=float("inf")), r"lr must be a positive finite number .*got inf"),
    (dict(lr=float("nan")), r"lr must be a positive finite number .*got nan"),
    (dict(lr=0.0), r"lr must be a positive finite number .*got 0\.0"),
    (dict(rtol=0, atol=0), r"rtol and atol are both 0"),
    (dict(rtol=-1e-5), r"rtol must be a finite number >= 0 .*got -1e-05"),
    (dict(atol=float("nan")), r"atol must be a finite number >= 0 .*got nan"),
    (dict(max_step=0.0), r"max_step must be None .* or a positive number .*got 0\.0"),
    (dict(L_tau=float("inf")), r"L_tau must be a finite non-negative number"),
    (dict(seed=1.5), r"seed must be an int, got 1\.5"),
], ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_fit_refuses_bad_numbers_before_any_work(options, message):
    family = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint())
    with pytest.raises(ValueError, match=message):
        family.fit(Untouchable(), nfe=4, progress=False, **options)


@pytest.mark.parametrize("options, message", [
    (dict(rtol=0, atol=0), "rtol and atol are both 0"),
    (dict(atol=float("inf")), "atol must be a finite number >= 0"),
    (dict(max_step=float("nan")), "max_step must be None"),
])
def test_ground_truth_refuses_bad_tolerances(options, message):
    from flowsolve.training.ground_truth import ground_truth, solve_reference

    with pytest.raises(ValueError, match=message):
        ground_truth(Untouchable(), torch.zeros(2, 2), **options)
    if "max_step" not in options:
        with pytest.raises(ValueError, match=message):
            solve_reference(Untouchable(), torch.zeros(2, 2), **options)
