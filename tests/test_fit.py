"""fit (Algorithm 3): improvement, determinism, resume, errors, metadata, evaluate."""

import pytest
import torch

import flowsolve
from flowsolve.core.field import NonFiniteVelocityError
from flowsolve.models.gaussian_mixture import GaussianMixtureFlow
from flowsolve.training.fit import evaluate
from flowsolve.training.store import GroundTruthStore, StoreMismatchError

SMALL = dict(train_trajectories=64, val_trajectories=32, batch_size=16, progress=False)


@pytest.fixture(scope="module")
def flow():
    return GaussianMixtureFlow.random(dim=8, components=4, seed=3)


@pytest.fixture(scope="module")
def family():
    return flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint())


def test_fit_beats_the_base_solver_on_held_out_noise(flow, family):
    solver = family.fit(flow, nfe=6, iterations=150, validate_every=50, **SMALL)
    history = solver.metadata["history"]
    assert history[0]["iteration"] == 0 and history[-1]["iteration"] == 150
    base = history[0]["val_rmse"]  # identity = plain midpoint
    held_out = GroundTruthStore(None, flow, seed=123, shard_size=64).load(64, progress=False)
    fitted, plain = evaluate(solver, flow, held_out), evaluate((flowsolve.Midpoint(), 6), flow, held_out)
    assert abs(base - evaluate((flowsolve.Midpoint(), 6), flow, GroundTruthStore(None, flow, shard_size=256).load(32))["rmse"]) < 1e-6
    assert fitted["rmse"] < 0.8 * plain["rmse"]
    assert fitted["nfe"] == plain["nfe"] == 6


def test_same_seed_same_result_and_metadata(flow, family):
    first = family.fit(flow, nfe=4, iterations=20, validate_every=10, seed=5, **SMALL)
    second = family.fit(flow, nfe=4, iterations=20, validate_every=10, seed=5, **SMALL)
    for name in first.params:
        assert torch.equal(first.params[name], second.params[name])
    meta = first.metadata
    assert meta["model_fingerprint"] == GroundTruthStore(None, flow).key["model"]
    assert meta["fit"]["loss"] == {"name": "rmse-bound", "L_tau": 1.0, "steps_per_batch": None} and meta["fit"]["seed"] == 5
    assert meta["validation"]["rmse"] == min(r["val_rmse"] for r in meta["history"])


def test_interrupted_fit_resumes_to_the_same_parameters(tmp_path, flow, family):
    options = dict(nfe=4, iterations=30, validate_every=10, seed=1, **SMALL)
    uninterrupted = family.fit(flow, **options)

    class Interrupting:
        """The flow, but interrupting the fit after a number of calls."""

        sample_shape, accepts_batched_time = flow.sample_shape, True

        def __init__(self, calls):
            self.calls = calls

        def fingerprint(self):
            return flow.fingerprint()

        def __call__(self, t, x):
            self.calls -= 1
            if self.calls < 0:
                raise KeyboardInterrupt
            return flow(t, x)

    store = GroundTruthStore(tmp_path / "store", flow, shard_size=256)
    store.load(96, progress=False)  # ground truth ready: the interruption hits training
    with pytest.raises(KeyboardInterrupt):
        family.fit(Interrupting(calls=45), store=tmp_path / "store", checkpoint=tmp_path / "fit.ckpt", **options)
    assert (tmp_path / "fit.ckpt").exists()
    resumed = family.fit(Interrupting(calls=10**9), store=tmp_path / "store", checkpoint=tmp_path / "fit.ckpt", **options)
    for name in uninterrupted.params:
        assert torch.equal(resumed.params[name], uninterrupted.params[name]), name
    assert resumed.metadata["history"] == uninterrupted.metadata["history"]


def test_checkpoint_of_other_settings_is_refused(tmp_path, flow, family):
    family.fit(flow, nfe=4, iterations=10, validate_every=10, checkpoint=tmp_path / "c.ckpt", **SMALL)
    with pytest.raises(ValueError, match="written for other settings"):
        family.fit(flow, nfe=4, iterations=10, validate_every=10, lr=1e-3, checkpoint=tmp_path / "c.ckpt", **SMALL)


def test_non_finite_model_output_stops_the_fit_naming_step_and_time(flow, family):
    class Poisoned:
        sample_shape, accepts_batched_time, poisoned = flow.sample_shape, True, False

        def fingerprint(self):
            return "poisoned"

        def __call__(self, t, x):
            out = flow(t, x)
            if self.poisoned:
                bad = (t.reshape(-1) > 0.7) & (t.reshape(-1) < 0.8)
                out = torch.where(bad.reshape(-1, 1), torch.full_like(out, float("nan")), out)
            return out

    model = Poisoned()
    store = GroundTruthStore(None, model, shard_size=256)
    store.load(96, progress=False)
    model.poisoned = True
    with pytest.raises(NonFiniteVelocityError, match=r"fit stopped at iteration \d+: .* in step \[?\d+.*, stage \d at t = \[0\.7"):
        family.fit(model, nfe=4, iterations=10, store=store, **SMALL)


def test_fit_reuses_a_store_of_the_model_and_refuses_another(tmp_path, flow, family):
    family.fit(flow, nfe=4, iterations=5, validate_every=5, store=tmp_path, **SMALL)
    other = GaussianMixtureFlow.random(dim=8, components=4, seed=4)
    with pytest.raises(StoreMismatchError, match="model: stored"):
        family.fit(other, nfe=4, iterations=5, store=tmp_path, **SMALL)


def test_fitted_solver_round_trips_with_its_history(tmp_path, flow, family):
    solver = family.fit(flow, nfe=4, iterations=10, validate_every=5, **SMALL)
    solver.save(tmp_path / "s.pt")
    loaded = flowsolve.load(tmp_path / "s.pt")
    assert loaded.metadata == solver.metadata
    assert len(loaded.metadata["history"]) == 3


def test_bad_options_are_refused(flow, family):
    with pytest.raises(ValueError, match="iterations must be a positive int"):
        family.fit(flow, nfe=4, iterations=0)
    with pytest.raises(ValueError, match="not both"):
        family.fit(flow, nfe=4, loss=flowsolve.losses.LTE(), L_tau=2.0)
    with pytest.raises(ValueError, match="nfe=5 does not split"):
        family.fit(flow, nfe=5)


def test_fingerprints_tell_modules_apart_by_their_weights_and_buffers():
    from flowsolve.core.fingerprint import model_fingerprint

    class Field(torch.nn.Linear):
        def forward(self, t, x):
            return super().forward(x)

    def make(value):
        net = Field(2, 2)
        torch.nn.init.constant_(net.weight, value)
        torch.nn.init.zeros_(net.bias)
        net.register_buffer("code", torch.tensor(3))  # 0-dim, 8-byte buffer
        return net

    args = ((2,), torch.float32, torch.device("cpu"))
    assert model_fingerprint(make(0.5), *args) == model_fingerprint(make(0.5), *args)
    assert model_fingerprint(make(0.5), *args) != model_fingerprint(make(0.25), *args)


def test_a_float32_network_trains_in_float32(family):
    seen = set()

    class Net(torch.nn.Module):
        sample_shape = (4,)

        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(5, 4)

        def forward(self, x, t):
            seen.add(x.dtype)
            return self.linear(torch.cat([x, t.reshape(-1, 1)], 1))

    u = flowsolve.adapt(Net(), "fm-ot")
    for loss in (flowsolve.RMSEBound(), flowsolve.LTE()):
        solver = family.fit(u, nfe=4, iterations=3, loss=loss, **SMALL)
        assert solver.metadata["validation"]["rmse"] > 0
    assert seen == {torch.float32}


@pytest.mark.parametrize("transform", [flowsolve.ScaleTime(), flowsolve.TimeOnly(), flowsolve.ScaleOnly()], ids=repr)
def test_start_from_a_solver_of_another_nfe(transform):
    from .solver_parameters import randomize_parameters

    source = flowsolve.compose(transform, flowsolve.Midpoint()).at(nfe=10)
    randomize_parameters(source, seed=3, spread=0.3)
    target = flowsolve.compose(transform, flowsolve.Midpoint()).at(nfe=8)
    target.initialise_from(source)
    r_old, *old = source.nodes()
    r, *new = target.nodes()
    # node values follow the source's, linearly interpolated (the grids share r = 0, 0.5, 1)
    for a, b in zip(old, new):
        for position in (0.5, 1.0):
            assert float(b[r == position]) == pytest.approx(float(a[r_old == position]), abs=1e-12)
    same = flowsolve.compose(transform, flowsolve.Midpoint()).at(nfe=10)
    same.initialise_from(source)
    assert all(torch.equal(same.params[k], source.params[k]) for k in source.params)
    with pytest.raises(ValueError, match="transform and base must match"):
        flowsolve.compose(transform, flowsolve.Euler()).at(nfe=8).initialise_from(source)


def test_fit_starts_from_init_and_only_improves_on_it(flow, family):
    start = family.fit(flow, nfe=8, iterations=40, validate_every=20, **SMALL)
    refined = family.fit(flow, nfe=6, iterations=20, validate_every=10, init=start, **SMALL)
    history = refined.metadata["history"]
    assert refined.metadata["validation"]["rmse"] <= history[0]["val_rmse"]
    assert refined.metadata["fit"]["init"].startswith("nfe8-")


@pytest.mark.parametrize("name", ["log-snr", "edm"])
def test_named_schedules_start_the_fit_from_their_grid(name):
    from flowsolve.paths import schedulers
    from flowsolve.paths.time_grids import schedule_time

    vp_flow = flowsolve.GaussianMixtureFlow.random(dim=6, components=3, seed=2, scheduler=schedulers.VP())
    family = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint())
    solver = family.fit(vp_flow, nfe=6, iterations=10, validate_every=10, init=name, **SMALL)
    start = family.at(nfe=6)
    start.set_transform(schedule_time(name, vp_flow.scheduler), torch.ones_like)
    r, t, *_ = start.nodes()
    assert float(t[0]) == 0.0 and float(t[-1]) == 1.0 and bool((t.diff() > 0).all())
    assert not torch.allclose(t, r, atol=1e-3)  # a real schedule, not the uniform grid
    # the history starts at the schedule's own solver and fitting keeps the best
    start_rmse = solver.metadata["history"][0]["val_rmse"]
    held = GroundTruthStore(None, vp_flow).load(32, progress=False)
    assert start_rmse == pytest.approx(evaluate(start, vp_flow, held)["rmse"], rel=1e-5)
    assert solver.metadata["validation"]["rmse"] <= start_rmse


def test_cosine_schedule_of_an_fm_ot_model_is_the_exact_rescheduling_time():
    from flowsolve.paths import schedulers
    from flowsolve.paths.time_grids import schedule_time

    r = torch.linspace(0, 1, 11, dtype=torch.float64)
    expected = flowsolve.reschedule(lambda t, x: x, schedulers.FMOT(), schedulers.Cosine()).time(r)
    torch.testing.assert_close(schedule_time("cosine", schedulers.FMOT())(r), expected, atol=1e-9, rtol=0)


def test_named_schedule_needs_a_scheduler_and_a_time_learning_transform(family):
    with pytest.raises(ValueError, match="needs a Gaussian-path model"):
        family.fit(lambda t, x: -x, nfe=4, init="log-snr", sample_shape=(2,), **SMALL)
    with pytest.raises(ValueError, match=r"sets the time; ScaleOnly\(\) does not learn it"):
        flowsolve.compose(flowsolve.ScaleOnly(), flowsolve.Midpoint()).fit(
            flowsolve.GaussianMixtureFlow.random(2, 2), nfe=4, init="edm", **SMALL)
    with pytest.raises(ValueError, match="cosine schedule needs a path from pure noise"):
        family.fit(flowsolve.GaussianMixtureFlow.random(2, 2, scheduler=flowsolve.schedulers.VP()), nfe=4,
                   init="cosine", **SMALL)
    with pytest.raises(ValueError, match="unknown schedule 'karras'"):
        family.fit(flowsolve.GaussianMixtureFlow.random(2, 2), nfe=4, init="karras", **SMALL)


def test_exactly_zero_local_errors_do_not_stop_the_fit():
    # Midpoint at NFE 60 in 2-D: some float32 local errors are exactly 0 (their RMS once had
    # an infinite gradient, which turned the times into NaN at iteration 1).
    flow2d = GaussianMixtureFlow.random(dim=2, components=3, seed=0)
    family = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint())
    solver = family.fit(flow2d, nfe=60, iterations=2, validate_every=2, train_trajectories=32, val_trajectories=16,
                        batch_size=16, progress=False)
    assert all(torch.isfinite(p).all() for p in solver.params.values())


def test_diverging_solver_parameters_blame_the_learning_rate_not_the_model(flow, family):
    expected = r"iteration \d+: the Adam step \(lr=1000\) .*non-finite.*lower lr"
    with pytest.raises(FloatingPointError, match=expected) as info:
        family.fit(flow, nfe=4, iterations=5, lr=1e3, **SMALL)
    assert not isinstance(info.value, NonFiniteVelocityError)


def test_a_time_budget_stops_the_fit_and_a_rerun_continues(tmp_path, flow, family):
    options = dict(nfe=4, iterations=40, validate_every=10, seed=2, checkpoint=tmp_path / "fit.ckpt", **SMALL)
    stopped = family.fit(flow, max_minutes=1e-9, **options)  # out of time after the first step
    assert stopped.metadata["stopped_at"] == 1 and stopped.metadata["history"][-1]["iteration"] == 1
    finished = family.fit(flow, **options)
    assert finished.metadata["stopped_at"] == 40
    uninterrupted = family.fit(flow, **{**options, "checkpoint": None})
    for name in finished.params:
        torch.testing.assert_close(finished.params[name], uninterrupted.params[name], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="max_minutes"):
        family.fit(flow, max_minutes=0, **options)


def test_learning_rate_defaults_and_schedules_per_family(flow, family):
    from flowsolve.training.fit import LR_SCHEDULES

    assert family.default_lr == 2e-3 and family.default_lr_schedule == "constant"
    assert flowsolve.NonStationary.default_lr == 3e-2 and flowsolve.NonStationary.default_lr_schedule == "warmup-cosine"
    cosine = LR_SCHEDULES["cosine"]
    assert cosine(0.0) == 1.0 and abs(cosine(0.5) - 0.525) < 1e-12 and abs(cosine(1.0) - 0.05) < 1e-12
    solver = flowsolve.NonStationary().fit(flow, nfe=4, iterations=10, validate_every=5, **SMALL)
    # Tuned at batch 32, scaled by sqrt(batch / 32) (SMALL's batch is 16); a given lr is kept.
    assert solver.metadata["fit"]["lr"] == pytest.approx(3e-2 * 0.5 ** 0.5, rel=1e-12)
    assert solver.metadata["fit"]["lr_schedule"] == "warmup-cosine"
    given = flowsolve.NonStationary().fit(flow, nfe=4, iterations=2, lr=1e-2, **SMALL)
    assert given.metadata["fit"]["lr"] == 1e-2
    warmup = LR_SCHEDULES["warmup-cosine"]
    assert warmup(0.0) < 0.2 and warmup(0.1) == 1.0 and abs(warmup(1.0) - 0.05) < 1e-12
    assert all(warmup(i / 100) <= warmup((i + 1) / 100) for i in range(10))  # rising during the warm-up
    with pytest.raises(ValueError, match="lr_schedule"):
        family.fit(flow, nfe=4, iterations=1, lr_schedule="linear", **SMALL)


class MLPField(torch.nn.Module):
    """A small velocity network with linear layers (the ops torch.autocast lowers)."""

    sample_shape = (4,)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(5, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4))

    def forward(self, t, x):
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0], 1)
        return self.net(torch.cat([x, t], dim=1)) - x


def test_autocast_runs_the_network_in_low_precision_and_keeps_the_ground_truth_exact(family):
    field = MLPField()
    options = dict(nfe=4, iterations=3, validate_every=3, train_trajectories=32, val_trajectories=32, batch_size=8,
                   progress=False)
    full = family.fit(field, **options)
    low = family.fit(field, autocast=torch.bfloat16, **options)
    assert low.metadata["fit"]["store"] == full.metadata["fit"]["store"]  # one ground truth for both
    assert low.metadata["fit"]["autocast"] == "bfloat16" and "autocast" not in full.metadata["fit"]
    start_full, start_low = full.metadata["history"][0]["val_rmse"], low.metadata["history"][0]["val_rmse"]
    assert start_low != start_full  # bfloat16 products really ran ...
    assert abs(start_low - start_full) < 0.05 * start_full  # ... and stay close to float32's
    assert all(low.params[k].dtype == p.dtype for k, p in full.params.items())
    with pytest.raises(ValueError, match="autocast must be"):
        family.fit(field, autocast=torch.float64, **options)
