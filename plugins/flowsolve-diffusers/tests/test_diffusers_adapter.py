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


# -- transformers, flow matching, conditioning ----------------------------------------------------------
def make_sd3(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return diffusers.SD3Transformer2DModel(
            sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2,
            joint_attention_dim=12, caption_projection_dim=16, pooled_projection_dim=6, out_channels=4,
            pos_embed_max_size=8,
        ).eval()


def make_dit(seed=0, classes=10):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return diffusers.DiTTransformer2DModel(
            num_attention_heads=2, attention_head_dim=4, in_channels=4, out_channels=8, num_layers=1,
            sample_size=8, patch_size=2, norm_num_groups=2, num_embeds_ada_norm=classes,
        ).eval()


def embeddings(batch, seed=0, tokens=5):
    generator = torch.Generator().manual_seed(seed)
    return {"encoder_hidden_states": torch.randn(batch, tokens, 12, generator=generator),
            "pooled_projections": torch.randn(batch, 6, generator=generator)}


def test_flow_matching_kind_is_registered_and_detected():
    from flowsolve_diffusers import FlowMatchVelocity

    assert "diffusers-flow" in registry.registry().adapters()
    transformer = make_sd3()
    u = flowsolve.adapt(transformer, "diffusers-flow", model_kwargs=embeddings(1))
    assert isinstance(u, FlowMatchVelocity) and u.sample_shape == (4, 8, 8) and u.timestep_scale == 1000.0

    class Pipe:  # what detection looks at: a transformer and a flow-matching scheduler
        def __init__(self, transformer, scheduler):
            self.transformer, self.scheduler = transformer, scheduler

    detected = flowsolve.adapt(Pipe(transformer, diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=500)),
                               model_kwargs=embeddings(1))
    assert isinstance(detected, FlowMatchVelocity) and detected.num_train_timesteps == 500
    x = noise(batch=2, seed=3).repeat(1, 2, 1, 1)
    with torch.no_grad():
        # t = 1 - sigma; the network at timestep sigma * N; the velocity is minus its output.
        shared = {k: v.expand(2, *v.shape[1:]) for k, v in embeddings(1).items()}
        out = transformer(hidden_states=x, timestep=torch.full((2,), 150.0), return_dict=False, **shared)[0]
        torch.testing.assert_close(detected(torch.tensor(0.7), x), -out, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="'diffusers-flow' adapter"):
        flowsolve.adapt(transformer, "diffusers", scheduler=diffusers.FlowMatchEulerDiscreteScheduler())
    with pytest.raises(TypeError, match="not a flow-matching scheduler"):
        flowsolve.adapt(transformer, "diffusers-flow", scheduler=make_scheduler())


def test_guidance_needs_unconditional_inputs_and_enters_the_fingerprint():
    transformer = make_sd3()
    with pytest.raises(ValueError, match="negative_model_kwargs"):
        flowsolve.adapt(transformer, "diffusers-flow", model_kwargs=embeddings(1), guidance_scale=3.0)
    with pytest.raises(ValueError, match="neither model_kwargs nor the conditions"):
        flowsolve.adapt(transformer, "diffusers-flow", model_kwargs={}, negative_model_kwargs=embeddings(1),
                        guidance_scale=3.0)

    def fingerprint(**options):
        u = flowsolve.adapt(transformer, "diffusers-flow", model_kwargs=embeddings(1, tokens=20), **options)
        assert len(u.extra_repr()) < 1000  # embeddings are hashed, not listed
        return model_fingerprint(u, (4, 8, 8), torch.float32, "cpu")

    plain = fingerprint()
    negative, other = embeddings(1, seed=1, tokens=20), embeddings(1, seed=2, tokens=20)
    guided = fingerprint(negative_model_kwargs=negative, guidance_scale=3.0)
    assert len({plain, guided, fingerprint(negative_model_kwargs=negative, guidance_scale=5.0),
                fingerprint(negative_model_kwargs=other, guidance_scale=3.0)}) == 4


def test_guided_field_is_one_batched_call_in_diffusers_order():
    transformer = make_sd3()
    positive, negative = embeddings(2), embeddings(1, seed=1)
    u = flowsolve.adapt(transformer, "diffusers-flow", model_kwargs=positive, negative_model_kwargs=negative,
                        guidance_scale=3.0)
    calls = []
    handle = transformer.register_forward_pre_hook(lambda module, args: calls.append(1))
    x, t = noise(batch=2, seed=4).repeat(1, 2, 1, 1), torch.tensor(0.25)
    try:
        with torch.no_grad():
            velocity = u(t, x)
            assert len(calls) == 1
            timestep = torch.full((4,), 750.0)
            both = transformer(hidden_states=torch.cat([x, x]), timestep=timestep, return_dict=False,
                               **{k: torch.cat([negative[k].expand_as(v), v]) for k, v in positive.items()})[0]
    finally:
        handle.remove()
    expected = -(both[:2] + 3.0 * (both[2:] - both[:2]))  # SD3: negative first, uncond + g (cond - uncond)
    torch.testing.assert_close(velocity, expected, rtol=0, atol=0)


def test_class_conditional_fields_bind_labels_and_rebind_rows():
    from flowsolve.models.conditioning import select_rows

    dit = make_dit()
    u = flowsolve.adapt(dit, "diffusers", scheduler=make_scheduler(), guidance_scale=2.0)
    assert u.condition_distribution == flowsolve.Labels(10, key="class_labels") and u.class_count == 10
    labels = torch.tensor([1, 2, 3])
    bound = u.bind({"class_labels": labels})
    x, t = noise(batch=3, seed=2).repeat(1, 2, 1, 1), torch.tensor(0.5)
    with torch.no_grad():
        rows = select_rows(bound, torch.tensor([2, 0]))
        torch.testing.assert_close(rows(t, x[[2, 0]]), bound(t, x)[[2, 0]], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(bound(t, x), u(t, x))  # unbound: the null class
    with pytest.raises(ValueError, match="per-sample guidance"):
        u.bind({"guidance": torch.ones(3)})
    with pytest.raises(ValueError, match="rows"):
        u.bind({"class_labels": labels, "other": torch.ones(2)})


def test_class_conditional_unet_takes_labels_and_has_no_default_null_class():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = diffusers.UNet2DModel(
            sample_size=SIZE, in_channels=CHANNELS, out_channels=CHANNELS, layers_per_block=1, norm_num_groups=4,
            block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=3,
        ).eval()
    u = flowsolve.adapt(unet, "diffusers", scheduler=make_scheduler())
    assert u.condition_distribution == flowsolve.Labels(3, key="class_labels") and "class_labels" not in u.model_kwargs
    with pytest.raises(ValueError, match="negative_model_kwargs"):
        flowsolve.adapt(unet, "diffusers", scheduler=make_scheduler(), guidance_scale=2.0)
    labels = torch.tensor([0, 2, 1, 2])
    x = noise()
    with torch.no_grad():
        k = torch.full((4,), 499.5)
        expected = unet(x, k, class_labels=labels).sample
        data, _ = u.bind({"labels": labels}).predictions(torch.tensor(0.5), x)
        eps = (x - u.path.alpha(torch.tensor(0.5)) * data) / u.path.sigma(torch.tensor(0.5))
    torch.testing.assert_close(eps, expected, rtol=1e-4, atol=1e-4)
