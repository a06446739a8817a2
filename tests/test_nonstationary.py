"""Non-stationary solvers: exact start from any linear method, training through the rollout, files."""

import pytest
import torch

import flowsolve
from flowsolve.baselines import DDIM, DPMSolverPP2M
from flowsolve.paths import schedulers
from flowsolve.persistence import SolverFileError
from flowsolve.solvers.nonstationary import NonStationarySolver, trace
from tests.solver_parameters import randomize_parameters


def nonlinear_field(t, x):
    return torch.tanh(x.flip(-1)) * (1 + t) - 0.5 * x


def counting(u):
    calls = []

    def field(t, x):
        calls.append(float(t))
        return u(t, x)

    return field, calls


def noise(batch=5, dim=3, seed=0):
    return torch.randn(batch, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("base, nfe", [(flowsolve.Euler(), 5), (flowsolve.Midpoint(), 6), (flowsolve.RK4(), 8),
                                       (flowsolve.Heun(), 4)], ids=lambda v: getattr(v, "name", v))
def test_start_is_the_base_solver_exactly_and_costs_its_nfe(base, nfe):
    solver = flowsolve.NonStationary(base).at(nfe)
    field, calls = counting(nonlinear_field)
    x0 = noise()
    torch.testing.assert_close(solver.sample(field, x0), base.sample(nonlinear_field, x0, nfe), rtol=1e-12, atol=1e-12)
    assert len(calls) == nfe


def test_parameter_count_is_m_times_m_plus_5_over_2():
    for m in (1, 4, 10):
        solver = NonStationarySolver(m)
        trainable = sum(int(p.numel()) for p in solver.parameters() if p.requires_grad)
        assert solver.num_params == m * (m + 5) // 2
        assert trainable - int((solver.mask == 0).sum()) == solver.num_params  # masked entries do not count


def test_traces_a_scale_time_solver_at_non_identity_parameters():
    parametric = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=8)
    randomize_parameters(parametric, seed=3)
    solver = NonStationarySolver(8)
    solver.initialise(parametric)
    x0 = noise()
    torch.testing.assert_close(solver.sample(nonlinear_field, x0), parametric.sample(nonlinear_field, x0),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("baseline", [DDIM(), DPMSolverPP2M(), DPMSolverPP2M("edm")], ids=lambda b: b.name)
def test_traces_scheduler_based_baselines_on_the_model(baseline):
    flow = flowsolve.GaussianMixtureFlow.random(3, 2, seed=1, scheduler=schedulers.VP())
    solver = NonStationarySolver(6)
    solver.initialise(baseline, flow)
    x0 = noise()
    expected, _ = baseline.sample(flow, x0, 6)
    torch.testing.assert_close(solver.sample(flow, x0), expected, rtol=1e-10, atol=1e-10)


def test_trace_refuses_a_method_that_spends_another_nfe():
    with pytest.raises(ValueError, match="nfe=5 does not split into whole steps of midpoint"):
        flowsolve.NonStationary(flowsolve.Midpoint()).at(5)
    with pytest.raises(ValueError, match="NFE 8 into NFE 6"):
        trace(flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=8), 6)
    with pytest.raises(ValueError, match="needs the model"):
        trace(DDIM(), 4)


def test_rollout_gradient_matches_finite_differences():
    solver = flowsolve.NonStationary().at(4)
    x0, target = noise(seed=1), noise(seed=2)

    def loss():
        return (solver.sample(nonlinear_field, x0, differentiable=True) - target).square().mean()

    loss().backward()
    weights = solver.params["weights"]
    for index in [(0, 0), (1, 2), (3, 4), (3, 1)]:
        with torch.no_grad():
            weights[index] += 1e-6
            up = loss()
            weights[index] -= 2e-6
            down = loss()
            weights[index] += 1e-6
        assert float(weights.grad[index]) == pytest.approx(float(up - down) / 2e-6, rel=1e-5, abs=1e-9)
    assert float(weights.grad[0, 3]) == 0.0  # masked: z_1 cannot use v_2


def test_fit_improves_on_its_start_and_defaults_to_the_rollout_loss(tmp_path):
    flow = flowsolve.GaussianMixtureFlow.random(4, 3, seed=0, scheduler=schedulers.VP())
    options = dict(iterations=60, train_trajectories=128, val_trajectories=64, validate_every=20, progress=False,
                   store=tmp_path / "store")
    solver = flowsolve.NonStationary().fit(flow, nfe=4, init="dpm-solver++(2m)", lr=1e-2, **options)
    history = solver.metadata["history"]
    assert solver.metadata["fit"]["loss"]["name"] == "rmse"
    assert solver.metadata["validation"]["rmse"] < 0.8 * history[0]["val_rmse"]
    with pytest.raises(ValueError, match="has no per-step map; use flowsolve.RMSE"):
        flowsolve.NonStationary().fit(flow, nfe=4, loss=flowsolve.RMSEBound(), **options)


def test_a_list_of_starts_fits_from_the_best_on_validation(tmp_path):
    flow = flowsolve.GaussianMixtureFlow.random(4, 3, seed=0, scheduler=schedulers.VP())
    options = dict(iterations=2, train_trajectories=32, val_trajectories=64, validate_every=1, progress=False,
                   store=tmp_path / "store")
    starts = ["dpm-solver++(2m)", "euler", "midpoint"]
    solver = flowsolve.NonStationary().fit(flow, nfe=4, init=starts, **options)
    scores = solver.metadata["starts"]
    assert list(scores) == starts and solver.metadata["fit"]["init"] == starts
    # Independently: each start's validation RMSE, and the fit's first validation is the best one's.
    validation = flowsolve.GroundTruthStore(tmp_path / "store", flow).load(64, progress=False)
    for name, score in scores.items():
        start = flowsolve.NonStationary().at(4, init=name, model=flow)
        assert score == pytest.approx(flowsolve.evaluate(start, flow, validation)["rmse"], rel=1e-6)
    assert solver.metadata["history"][0]["val_rmse"] == pytest.approx(min(scores.values()), rel=1e-12)
    with pytest.raises(ValueError, match="empty list"):
        flowsolve.NonStationary().fit(flow, nfe=4, init=[], **options)
    with pytest.raises(ValueError, match="no-such-start"):  # a bad name fails before any ground truth
        flowsolve.NonStationary().fit(flow, nfe=4, init=["euler", "no-such-start"], **options)


def test_save_load_round_trip_and_unknown_family(tmp_path, monkeypatch):
    solver = flowsolve.NonStationary().at(6)
    randomize_parameters(solver, seed=0)
    solver.metadata = {"note": "x"}
    path = tmp_path / "ns.pt"
    solver.save(path)
    loaded = flowsolve.load(path)
    assert isinstance(loaded, NonStationarySolver) and loaded.metadata == {"note": "x"}
    for name, value in solver.params.items():
        assert torch.equal(loaded.params[name], value)
    x0 = noise()
    assert torch.equal(loaded.sample(nonlinear_field, x0), solver.sample(nonlinear_field, x0))
    monkeypatch.setenv("FLOWSOLVE_DISABLE_PLUGINS", "builtin")
    flowsolve.registry.reset()
    try:
        with pytest.raises(SolverFileError, match="solver family 'non-stationary'"):
            flowsolve.load(path)
    finally:
        monkeypatch.delenv("FLOWSOLVE_DISABLE_PLUGINS")
        flowsolve.registry.reset()


def test_an_init_decides_the_nfe_and_a_method_not_starting_at_the_noise_is_refused(tmp_path):
    flow = flowsolve.GaussianMixtureFlow.random(4, 3, seed=0, scheduler=schedulers.VP())
    solver = flowsolve.NonStationary().fit(flow, nfe=5, init="dpm-solver++(2m)", iterations=2, train_trajectories=32,
                                           val_trajectories=16, progress=False)
    assert solver.nfe == 5  # Midpoint could not spend 5 evaluations; the init can
    with pytest.raises(ValueError, match="EDM's Heun starts from sigma_max"):
        trace("edm-heun", 5, flow)


def test_times_are_stored_relative_to_their_gaps():
    """One Adam step moves each time by about lr times its gap to the nearest other time (or end),
    so the finely spaced last times of a log-SNR grid keep their order at a usable lr."""
    from flowsolve.models.gaussian_mixture import GaussianMixtureFlow
    from flowsolve.paths.schedulers import VP

    u = GaussianMixtureFlow.random(dim=4, components=2, seed=0, scheduler=VP())
    solver = flowsolve.NonStationary().at(8, init="dpm-solver++(2m)", model=u)
    before = solver.coefficients()[0].detach().clone()
    gaps = torch.cat([before, torch.tensor([0.0, 1.0], dtype=torch.float64)]).unique().diff().min()
    assert float(before[-1]) > 0.99 and float(gaps) < 1e-2  # a grid with a wide range of spacings
    optimizer = torch.optim.Adam([solver.params["times"]], lr=1e-2)
    x0 = torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    solver.sample(u, x0, differentiable=True).square().mean().backward()
    optimizer.step()
    moved = (solver.coefficients()[0].detach() - before).abs()
    scale = solver.params["time_scale"].detach()
    assert bool((moved <= 1.001e-2 * scale + 1e-15).all()) and bool((moved > 0).any())
    assert bool((solver.coefficients()[0].detach().diff() > 0).all())  # still ordered


def test_files_without_time_scale_still_load(tmp_path):
    solver = flowsolve.NonStationary().at(4)
    tensors = {name: p.detach() for name, p in solver.params.items() if name != "time_scale"}
    tensors["times"] = solver.coefficients()[0].detach()  # written before times were scaled
    upgraded = type(solver).upgrade_parameters(tensors)
    fresh = flowsolve.NonStationary().new_solver(4)
    with torch.no_grad():
        for name, value in upgraded.items():
            fresh.params[name].copy_(value)
    torch.testing.assert_close(fresh.coefficients()[0], solver.coefficients()[0])
