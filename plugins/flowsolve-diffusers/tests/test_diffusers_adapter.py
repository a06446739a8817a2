"""The 'diffusers' adapter against diffusers itself, on a tiny random UNet2DModel (no download)."""

import importlib.metadata

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from flowsolve_diffusers import DiffusersVelocity, DiscreteVP  # noqa: E402

import flowsolve  # noqa: E402
from flowsolve import registry  # noqa: E402
from flowsolve.core.fingerprint import model_fingerprint  # noqa: E402
from flowsolve.training.ground_truth import solve_reference  # noqa: E402

torch.set_num_threads(1)

CHANNELS, SIZE, TRAIN_STEPS = 2, 8, 1000
PREDICTION_TYPES = ["epsilon", "v_prediction", "sample"]


def make_unet(seed=0, smooth_in_time=True):
    """A small randomly initialised UNet2DModel.

    ``smooth_in_time`` zeroes the weights of the highest frequency (1 radian per training step)
    of the sinusoidal timestep embedding. A random network would otherwise oscillate in time with
    a period of about 6 training steps, which trained models do not, and the adaptive reference
    solve would need 2-4x more evaluations. (The agreement with DDIM holds either way; the
    measurements are in the README.)
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        unet = diffusers.UNet2DModel(
            sample_size=SIZE, in_channels=CHANNELS, out_channels=CHANNELS, layers_per_block=1, norm_num_groups=4,
            block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
        ).eval()
    if smooth_in_time:
        half = unet.config.block_out_channels[0] // 2
        with torch.no_grad():
            unet.time_embedding.linear_1.weight[:, [0, half]] = 0
    return unet


def make_scheduler(prediction_type="epsilon", **config):
    # clip_sample=False: clipping is a sampler heuristic, not part of the probability-flow ODE.
    # trailing spacing + set_alpha_to_one=False: DDIM starts at step 999 (t = 0) and ends at step 0 (t = 1).
    settings = dict(num_train_timesteps=TRAIN_STEPS, beta_schedule="linear", prediction_type=prediction_type,
                    clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing")
    settings.update(config)
    return diffusers.DDIMScheduler(**settings)


@pytest.fixture(scope="module")
def unet():
    return make_unet()


def noise(batch=4, seed=1, dtype=torch.float32):
    return torch.randn(batch, CHANNELS, SIZE, SIZE, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@torch.no_grad()
def ddim_sample(unet, scheduler, x, steps):
    """diffusers' deterministic DDIM sampler (eta = 0), the loop of DDIMPipeline without its image post-processing."""
    scheduler.set_timesteps(steps)
    for timestep in scheduler.timesteps:
        x = scheduler.step(unet(x, timestep).sample, timestep, x, eta=0.0).prev_sample
    return x


def relative_rmse(a, b):
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt())


# Measured on this fixture (relative RMSE x DDIM steps): epsilon 0.69, v_prediction 1.73, constant
# from 50 to 1000 steps: DDIM converges at first order to the adapted ODE's solution.
FIRST_ORDER_BOUND = {"epsilon": 1.0, "v_prediction": 2.5}


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ode_solution_agrees_with_ddim_and_the_gap_closes_at_first_order(unet, prediction_type):
    scheduler = make_scheduler(prediction_type)
    u = flowsolve.adapt(unet, "diffusers", scheduler=scheduler)
    x0 = noise()
    with torch.no_grad():
        reference = solve_reference(u, x0, rtol=1e-6, atol=1e-6)
    errors = {steps: relative_rmse(ddim_sample(unet, scheduler, x0, steps), reference) for steps in (100, 500)}
    for steps, error in errors.items():
        assert error * steps < FIRST_ORDER_BOUND[prediction_type], errors
    assert errors[500] < FIRST_ORDER_BOUND[prediction_type] / 500
    assert errors[100] / errors[500] > 4.0, errors  # 5x the steps, ~5x smaller gap (measured 4.95)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_predictions_match_a_diffusers_ddim_step_at_integer_timesteps(unet, prediction_type):
    scheduler = make_scheduler(prediction_type)
    scheduler.set_timesteps(TRAIN_STEPS)  # one training step per DDIM step: k -> k - 1
    u = flowsolve.adapt(unet, "diffusers", scheduler=scheduler)
    x = noise()
    for k in (999, 500, 37, 1):
        t = u.scheduler.time(torch.tensor(float(k)))
        data, eps = u.predictions(t, x)
        with torch.no_grad():
            out = scheduler.step(unet(x, k).sample, k, x, eta=0.0)
        torch.testing.assert_close(data, out.pred_original_sample, rtol=1e-4, atol=1e-4)
        previous = u.scheduler.time(torch.tensor(float(k - 1)))
        ddim = u.scheduler.alpha(previous) * data + u.scheduler.sigma(previous) * eps
        torch.testing.assert_close(ddim, out.prev_sample, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_denoise_is_ddims_last_step_to_clean_data(unet, prediction_type):
    scheduler = make_scheduler(prediction_type, set_alpha_to_one=True)
    scheduler.set_timesteps(TRAIN_STEPS)
    u = flowsolve.adapt(unet, "diffusers", scheduler=scheduler)
    x = noise()
    with torch.no_grad():
        last = scheduler.step(unet(x, 0).sample, 0, x, eta=0.0).prev_sample  # step 0 -> alpha_cumprod = 1
    torch.testing.assert_close(u.denoise(x), last, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_at_both_ends_and_clamped_outside(unet, prediction_type, dtype):
    u = flowsolve.adapt(unet, "diffusers", scheduler=make_scheduler(prediction_type))
    x = noise(dtype=dtype)
    with torch.no_grad():
        for t, clamped in ((0.0, 0.0), (1.0, 1.0), (-0.01, 0.0), (1.013, 1.0)):
            out = u(torch.tensor(t, dtype=dtype), x)
            assert out.dtype == dtype and out.shape == x.shape
            assert torch.isfinite(out).all(), t
            torch.testing.assert_close(out, u(torch.tensor(clamped, dtype=dtype), x))


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_per_sample_times_equal_scalar_calls(unet, prediction_type):
    u = flowsolve.adapt(unet, "diffusers", scheduler=make_scheduler(prediction_type))
    assert u.accepts_batched_time
    x = noise(batch=5)
    t = torch.tensor([0.0, 0.123, 0.5, 0.9991, 1.0])
    with torch.no_grad():
        batched = u(t, x)
        one_by_one = torch.cat([u(t[i], x[i : i + 1]) for i in range(len(t))])
        same_time = u(torch.tensor(0.5), x)
    # Batch-size dependent float32 round-off in the network, amplified near t = 1 (up to ~550x for "sample").
    torch.testing.assert_close(batched, one_by_one, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(u(torch.full((5,), 0.5), x), same_time)


def test_found_through_the_installed_entry_point(unet):
    registry.reset()
    points = {p.name: p for p in importlib.metadata.entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert points["diffusers"].value == "flowsolve_diffusers"
    record = next(r for r in registry.registry().records if r.name == "diffusers")
    assert record.error is None and "flowsolve-diffusers" in record.source
    assert "diffusers" in registry.registry().adapters()
    u = flowsolve.adapt(unet, "diffusers", scheduler=make_scheduler())
    assert isinstance(u, DiffusersVelocity) and isinstance(u, torch.nn.Module)
    assert u.sample_shape == (CHANNELS, SIZE, SIZE)
    assert any(m is unet for m in u.modules())  # the UNet is a submodule
    # A bespoke-family solver runs on it (per-sample times inside).
    solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=6)
    assert torch.isfinite(solver.sample(u, noise())).all()


def test_pipelines_are_detected(unet):
    scheduler = make_scheduler("v_prediction")
    x = noise()
    explicit = flowsolve.adapt(unet, "diffusers", scheduler=scheduler)
    for pipeline in (diffusers.DDIMPipeline(unet=unet, scheduler=scheduler),
                     diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler.from_config(scheduler.config))):
        u = flowsolve.adapt(pipeline)
        assert isinstance(u, DiffusersVelocity) and u.model is unet and u.prediction_type == "v_prediction"
        with torch.no_grad():
            torch.testing.assert_close(u(torch.tensor(0.3), x), explicit(torch.tensor(0.3), x))
    assert flowsolve.adapt(pipeline, "diffusers", prediction_type="epsilon").prediction_type == "epsilon"
    with pytest.raises(ValueError, match="no plugin recognises"):
        flowsolve.adapt(unet)  # a bare UNet has no schedule


def test_fingerprint_sees_weights_schedule_and_prediction_type(unet):
    def fingerprint(u):
        return model_fingerprint(u, (CHANNELS, SIZE, SIZE), torch.float32, "cpu")

    base = fingerprint(flowsolve.adapt(unet, "diffusers", scheduler=make_scheduler()))
    assert base == fingerprint(flowsolve.adapt(unet, "diffusers", scheduler=make_scheduler()))
    assert base != fingerprint(flowsolve.adapt(make_unet(seed=1), "diffusers", scheduler=make_scheduler()))
    assert base != fingerprint(flowsolve.adapt(unet, "diffusers", scheduler=make_scheduler("v_prediction")))
    assert base != fingerprint(flowsolve.adapt(unet, "diffusers", scheduler=make_scheduler(beta_schedule="scaled_linear")))
    assert base != fingerprint(flowsolve.adapt(unet, "diffusers", scheduler=make_scheduler(), interpolation="linear"))


def test_gradients_flow_to_the_time(unet):
    u = flowsolve.adapt(unet, "diffusers", scheduler=make_scheduler())
    t = torch.tensor([0.25, 0.75], requires_grad=True)
    u(t, noise(batch=2)).sum().backward()
    assert torch.isfinite(t.grad).all() and (t.grad != 0).all()


def test_plain_callables_float64_states_and_bad_inputs(unet):
    scheduler = make_scheduler()
    u = flowsolve.adapt(lambda x, k: torch.zeros_like(x), "diffusers", scheduler=scheduler)
    assert not hasattr(u, "sample_shape")
    x = noise(dtype=torch.float64)
    # eps = 0: u = (alpha'/alpha) x
    t = torch.tensor(0.4, dtype=torch.float64)
    torch.testing.assert_close(u(t, x), u.scheduler.d_alpha(t) / u.scheduler.alpha(t) * x)
    # A float32 network is fed float32 and answers in the state's dtype.
    assert flowsolve.adapt(unet, "diffusers", scheduler=scheduler)(t, x).dtype == torch.float64
    with pytest.raises(TypeError, match="needs scheduler="):
        flowsolve.adapt(unet, "diffusers")
    with pytest.raises(TypeError, match="alphas_cumprod"):
        flowsolve.adapt(unet, "diffusers", scheduler=object())
    with pytest.raises(ValueError, match="prediction_type"):
        flowsolve.adapt(unet, "diffusers", scheduler=scheduler, prediction_type="flow")
    with pytest.raises(ValueError, match=r"t must be 0-dim or \(4,\)"):
        flowsolve.adapt(unet, "diffusers", scheduler=scheduler)(torch.zeros(3), noise())


@pytest.mark.parametrize("interpolation", ["cubic", "linear"])
@pytest.mark.parametrize("config", [dict(beta_schedule="linear"),
                                    dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
                                    dict(beta_schedule="squaredcos_cap_v2"),
                                    dict(beta_schedule="linear", rescale_betas_zero_snr=True)],
                         ids=["linear", "scaled_linear", "cosine", "zero-snr"])
def test_discrete_schedule_interpolates_the_table(config, interpolation):
    table = make_scheduler(**config).alphas_cumprod
    path = DiscreteVP(table, interpolation=interpolation)
    steps = torch.arange(TRAIN_STEPS, dtype=torch.float64)
    torch.testing.assert_close(path.alphas_cumprod(path.time(steps)), table.double().clamp(min=1e-12), rtol=1e-12, atol=0)
    t = torch.linspace(0, 1, 20001, dtype=torch.float64)
    assert (path.log_snr(t).diff() > 0).all()  # monotone: more signal as t grows
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for f in (path.alpha, path.sigma, path.d_alpha, path.d_sigma, path.d_log_snr):
        assert torch.isfinite(f(ends)).all()
    torch.testing.assert_close(path.alpha(t) ** 2 + path.sigma(t) ** 2, torch.ones_like(t))
    # Closed-form derivatives agree with central differences (away from the knots).
    mid = torch.linspace(0.01, 0.99, 97, dtype=torch.float64) + 0.00037
    h = 1e-7
    for f, df in ((path.alpha, path.d_alpha), (path.sigma, path.d_sigma), (path.log_snr, path.d_log_snr)):
        torch.testing.assert_close((f(mid + h) - f(mid - h)) / (2 * h), df(mid), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(path.sigma_d_sigma(mid), path.sigma(mid) * path.d_sigma(mid))
