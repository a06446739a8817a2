"""Dense ground truth: Hermite read-back, the eq. 27 gradient rule, the [0, 1] guard, the store."""

import os

import pytest
import torch
import torchdiffeq

from flowsolve.core.fingerprint import PROBE_EVALUATIONS
from flowsolve.models.gaussian_mixture import GaussianMixtureFlow
from flowsolve.paths.schedulers import VP
from flowsolve.training.ground_truth import ground_truth, hermite
from flowsolve.training.store import GroundTruthStore, StoreMismatchError


@pytest.fixture(scope="module")
def flow():
    return GaussianMixtureFlow.random(dim=16, components=5, seed=2)


def test_hermite_is_exact_for_cubics():
    t0, t1 = torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    cubic = lambda t: 2 * t**3 - t**2 + 0.5 * t - 1  # noqa: E731
    slope = lambda t: 6 * t**2 - 2 * t + 0.5  # noqa: E731
    t = torch.linspace(0.2, 0.7, 11, dtype=torch.float64)
    value, derivative = hermite(t, t0, t1, cubic(t0), cubic(t1), slope(t0), slope(t1))
    torch.testing.assert_close(value, cubic(t))
    torch.testing.assert_close(derivative, slope(t))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_read_back_matches_dense_dopri5(flow, dtype):
    x0 = torch.randn(64, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gt = ground_truth(flow, x0.to(dtype))
    times = torch.rand(64, generator=torch.Generator().manual_seed(1), dtype=torch.float64).sort().values
    grid = torch.cat([times.new_zeros(1), times, times.new_ones(1)])
    reference = torchdiffeq.odeint(flow, x0, grid, rtol=1e-10, atol=1e-10)
    at_times = reference[1:-1][torch.arange(64), torch.arange(64)]
    read = gt.at(times).double()
    assert (read - at_times).square().mean(1).sqrt().max() < 5e-5
    assert (gt.x1.double() - reference[-1]).square().mean(1).sqrt().max() < 5e-5
    assert float(gt.times[0, 0]) == 0.0 and float(gt.times[0, -1]) == 1.0


def test_eq27_gradient_is_the_path_velocity(flow):
    x0 = torch.randn(8, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    gt = ground_truth(flow, x0, rtol=1e-9, atol=1e-9)
    t = torch.linspace(0.1, 0.9, 8, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(8, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    (gt.at(t) * weights).sum().backward()
    # Finite differences of the read-back and the model's own velocity agree with the gradient.
    eps = 1e-5
    with torch.no_grad():
        fd = ((gt.at(t + eps) - gt.at(t - eps)) / (2 * eps) * weights).sum(1)
        exact = (flow(t, gt.at(t)) * weights).sum(1)
    torch.testing.assert_close(t.grad, fd, rtol=1e-5, atol=1e-6)
    # Hermite's derivative is third-order accurate between knots: close to, not equal to, u.
    torch.testing.assert_close(t.grad, exact, rtol=2e-3, atol=2e-3)
    # The value is unchanged by the rule.
    torch.testing.assert_close(gt.at(t.detach()), gt.at(t).detach())


def test_field_never_sees_time_outside_unit_interval():
    vp_flow = GaussianMixtureFlow.random(dim=4, components=2, seed=0, scheduler=VP())
    seen = []

    def guarded(t, x):
        seen.append(float(t))
        if not 0.0 <= float(t) <= 1.0:
            raise AssertionError(f"evaluated at t = {float(t)}")
        return vp_flow(t, x)

    gt = ground_truth(guarded, torch.randn(16, 4), max_step=None)
    assert torch.isfinite(gt.states).all() and max(seen) <= 1.0 and min(seen) >= 0.0


def test_store_resumes_after_interruption_and_reuses_shards(tmp_path, flow):
    calls = {"n": 0, "fail_after": 150}

    class Flaky:
        sample_shape = (16,)
        accepts_batched_time = True

        def fingerprint(self):
            return "flaky-gmm"

        def __call__(self, t, x):
            calls["n"] += 1
            if calls["n"] > calls["fail_after"]:
                raise KeyboardInterrupt
            return flow(t, x)

    store = GroundTruthStore(tmp_path, Flaky(), shard_size=16)
    with pytest.raises(KeyboardInterrupt):
        store.load(64, progress=False)
    done = store.available()
    assert 0 < done < 64  # some shards were written before the interruption
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    calls.update(n=0, fail_after=10**9)
    resumed = GroundTruthStore(tmp_path, Flaky(), shard_size=16).load(64, progress=False)
    calls_for_rest = calls["n"]
    calls["n"] = 0
    again = GroundTruthStore(tmp_path, Flaky(), shard_size=16).load(64, progress=False)
    # A complete store costs no evaluations beyond the fingerprint's output probe.
    assert calls["n"] == PROBE_EVALUATIONS and calls_for_rest > PROBE_EVALUATIONS
    fresh = GroundTruthStore(None, Flaky(), shard_size=16).load(64, progress=False)
    for name in ("x0", "times", "states", "velocities"):
        assert torch.equal(getattr(resumed, name), getattr(fresh, name)), name
        assert torch.equal(getattr(again, name), getattr(fresh, name)), name


@pytest.mark.parametrize(
    "change, field",
    [({"seed": 1}, "seed"), ({"rtol": 1e-6}, "rtol"), ({"dtype": torch.float64}, "dtype"), ({"model": "other"}, "model")],
)
def test_store_of_another_setting_is_refused(tmp_path, flow, change, field):
    GroundTruthStore(tmp_path, flow, shard_size=8).load(8, progress=False)
    options = {"shard_size": 8, **change}
    model = GaussianMixtureFlow.random(dim=16, components=5, seed=9) if options.pop("model", None) else flow
    with pytest.raises(StoreMismatchError, match=f"another setting.*{field}: stored"):
        GroundTruthStore(tmp_path, model, **options)


def test_store_needs_a_sample_shape():
    with pytest.raises(ValueError, match="sample_shape"):
        GroundTruthStore(None, lambda t, x: x)


def test_a_shard_that_was_not_written_is_a_clear_error(tmp_path, flow, monkeypatch):
    import flowsolve.training.store as store_module

    real_write = store_module.atomic_write

    def lose_shard_one(path, content):
        if not str(path).endswith("shard-00001.pt"):
            real_write(path, content)

    monkeypatch.setattr(store_module, "atomic_write", lose_shard_one)
    with pytest.raises(StoreMismatchError, match=r"shards \[1\] are missing .*rerun to regenerate only those"):
        GroundTruthStore(tmp_path, flow, shard_size=8).load(24, progress=False)


def test_a_network_that_stops_early_ends_with_the_final_denoising():
    """eps-VP stops at s = 1e-3: the ground truth is the ODE to there plus the data estimate
    there, not an integral through the adapter's continuation."""
    import torchdiffeq

    import flowsolve

    from flowsolve.models.gaussian_mixture import GaussianMixtureFlow
    from flowsolve.paths.schedulers import VP
    from flowsolve.training.ground_truth import ground_truth, solve_reference
    from flowsolve.training.store import GroundTruthStore

    flow = GaussianMixtureFlow.random(dim=3, components=2, seed=1, scheduler=VP())
    u = flowsolve.adapt(lambda x, s: flow.posterior_means(1 - s, x)[1], "eps-vp")
    x0 = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    end = 1 - 1e-3
    grid = torch.tensor([0.0, end], dtype=torch.float64)  # fixed steps: adaptive ones underflow at VP's t = 0
    at_end = torchdiffeq.odeint(flow, x0, grid, method="rk4", options={"step_size": end / 1000})[-1]
    expected = flow.posterior_means(torch.tensor(end, dtype=torch.float64), at_end)[0]
    gt = ground_truth(u, x0, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(gt.x1, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(solve_reference(u, x0, rtol=1e-7, atol=1e-7), expected, rtol=1e-5, atol=1e-5)
    assert float(gt.times[0, -2]) == end and float(gt.times[0, -1]) == 1.0
    assert GroundTruthStore(None, u, sample_shape=(3,)).key["ends_at"] == end
    assert "ends_at" not in GroundTruthStore(None, flow).key
