"""BespokeScheduler inside unmodified diffusers pipelines, against flowsolve's own sampling of
``flowsolve.adapt(pipe)`` from the same noise (tiny random models, nothing downloaded)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffusers import DiffusionPipeline  # noqa: E402

import flowsolve  # noqa: E402
from flowsolve_diffusers import BespokeScheduler, Choices, FlowMatchVelocity, export_scheduler  # noqa: E402
from flowsolve_diffusers.adapter import DiffusersVelocity  # noqa: E402
from test_diffusers_adapter import make_sd3  # noqa: E402  (one tiny SD3 transformer for both files)

torch.set_num_threads(1)

NFE = 6
TOLERANCE = 1e-4  # max abs difference of [0, 1] images
SOLVERS = ["non-stationary", "scale-time-midpoint", "scale-time-ab2"]


# -- tiny models -------------------------------------------------------------------------------------
def make_unet(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return diffusers.UNet2DModel(
            sample_size=8, in_channels=2, out_channels=2, layers_per_block=1, norm_num_groups=4,
            block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
        ).eval()


def make_dit(seed=0):
    """A DiT with learned sigma (out_channels = 2 in_channels) and DiTPipeline's 1000 classes
    (the pipeline's null class is the hard-coded label 1000)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return diffusers.DiTTransformer2DModel(
            num_attention_heads=2, attention_head_dim=4, in_channels=4, out_channels=8, num_layers=1,
            sample_size=8, patch_size=2, norm_num_groups=2, num_embeds_ada_norm=1000,
        ).eval()


def make_vae(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return diffusers.AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,),
            down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",), layers_per_block=1,
            norm_num_groups=4, sample_size=8,
        ).eval()


class FlowPipeline(DiffusionPipeline):
    """StableDiffusion3Pipeline's denoising loop as it stands in diffusers (its text encoders and VAE
    need downloads, so the prompt embeddings are given and the latents returned): set_timesteps with
    ``sigmas=`` / ``mu=`` when given (as Flux passes them), classifier-free guidance batched with the
    negative prompt first, ``scheduler.step(noise_pred, t, latents, return_dict=False)[0]``."""

    def __init__(self, transformer, scheduler):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler)

    @torch.no_grad()
    def __call__(self, prompt_embeds, pooled_prompt_embeds, negative_prompt_embeds=None,
                 negative_pooled_prompt_embeds=None, guidance_scale=7.0, num_inference_steps=28, latents=None,
                 sigmas=None, mu=None):
        guided = guidance_scale > 1
        if guided:
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds])
            pooled_prompt_embeds = torch.cat([negative_pooled_prompt_embeds, pooled_prompt_embeds])
        extra = {} if mu is None else {"mu": mu}
        if sigmas is not None:
            self.scheduler.set_timesteps(sigmas=sigmas, device=latents.device, **extra)
        else:
            self.scheduler.set_timesteps(num_inference_steps, device=latents.device, **extra)
        for t in self.scheduler.timesteps:
            latent_model_input = torch.cat([latents] * 2) if guided else latents
            timestep = t.expand(latent_model_input.shape[0])
            noise_pred = self.transformer(hidden_states=latent_model_input, timestep=timestep,
                                          encoder_hidden_states=prompt_embeds, pooled_projections=pooled_prompt_embeds,
                                          return_dict=False)[0]
            if guided:
                noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
                noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
            latents = self.scheduler.step(noise_pred, t, latents, return_dict=False)[0]
        return latents


class CallCounter:
    """Counts forward calls of a module (a batched guidance call counts once)."""

    def __init__(self, module):
        self.calls = 0
        self.handle = module.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.calls += 1

    def take(self) -> int:
        calls, self.calls = self.calls, 0
        return calls


def noise(shape, seed):
    """What the pipelines draw from a seeded CPU generator (diffusers' randn_tensor)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def randomized(solver, seed=0, size=0.03):
    """The solver with every trainable parameter moved a little (so no solver is a plain base method)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in solver.params.values():
            if parameter.requires_grad:
                step = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
                parameter.add_(size * step * (parameter.abs() + 0.1))
    return solver


def make_solver(name, u, nfe=NFE):
    if name == "non-stationary":
        solver = flowsolve.NonStationary().at(nfe, init="dpm-solver++(2m)", model=u)
    elif name == "scale-time-midpoint":
        solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe, init="log-snr", model=u)
    elif name == "scale-time-ab2":
        solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.AdamsBashforth(2)).at(nfe, init="log-snr", model=u)
    else:
        raise ValueError(name)
    solver = randomized(solver)
    times = solver.evaluation_times()
    assert times.shape == (nfe,) and bool(torch.isfinite(times).all())
    return solver


def images(x):
    return (x / 2 + 0.5).clamp(0, 1)


def max_difference(a, b) -> float:
    return float((torch.as_tensor(a).double() - torch.as_tensor(b).double()).abs().max())


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def unet():
    return make_unet()


@pytest.fixture(scope="module")
def dit_pipe():
    pipe = diffusers.DiTPipeline(transformer=make_dit(), vae=make_vae(), scheduler=diffusers.DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def flow_pipe():
    pipe = FlowPipeline(make_sd3(), diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prompts(batch, seed=5):
    generator = torch.Generator().manual_seed(seed)
    return {"encoder_hidden_states": torch.randn(batch, 5, 12, generator=generator),
            "pooled_projections": torch.randn(batch, 6, generator=generator)}


def negative_prompt(seed=9):
    return prompts(1, seed)


# -- DDPM / DDIM pipelines ---------------------------------------------------------------------------
PIPELINES = {
    "ddpm": lambda unet, prediction: diffusers.DDPMPipeline(
        unet=unet, scheduler=diffusers.DDPMScheduler(prediction_type=prediction)),
    "ddim": lambda unet, prediction: diffusers.DDIMPipeline(
        unet=unet, scheduler=diffusers.DDIMScheduler(prediction_type=prediction, beta_schedule="scaled_linear",
                                                     beta_start=0.00085, beta_end=0.012)),
}


@pytest.mark.parametrize("pipeline, prediction, solver_name",
                         [(pipeline, prediction, name) for pipeline, prediction in (("ddpm", "epsilon"), ("ddim", "v_prediction"))
                          for name in SOLVERS] + [("ddim", "sample", "non-stationary")])
def test_unet_pipelines_sample_what_flowsolve_samples(unet, pipeline, prediction, solver_name):
    pipe = PIPELINES[pipeline](unet, prediction)
    pipe.set_progress_bar_config(disable=True)
    u = flowsolve.adapt(pipe)
    assert isinstance(u, DiffusersVelocity) and u.prediction_type == prediction
    solver = make_solver(solver_name, u)
    counter = CallCounter(unet)
    try:
        x0 = noise((3, 2, 8, 8), seed=11)
        with torch.no_grad():
            expected = images(solver.sample(u, x0))
        assert counter.take() == solver.nfe
        pipe.scheduler = BespokeScheduler.from_solver(solver, pipe.scheduler)
        assert pipe.scheduler.config.prediction_type == prediction
        out = pipe(batch_size=3, generator=torch.Generator().manual_seed(11), num_inference_steps=solver.nfe,
                   output_type="pt").images
        assert counter.take() == solver.nfe
    finally:
        counter.handle.remove()
    difference = max_difference(out, expected)
    assert difference <= TOLERANCE, difference
    # Not the base method on a uniform grid: a DDIM run with the same step count samples something else.
    reference = PIPELINES[pipeline](unet, prediction)
    reference.set_progress_bar_config(disable=True)
    ddim_like = reference(batch_size=3, generator=torch.Generator().manual_seed(11), num_inference_steps=solver.nfe,
                          output_type="pt").images
    assert max_difference(ddim_like, expected) > 100 * TOLERANCE


def test_timesteps_are_the_solvers_evaluation_times(unet):
    pipe = PIPELINES["ddim"](unet, "epsilon")
    u = flowsolve.adapt(pipe)
    solver = make_solver("scale-time-midpoint", u)
    scheduler = BespokeScheduler.from_solver(solver, pipe.scheduler)
    scheduler.set_timesteps(solver.nfe)
    times = solver.evaluation_times()
    assert scheduler.timesteps.dtype == torch.float32 and scheduler.timesteps.shape == (solver.nfe,)
    torch.testing.assert_close(scheduler.timesteps.double(), 999 * (1 - times.clamp(0, 1)), rtol=0, atol=1e-3)
    assert bool((scheduler.timesteps.diff() < 0).all())  # noisiest first
    assert scheduler.order == 1 and scheduler.init_noise_sigma == 1.0
    x = noise((2, 2, 8, 8), 0)
    assert scheduler.scale_model_input(x, scheduler.timesteps[0]) is x


def test_the_stepper_restarts_with_each_run_and_batch(unet):
    pipe = PIPELINES["ddpm"](unet, "epsilon")
    pipe.set_progress_bar_config(disable=True)
    u = flowsolve.adapt(pipe)
    solver = make_solver("non-stationary", u)
    pipe.scheduler = BespokeScheduler.from_solver(solver, pipe.scheduler)
    runs = [pipe(batch_size=batch, generator=torch.Generator().manual_seed(4), num_inference_steps=NFE,
                 output_type="pt").images for batch in (2, 3, 2)]
    assert runs[0].shape[0] == 2 and runs[1].shape[0] == 3
    assert torch.equal(torch.as_tensor(runs[0]), torch.as_tensor(runs[2]))
    with torch.no_grad():
        expected = images(solver.sample(u, noise((3, 2, 8, 8), 4)))
    assert max_difference(runs[1], expected) <= TOLERANCE


def test_wrong_step_counts_are_refused_naming_the_solvers_nfe(unet):
    pipe = PIPELINES["ddim"](unet, "epsilon")
    pipe.set_progress_bar_config(disable=True)
    solver = make_solver("scale-time-ab2", flowsolve.adapt(pipe))
    pipe.scheduler = BespokeScheduler.from_solver(solver, pipe.scheduler)
    for steps in (NFE - 1, NFE + 1, 50):
        with pytest.raises(ValueError, match=rf"solver\.nfe = {NFE}.*num_inference_steps={NFE} \(got {steps}\)"):
            pipe(batch_size=1, num_inference_steps=steps, output_type="pt")
    with pytest.raises(ValueError, match=rf"solver\.nfe = {NFE}"):
        pipe.scheduler.set_timesteps(sigmas=[1.0, 0.5])
    with pytest.raises(ValueError, match="call set_timesteps"):
        BespokeScheduler.from_solver(solver, pipe.scheduler).step(torch.zeros(1, 2, 8, 8), 999, torch.zeros(1, 2, 8, 8))


def test_a_run_must_follow_the_schedule(unet):
    pipe = PIPELINES["ddim"](unet, "epsilon")
    solver = make_solver("non-stationary", flowsolve.adapt(pipe))
    scheduler = BespokeScheduler.from_solver(solver, pipe.scheduler)
    scheduler.set_timesteps(NFE)
    x = noise((2, 2, 8, 8), 1)
    with pytest.raises(ValueError, match=r"timestep 500.*evaluation 0 is at timestep 9\d\d"):
        scheduler.step(torch.zeros_like(x), 500, x)
    scheduler.set_timesteps(NFE)
    with torch.no_grad():
        x = scheduler.step(unet(x, scheduler.timesteps[0]).sample, scheduler.timesteps[0], x).prev_sample
        with pytest.raises(ValueError, match="latents cannot be changed between steps"):
            scheduler.step(unet(x, scheduler.timesteps[1]).sample, scheduler.timesteps[1], x + 0.1)
    with pytest.raises(ValueError, match="img2img"):
        scheduler.set_begin_index(2)
    scheduler.set_begin_index(0)


# -- DiT: class labels, batched classifier-free guidance, learned sigma ---------------------------------
@pytest.mark.parametrize("solver_name", SOLVERS)
@pytest.mark.parametrize("guidance_scale", [4.0, 1.0])
def test_dit_pipeline_with_guidance_samples_what_flowsolve_samples(dit_pipe, solver_name, guidance_scale):
    labels = [3, 999, 0]
    u = flowsolve.adapt(dit_pipe, guidance_scale=guidance_scale)
    assert isinstance(u, DiffusersVelocity) and u.guided == (guidance_scale > 1)
    assert u.condition_distribution == flowsolve.Labels(1000, key="class_labels")
    solver = make_solver(solver_name, u)
    shape = (len(labels), 4, 8, 8)
    counter = CallCounter(dit_pipe.transformer)
    original = dit_pipe.scheduler
    try:
        with torch.no_grad():
            latents = solver.sample(u.bind({"class_labels": torch.tensor(labels)}), noise(shape, 21))
            scaled = 1 / dit_pipe.vae.config.scaling_factor * latents  # as DiTPipeline writes it
            expected = (dit_pipe.vae.decode(scaled).sample / 2 + 0.5).clamp(0, 1)
        assert counter.take() == solver.nfe  # one batched (conditional + unconditional) call per evaluation
        dit_pipe.scheduler = BespokeScheduler.from_solver(solver, original)
        out = dit_pipe(class_labels=labels, guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(21),
                       num_inference_steps=solver.nfe, output_type="pt").images
        assert counter.take() == solver.nfe
    finally:
        counter.handle.remove()
        dit_pipe.scheduler = original
    difference = max_difference(out, expected)
    assert difference <= TOLERANCE, difference


def test_dit_adapter_defaults_to_the_pipelines_guidance_and_binds_labels(dit_pipe):
    u = flowsolve.adapt(dit_pipe)
    assert u.guidance_scale == 4.0 and not u.negative_first  # DiTPipeline's default, conditional half first
    x, t = noise((2, 4, 8, 8), 2), torch.tensor(0.4)
    labels = torch.tensor([7, 8])
    with torch.no_grad():
        bound = u.bind({"labels": labels})  # flowsolve's usual key works too
        assert torch.equal(bound.model_kwargs["class_labels"], labels) and bound.unbound_field is u
        # By hand: DiTPipeline's guidance on the eps half of the learned-sigma output.
        k = u.path.timestep(t.expand(2)).float()
        both = dit_pipe.transformer(torch.cat([x, x]), timestep=torch.cat([k, k]),
                                    class_labels=torch.cat([labels, torch.tensor([1000, 1000])])).sample[:, :4]
        eps = both[2:] + 4.0 * (both[:2] - both[2:])
        from flowsolve.paths.predictions import velocity_from

        expected = velocity_from("eps", eps, x, t.double().expand(2), u.path)
        torch.testing.assert_close(bound(t, x), expected, rtol=0, atol=0)
        unguided = flowsolve.adapt(dit_pipe, guidance_scale=1.0).bind({"class_labels": labels})
        assert not torch.allclose(unguided(t, x), bound(t, x))


def test_a_fit_draws_class_labels_per_path(dit_pipe):
    u = flowsolve.adapt(dit_pipe, guidance_scale=2.0)
    solver = flowsolve.NonStationary().fit(u, 4, init="dpm-solver++(2m)", iterations=3, train_trajectories=8,
                                           val_trajectories=4, batch_size=4, validate_every=3, progress=False,
                                           rtol=1e-3, atol=1e-3)
    assert solver.nfe == 4 and all(bool(torch.isfinite(p).all()) for p in solver.params.values())
    scheduler = BespokeScheduler.from_solver(solver, dit_pipe.scheduler)
    assert scheduler.nfe == 4


# -- flow matching ---------------------------------------------------------------------------------------
def flow_solver(name, u, nfe=NFE):
    """Solvers for the FM-OT field (the log-SNR start needs a path with finite ends: uniform here)."""
    if name == "non-stationary":
        solver = flowsolve.NonStationary().at(nfe, init="dpm-solver++(2m)", model=u)
    elif name == "scale-time-midpoint":
        solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe)
    else:
        solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.AdamsBashforth(2)).at(nfe)
    return randomized(solver, size=0.05)


@pytest.mark.parametrize("solver_name", SOLVERS)
@pytest.mark.parametrize("guidance_scale", [3.0, 1.0])
def test_flow_matching_pipeline_samples_what_flowsolve_samples(flow_pipe, solver_name, guidance_scale):
    batch = 3
    positive, negative = prompts(batch), negative_prompt()
    u = flowsolve.adapt(flow_pipe, model_kwargs=positive, negative_model_kwargs=negative, guidance_scale=guidance_scale)
    assert isinstance(u, FlowMatchVelocity) and u.negative_first
    solver = flow_solver(solver_name, u)
    x0 = noise((batch, 4, 8, 8), 31)
    counter = CallCounter(flow_pipe.transformer)
    original = flow_pipe.scheduler
    try:
        with torch.no_grad():
            expected = solver.sample(u, x0)
        assert counter.take() == solver.nfe
        flow_pipe.scheduler = BespokeScheduler.from_solver(solver, original)
        assert flow_pipe.scheduler.config.path == "flow-matching"
        call = dict(prompt_embeds=positive["encoder_hidden_states"], pooled_prompt_embeds=positive["pooled_projections"],
                    negative_prompt_embeds=negative["encoder_hidden_states"].expand(batch, -1, -1),
                    negative_pooled_prompt_embeds=negative["pooled_projections"].expand(batch, -1),
                    guidance_scale=guidance_scale, latents=x0.clone())
        out = flow_pipe(num_inference_steps=solver.nfe, **call)
        assert counter.take() == solver.nfe
        # Flux-style: sigmas (their values are the pipeline's default grid, ignored) and mu.
        flux_style = flow_pipe(sigmas=np.linspace(1.0, 1 / solver.nfe, solver.nfe), mu=0.7, **call)
        assert counter.take() == solver.nfe
    finally:
        counter.handle.remove()
        flow_pipe.scheduler = original
    difference = max_difference(images(out), images(expected))
    assert difference <= TOLERANCE, difference
    assert torch.equal(out, flux_style)


def test_flow_matching_field_is_the_fm_scheduler_s_ode(flow_pipe):
    """Sign and time map: Euler on the adapted field at t = 1 - sigma is diffusers' flow-matching
    Euler scheduler step for step."""
    positive = prompts(2)
    u = flowsolve.adapt(flow_pipe, model_kwargs=positive)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    x0 = noise((2, 4, 8, 8), 3)
    scheduler.set_timesteps(8)
    x = x0.clone()
    ours = x0.clone()
    with torch.no_grad():
        for i, timestep in enumerate(scheduler.timesteps):
            out = flow_pipe.transformer(hidden_states=x, timestep=timestep.expand(2), return_dict=False, **positive)[0]
            x = scheduler.step(out, timestep, x, return_dict=False)[0]
            t, t_next = 1 - scheduler.sigmas[i], 1 - scheduler.sigmas[i + 1]
            ours = ours + (t_next - t) * u(t, ours)
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)
    assert float((x - x0).abs().max()) > 0.1


def test_flow_matching_scheduler_estimates_and_forward_process(flow_pipe):
    u = flowsolve.adapt(flow_pipe, model_kwargs=prompts(2))
    solver = flow_solver("non-stationary", u)
    scheduler = BespokeScheduler.from_solver(solver, diffusers.FlowMatchEulerDiscreteScheduler())
    torch.testing.assert_close(scheduler.timesteps.double(), 1000 * (1 - solver.evaluation_times().clamp(0, 1)),
                               rtol=0, atol=1e-3)
    scheduler.set_timesteps(NFE)
    x = noise((2, 4, 8, 8), 0)
    with torch.no_grad():
        out = flow_pipe.transformer(hidden_states=x, timestep=scheduler.timesteps[0].expand(2), return_dict=False,
                                    **prompts(2))[0]
    step = scheduler.step(out, scheduler.timesteps[0], x)
    sigma = 1 - float(solver.evaluation_times()[0])
    torch.testing.assert_close(step.pred_original_sample, x - sigma * out)
    data = noise((2, 4, 8, 8), 5)
    mixed = scheduler.scale_noise(data, torch.tensor([250.0]), x)
    torch.testing.assert_close(mixed, 0.75 * data + 0.25 * x)


def test_choices_fit_a_text_conditioned_field_over_a_prompt_set(flow_pipe):
    table = prompts(3, seed=1)
    u = flowsolve.adapt(flow_pipe, conditions=Choices(table))
    drawn = u.condition_distribution.sample(4, torch.Generator().manual_seed(0))
    bound = u.bind(drawn)
    x = noise((4, 4, 8, 8), 0)
    with torch.no_grad():
        velocity = bound(torch.tensor(0.5), x)
        first = flowsolve.adapt(flow_pipe, model_kwargs={k: v[:1] for k, v in drawn.items()})(torch.tensor(0.5), x[:1])
    torch.testing.assert_close(velocity[:1], first, rtol=1e-5, atol=1e-6)
    # Guided, as in the README: the conditional embeddings come per path, the negative one is fixed.
    guided = flowsolve.adapt(flow_pipe, conditions=Choices(table), negative_model_kwargs=negative_prompt(),
                             guidance_scale=3.0)
    explicit = flowsolve.adapt(flow_pipe, model_kwargs=drawn, negative_model_kwargs=negative_prompt(),
                               guidance_scale=3.0)
    with torch.no_grad():
        torch.testing.assert_close(guided.bind(drawn)(torch.tensor(0.3), x), explicit(torch.tensor(0.3), x),
                                   rtol=0, atol=0)
        with pytest.raises(ValueError, match="bind them first"):
            guided(torch.tensor(0.3), x)
    assert Choices(table).to_dict() == Choices({k: v.clone() for k, v in table.items()}).to_dict()
    assert Choices(table).to_dict() != Choices(prompts(3, seed=2)).to_dict()


# -- saving and loading ------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver_name", SOLVERS)
def test_save_and_load_round_trip_bit_for_bit(unet, tmp_path, solver_name):
    pipe = PIPELINES["ddim"](unet, "v_prediction")
    pipe.set_progress_bar_config(disable=True)
    solver = make_solver(solver_name, flowsolve.adapt(pipe))
    scheduler = BespokeScheduler.from_solver(solver, pipe.scheduler)
    scheduler.save_pretrained(tmp_path / "scheduler")
    stored = json.loads((tmp_path / "scheduler" / "scheduler_config.json").read_text())
    assert stored["_class_name"] == "BespokeScheduler" and stored["nfe"] == NFE
    assert stored["family"] == solver.family_spec()
    loaded = BespokeScheduler.from_pretrained(tmp_path / "scheduler")
    for name, parameter in solver.params.items():
        assert torch.equal(loaded.solver.params[name].detach(), parameter.detach()), name
    assert torch.equal(loaded.timesteps, scheduler.timesteps)

    def run(scheduler):
        pipe.scheduler = scheduler
        return pipe(batch_size=2, generator=torch.Generator().manual_seed(7), num_inference_steps=NFE,
                    output_type="pt").images

    assert torch.equal(torch.as_tensor(run(scheduler)), torch.as_tensor(run(loaded)))


def test_a_saved_pipeline_loads_with_its_bespoke_scheduler(unet, tmp_path):
    pipe = PIPELINES["ddpm"](unet, "epsilon")
    pipe.set_progress_bar_config(disable=True)
    solver = make_solver("scale-time-ab2", flowsolve.adapt(pipe))
    pipe.scheduler = BespokeScheduler.from_solver(solver, pipe.scheduler)
    before = pipe(batch_size=2, generator=torch.Generator().manual_seed(1), num_inference_steps=NFE,
                  output_type="pt").images
    pipe.save_pretrained(tmp_path / "pipe")
    assert json.loads((tmp_path / "pipe" / "model_index.json").read_text())["scheduler"] == [
        "flowsolve_diffusers.scheduler", "BespokeScheduler"]
    loaded = diffusers.DDPMPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.scheduler, BespokeScheduler)
    after = loaded(batch_size=2, generator=torch.Generator().manual_seed(1), num_inference_steps=NFE,
                   output_type="pt").images
    assert torch.equal(torch.as_tensor(before), torch.as_tensor(after))
    # flowsolve.adapt still recognises the pipeline: the scheduler carries the noise schedule.
    u = flowsolve.adapt(loaded)
    assert torch.equal(u.path.log_alphas_cumprod, flowsolve.adapt(pipe).path.log_alphas_cumprod)


def test_export_scheduler_like_a_scheduler_a_config_or_a_folder(unet, tmp_path, flow_pipe):
    ddim = diffusers.DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    solver = make_solver("scale-time-midpoint", flowsolve.adapt(unet, "diffusers", scheduler=ddim))
    solver.save(tmp_path / "solver.pt")
    ddim.save_pretrained(tmp_path / "ddim")
    written = [export_scheduler(solver, tmp_path / "a", like=ddim),
               export_scheduler(tmp_path / "solver.pt", tmp_path / "b", like=ddim.config),
               export_scheduler(solver, tmp_path / "c", like=tmp_path / "ddim")]
    for folder, scheduler in zip("abc", written):
        loaded = BespokeScheduler.from_pretrained(tmp_path / folder)
        assert loaded.config.prediction_type == "v_prediction" and loaded.config.beta_schedule == "squaredcos_cap_v2"
        assert torch.equal(loaded.alphas_cumprod, ddim.alphas_cumprod)
        assert torch.equal(loaded.timesteps, written[0].timesteps)
    flow = export_scheduler(solver, tmp_path / "d", like=flow_pipe.scheduler.config)
    assert flow.config.path == "flow-matching"
    assert BespokeScheduler.from_pretrained(tmp_path / "d").config.path == "flow-matching"


def test_a_schedule_the_betas_do_not_reproduce_is_stored_as_a_table(unet):
    scheduler = diffusers.DDIMScheduler()
    scheduler.alphas_cumprod = scheduler.alphas_cumprod * 0.999  # edited after construction
    solver = make_solver("non-stationary", flowsolve.adapt(unet, "diffusers", scheduler=scheduler))
    bespoke = BespokeScheduler.from_solver(solver, scheduler)
    assert bespoke.config.trained_alphas_cumprod is not None
    torch.testing.assert_close(bespoke.alphas_cumprod.float(), scheduler.alphas_cumprod, rtol=0, atol=0)
    zero_snr = diffusers.DDIMScheduler(rescale_betas_zero_snr=True)
    assert BespokeScheduler.from_solver(solver, zero_snr).config.trained_alphas_cumprod is None


def test_constructor_needs_a_solver():
    with pytest.raises(ValueError, match="from_solver"):
        BespokeScheduler()


def test_solvers_with_per_sample_times_are_refused():
    solver = flowsolve.GuidanceRange(anchors=(0.0, 2.0)).at(4)
    with pytest.raises(ValueError, match="cannot run as a BespokeScheduler.*non-stationary solver"):
        BespokeScheduler.from_solver(solver, diffusers.DDIMScheduler())
