"""A fitted flowsolve solver as a diffusers scheduler: sample with it from an unmodified pipeline.

::

    pipe.scheduler = BespokeScheduler.from_solver(solver, pipe.scheduler)
    images = pipe(num_inference_steps=solver.nfe).images

The scheduler drives the solver one network evaluation at a time (``solver.stepper(x0)``): the
pipeline calls the network at ``scheduler.timesteps[i]`` on the state the scheduler returned and
hands the output to :meth:`BespokeScheduler.step`, which turns it into the velocity of the
solver's ODE exactly as flowsolve's adapters do (:mod:`flowsolve_diffusers.adapter`) and steps
the solver. So a pipeline samples what ``solver.sample(flowsolve.adapt(pipe), x0)`` samples
from the same noise, with ``solver.nfe`` network calls.

Two paths, taken from the pipeline's scheduler by :meth:`BespokeScheduler.from_solver`:

* ``"discrete-vp"``: DDPM/DDIM-style schedulers (``alphas_cumprod``); flow time ``t`` is training
  timestep ``k = (N - 1)(1 - t)``, the network predicts ``prediction_type`` (epsilon,
  v_prediction, sample), see :class:`~flowsolve_diffusers.DiffusersVelocity`;
* ``"flow-matching"``: ``FlowMatchEulerDiscreteScheduler`` pipelines; ``sigma = 1 - t``, timestep
  ``sigma * num_train_timesteps``, the network predicts ``noise - x1``, see
  :class:`~flowsolve_diffusers.FlowMatchVelocity`.

The solver (its family spec, its parameters as lists of floats, its NFE) lives in the scheduler's
config, so ``save_pretrained`` / ``from_pretrained`` (and a pipeline's) round-trip it bit for bit.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

import flowsolve
from flowsolve.core.solver_file import write_solver_file
from flowsolve.paths.predictions import predictions_from, velocity_from
from flowsolve.paths.schedulers import FMOT, Scheduler

from .adapter import _FLOWSOLVE_PREDICTIONS, PREDICTION_TYPES, flow_timestep, is_flow_matching_scheduler
from .schedule import INTERPOLATIONS, DiscreteVP

PATHS = ("discrete-vp", "flow-matching")
# The noise-schedule settings copied from a DDPM/DDIM-style scheduler (DDPMScheduler's names and defaults).
_BETA_DEFAULTS: dict[str, Any] = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
                                  "beta_schedule": "linear", "trained_betas": None, "rescale_betas_zero_snr": False}


@dataclass
class BespokeSchedulerOutput(BaseOutput):
    """What :meth:`BespokeScheduler.step` returns.

    Args:
        prev_sample: the state of the next network evaluation (after the last: the sample).
        pred_original_sample: the network's data estimate ``x1_hat`` at the evaluation just made.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class BespokeScheduler(SchedulerMixin, ConfigMixin):  # type: ignore[misc]  # diffusers' bases type config_name apart
    """A fitted flowsolve solver (any family that steps with one time per evaluation: transform x
    base, Adams--Bashforth multistep, non-stationary) as a diffusers scheduler.

    Build it with :meth:`from_solver`; the constructor takes the stored config. The pipeline must
    call it with ``num_inference_steps=nfe`` (another count is refused: the solver's evaluation
    times are fitted for its NFE). Each sampling run is one rollout of the solver, started at the
    first :meth:`step` after :meth:`set_timesteps` with that step's sample (the initial noise, of
    whatever batch; DiT's doubled classifier-free-guidance batch included).

    The final step returns the ODE's end state: for ``"discrete-vp"`` that is ``x`` at training
    step 0 (it keeps the last ``sqrt(beta_0)`` of noise, 0.01 for the usual betas, as DDIM with
    ``set_alpha_to_one=False`` does), for flow matching the data at ``sigma = 0``.

    Not supported: starting part way (img2img / inpainting ``strength < 1``, ``set_begin_index``
    other than 0), changing the latents between steps (the solver's state is a combination of
    the noise and earlier velocities; a changed sample is refused), stochastic sampling (``eta``,
    ``generator`` are accepted and ignored: the solver is deterministic).

    Config (what ``save_pretrained`` writes): ``nfe``, ``family`` (the solver's family spec),
    ``parameters`` (name -> nested lists of floats), ``path`` (``"discrete-vp"`` or
    ``"flow-matching"``), the noise schedule (``num_train_timesteps``, ``beta_*``,
    ``trained_betas``, ``rescale_betas_zero_snr``, or ``trained_alphas_cumprod``),
    ``prediction_type`` and ``interpolation``.
    """

    order = 1
    _compatibles: list[str] = []

    @register_to_config
    def __init__(
        self,
        nfe: int | None = None,
        family: dict | None = None,
        parameters: dict | None = None,
        path: str = "discrete-vp",
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: list | None = None,
        rescale_betas_zero_snr: bool = False,
        trained_alphas_cumprod: list | None = None,
        prediction_type: str = "epsilon",
        interpolation: str = "cubic",
    ):
        if nfe is None or family is None or parameters is None:
            raise ValueError("BespokeScheduler runs a fitted flowsolve solver: build it with "
                             "BespokeScheduler.from_solver(solver, pipe.scheduler) or load a saved one with "
                             "BespokeScheduler.from_pretrained(folder)")
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        if path == "discrete-vp" and prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        self.solver = _solver_from_config(int(nfe), family, parameters)
        try:
            times = torch.as_tensor(self.solver.evaluation_times(), dtype=torch.float64).detach().cpu()
        except ValueError as error:  # a guidance-range solver: its times depend on per-sample guidance scales
            raise ValueError(f"a {self.solver.label} solver cannot run as a BespokeScheduler: a pipeline calls the network "
                             f"at one timestep per step for the whole batch ({error}); fit a non-stationary solver at "
                             "the pipeline's guidance scale instead") from error
        if times.shape != (self.solver.nfe,) or not bool(torch.isfinite(times).all()):
            raise ValueError(f"the {self.solver.label} solver has no single time per evaluation (evaluation_times "
                             f"{tuple(times.shape)}); a diffusers pipeline calls the network at one timestep per step")
        self.evaluation_times = times
        self.flow_matching = path == "flow-matching"
        # The network's float32 time, as the adapters compute it from a float32 state's time.
        network_times = times.to(torch.float32).clamp(0.0, 1.0)
        # The Gaussian path the solver's field lives on (flowsolve's alpha, sigma and derivatives).
        self.gaussian_path: Scheduler
        if self.flow_matching:
            self.gaussian_path = FMOT()
            self._timesteps = flow_timestep(network_times, float(num_train_timesteps))
            self.sigmas = torch.cat([1 - network_times, network_times.new_zeros(1)])
        else:
            table = _alphas_cumprod(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas,
                                    rescale_betas_zero_snr, trained_alphas_cumprod)
            self.alphas_cumprod = table
            self.betas = 1 - table / torch.cat([table.new_ones(1), table[:-1]])
            discrete = DiscreteVP(table, interpolation=interpolation, name="diffusers-BespokeScheduler")
            self.gaussian_path = discrete
            self._timesteps = discrete.timestep(network_times).to(torch.float32)
        self.init_noise_sigma = 1.0
        self.timesteps = self._timesteps.clone()
        self.num_inference_steps: int | None = None
        self._stepper: Any = None
        self._step_index: int | None = None
        self._begin_index: int | None = None
        self._tables: dict = {}
        self._expected = self._timesteps.tolist()

    # --- building --------------------------------------------------------------------------------
    @classmethod
    def from_solver(cls, solver, scheduler=None, *, interpolation: str = "cubic",
                    prediction_type: str | None = None) -> BespokeScheduler:
        """The scheduler running ``solver`` on the noise schedule of ``scheduler``.

        Args:
            solver: a fitted flowsolve solver, or the path of a solver file.
            scheduler: the pipeline's scheduler (``pipe.scheduler``), its config (a mapping, e.g.
                ``pipe.scheduler.config``), or a folder holding a ``scheduler_config.json`` (or a
                pipeline folder with ``scheduler/``). DDPM/DDIM-style schedulers give the noise
                schedule and ``prediction_type``; a ``FlowMatchEulerDiscreteScheduler`` (or its
                config) selects flow matching. ``None``: DDPM's default linear schedule, epsilon.
            interpolation: ``"cubic"`` or ``"linear"``: as the ``"diffusers"`` adapter the solver
                was fitted on was built (default ``"cubic"``).
            prediction_type: overrides the scheduler's.
        """
        if isinstance(solver, (str, os.PathLike)):
            solver = flowsolve.load(solver)
        if not isinstance(solver, flowsolve.SolverModule):
            raise TypeError(f"solver must be a fitted flowsolve solver or a solver file, got {type(solver).__name__}")
        source, config = _source_config(scheduler)
        settings: dict[str, Any] = {
            "nfe": solver.nfe,
            "family": solver.family_spec(),
            "parameters": {name: p.detach().cpu().tolist() for name, p in solver.params.items()},
            "interpolation": interpolation,
        }
        if is_flow_matching_scheduler(source if source is not None else config):
            settings.update(path="flow-matching", num_train_timesteps=int(config.get("num_train_timesteps", 1000)))
            return cls(**settings)
        beta = {name: config.get(name, default) for name, default in _BETA_DEFAULTS.items()}
        if beta["trained_betas"] is not None:
            beta["trained_betas"] = [float(v) for v in torch.as_tensor(beta["trained_betas"]).reshape(-1).tolist()]
        beta["trained_alphas_cumprod"] = config.get("trained_alphas_cumprod")
        table = getattr(source, "alphas_cumprod", None)
        if table is not None:
            table = torch.as_tensor(table).detach().cpu()
            rebuilt = _alphas_cumprod(**beta)
            if rebuilt.dtype != table.dtype or rebuilt.shape != table.shape or not torch.equal(rebuilt, table):
                # A schedule the beta settings do not reproduce: keep the table itself.
                beta.update(trained_betas=None, trained_alphas_cumprod=table.to(torch.float64).tolist(),
                            num_train_timesteps=table.numel())
        prediction = prediction_type or config.get("prediction_type", "epsilon")
        settings.update(path="discrete-vp", prediction_type=prediction, **beta)
        return cls(**settings)

    # --- what pipelines call ---------------------------------------------------------------------
    @property
    def nfe(self) -> int:
        """Network evaluations per sample (the pipeline's ``num_inference_steps``)."""
        return self.solver.nfe

    @property
    def step_index(self) -> int | None:
        """Evaluations taken in the current run (``None`` before its first step)."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Only ``0``: the solver integrates from pure noise (no img2img / inpainting strength)."""
        if int(begin_index) != 0:
            raise ValueError(f"BespokeScheduler samples from pure noise over all {self.nfe} evaluations; starting at "
                             f"step {begin_index} (img2img / inpainting with strength < 1) is not supported")
        self._begin_index = 0

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      sigmas=None, mu: float | None = None, timesteps=None, **kwargs) -> None:
        """Start a sampling run of ``nfe`` network evaluations at :attr:`timesteps`.

        ``num_inference_steps`` (or the length of ``sigmas`` / ``timesteps``, which flow-matching
        pipelines pass) must equal the solver's ``nfe``; the values of ``sigmas`` / ``timesteps``
        and ``mu`` (dynamic shifting) are ignored: the fitted solver fixes its own times.
        """
        requested = num_inference_steps
        if requested is None:
            given = sigmas if sigmas is not None else timesteps
            requested = None if given is None else len(given)
        if requested is None:
            raise ValueError(f"set_timesteps needs num_inference_steps (this solver's nfe = {self.nfe})")
        if int(requested) != self.nfe:
            raise ValueError(
                f"this BespokeScheduler runs a fitted solver with exactly solver.nfe = {self.nfe} network evaluations; "
                f"call the pipeline with num_inference_steps={self.nfe} (got {requested}), or fit a solver for "
                f"{requested} evaluations"
            )
        self.num_inference_steps = self.nfe
        self.timesteps = self._timesteps.to(device) if device is not None else self._timesteps.clone()
        self._stepper = None
        self._step_index = None

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """The identity: the network sees the solver's state as it is (``init_noise_sigma = 1``)."""
        return sample

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, *args, return_dict: bool = True,
             **kwargs) -> BespokeSchedulerOutput | tuple:
        """Give the network's output at ``timesteps[i]`` on ``sample`` (the state this scheduler
        returned last, or the initial noise at the first step of a run); returns the state of
        the next evaluation (after the last: the sample). DDPM/DDIM's extra arguments (``eta``,
        ``generator``, ``use_clipped_model_output``, ...) are accepted and ignored."""
        stepper = self._stepper
        if stepper is None:
            stepper = self._start(sample)
        elif stepper.done:
            raise ValueError(f"all {self.nfe} steps of this sampling run were taken; a new run starts with "
                             "set_timesteps (which every pipeline call does)")
        index = stepper.index
        self._check_timestep(timestep, index)
        state = stepper.state
        if sample is not state and (sample.shape != state.shape or not torch.equal(sample, state)):
            raise ValueError(
                f"step {index}: the sample is not the state this scheduler returned at the previous step: a bespoke "
                "solver's state combines the noise and all earlier velocities, so the latents cannot be changed "
                "between steps (inpainting masks, callbacks that edit latents are not supported)"
            )
        output = model_output
        if output.shape != state.shape:
            channels = state.shape[1] if state.dim() > 1 else None
            if channels is not None and output.shape[1] == 2 * channels and output.shape[2:] == state.shape[2:]:
                output = output[:, :channels]  # learned variance: the prediction is the first half
            else:
                raise ValueError(f"model_output has shape {tuple(model_output.shape)}; the sample has {tuple(state.shape)}")
        if output.dtype != state.dtype:
            output = output.to(state.dtype)
        on_x, on_output, data_x, data_output = self._tables_for(state)
        velocity = on_output[index] * output if on_x is None else on_x[index] * state + on_output[index] * output
        data = data_x[index] * state + data_output[index] * output
        prev_sample = stepper.step(velocity)
        self._step_index = stepper.index
        if not return_dict:
            return (prev_sample, data)
        return BespokeSchedulerOutput(prev_sample=prev_sample, pred_original_sample=data)

    # --- the forward process (training scripts, previews) -----------------------------------------
    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``x`` at (fractional) ``timesteps``: ``alpha x1 + sigma noise`` on the scheduler's path."""
        t = self._time_of(torch.as_tensor(timesteps, device=original_samples.device))
        alpha, sigma = (value.to(original_samples.dtype) for value in (self.gaussian_path.alpha(t), self.gaussian_path.sigma(t)))
        shape = (-1,) + (1,) * (original_samples.dim() - 1)
        return alpha.reshape(shape) * original_samples + sigma.reshape(shape) * noise

    def scale_noise(self, sample: torch.Tensor, timestep, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Flow matching's forward process, ``(1 - sigma) x + sigma noise`` (``FlowMatchEulerDiscreteScheduler``'s name)."""
        if noise is None:
            raise ValueError("scale_noise needs the noise")
        return self.add_noise(sample, noise, torch.as_tensor(timestep).reshape(-1))

    def __len__(self) -> int:
        return int(self.config["num_train_timesteps"])

    # --- internals -------------------------------------------------------------------------------
    def _time_of(self, timesteps: torch.Tensor) -> torch.Tensor:
        timesteps = timesteps.to(torch.float64)
        if isinstance(self.gaussian_path, DiscreteVP):
            return self.gaussian_path.time(timesteps)
        return 1 - timesteps / float(self.config["num_train_timesteps"])

    def _start(self, sample: torch.Tensor):
        if self.num_inference_steps is None:
            raise ValueError(f"call set_timesteps(num_inference_steps={self.nfe}) before step (pipelines do)")
        if not isinstance(sample, torch.Tensor) or not sample.is_floating_point():
            raise TypeError("the sample must be a floating-point tensor")
        self._stepper = self.solver.stepper(sample)
        self._step_index = 0
        return self._stepper

    def _check_timestep(self, timestep, index: int) -> None:
        """The pipeline must call the network at this evaluation's timestep (checked where that costs
        no device sync: a number or a CPU tensor)."""
        if isinstance(timestep, torch.Tensor):
            if timestep.device.type != "cpu" or timestep.numel() != 1:
                return
            value = float(timestep)
        elif isinstance(timestep, (int, float)):
            value = float(timestep)
        else:
            return
        expected = self._expected[index]
        if abs(value - expected) > 1e-3 * max(1.0, abs(expected)):
            raise ValueError(
                f"step {index} was given timestep {value:g}, but this run's evaluation {index} is at timestep "
                f"{expected:g}: the pipeline must call the network at scheduler.timesteps in order, from the first "
                "(img2img / strength < 1 and custom timestep lists are not supported)"
            )

    def _tables_for(self, state: torch.Tensor):
        """Per evaluation, the coefficients of ``velocity = on_x x + on_output output`` and of
        ``x1_hat = data_x x + data_output output``, computed as the adapters compute them (float64
        at the state's time, applied in the state's dtype); cached per dtype and device."""
        key = (state.dtype, state.device)
        tables = self._tables.get(key)
        if tables is None:
            times = self.evaluation_times.to(state.dtype).clamp(0.0, 1.0).to(torch.float64)
            zeros, ones = torch.zeros_like(times), torch.ones_like(times)
            if self.flow_matching:  # velocity = -output; x1_hat = x - sigma output
                on_x = None
                on_output, data_x, data_output = -ones, ones, -(1 - times)
            else:
                kind = _FLOWSOLVE_PREDICTIONS[self.config["prediction_type"]]
                on_x = velocity_from(kind, zeros, ones, times, self.gaussian_path)
                on_output = velocity_from(kind, ones, zeros, times, self.gaussian_path)
                data_x = predictions_from(kind, zeros, ones, times, self.gaussian_path)[0]
                data_output = predictions_from(kind, ones, zeros, times, self.gaussian_path)[0]
                if kind == "v":
                    on_x = None  # the velocity of a v-prediction has no term in x
            tables = tuple(None if table is None else list(table.to(device=state.device, dtype=state.dtype).unbind())
                           for table in (on_x, on_output, data_x, data_output))
            self._tables[key] = tables
        return tables


def export_scheduler(solver, path, like=None, **options) -> BespokeScheduler:
    """Write ``solver`` as a diffusers scheduler folder (``scheduler_config.json``) at ``path``.

    ``like``: the scheduler (or config, or scheduler folder) of the pipeline it will run in, see
    :meth:`BespokeScheduler.from_solver` (``options`` go there too). Load it with
    ``BespokeScheduler.from_pretrained(path)``; a pipeline folder's ``scheduler/`` can be replaced
    by it (a pipeline's ``model_index.json`` names it ``["flowsolve_diffusers.scheduler", "BespokeScheduler"]``).
    """
    scheduler = BespokeScheduler.from_solver(solver, like, **options)
    scheduler.save_pretrained(path)
    return scheduler


# -- helpers ---------------------------------------------------------------------------------------
def _source_config(scheduler) -> tuple[Any, dict]:
    """``(scheduler object or None, its config as a plain dict)`` from a scheduler, a config or a folder."""
    if scheduler is None:
        return None, {}
    if isinstance(scheduler, (str, os.PathLike)):
        folder = Path(scheduler)
        for candidate in (folder / "scheduler_config.json", folder / "scheduler" / "scheduler_config.json"):
            if candidate.is_file():
                return None, dict(json.loads(candidate.read_text()))
        raise FileNotFoundError(f"no scheduler_config.json in {folder} (or in {folder / 'scheduler'})")
    if isinstance(scheduler, Mapping):
        return None, dict(scheduler)
    config = getattr(scheduler, "config", None)
    if not isinstance(config, Mapping):
        raise TypeError(f"like / scheduler must be a diffusers scheduler, its config or a folder, got {type(scheduler).__name__}")
    return scheduler, {**dict(config), "_class_name": type(scheduler).__name__}


def _alphas_cumprod(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, rescale_betas_zero_snr,
                    trained_alphas_cumprod=None) -> torch.Tensor:
    """The ``alphas_cumprod`` table diffusers' DDPM/DDIM schedulers compute from these settings
    (float32, as theirs), or the stored table itself."""
    if trained_alphas_cumprod is not None:
        table = torch.tensor(trained_alphas_cumprod, dtype=torch.float64)
        if table.numel() != int(num_train_timesteps):
            raise ValueError(f"trained_alphas_cumprod has {table.numel()} entries, num_train_timesteps is {num_train_timesteps}")
        return table
    reference = DDPMScheduler(num_train_timesteps=int(num_train_timesteps), beta_start=beta_start, beta_end=beta_end,
                              beta_schedule=beta_schedule, trained_betas=trained_betas,
                              rescale_betas_zero_snr=rescale_betas_zero_snr)
    return reference.alphas_cumprod.clone()


def _solver_from_config(nfe: int, family: Mapping, parameters: Mapping) -> flowsolve.SolverModule:
    """The solver a config describes, rebuilt and checked by :func:`flowsolve.load` (through a
    temporary solver file: the one place that knows how to rebuild every family)."""
    if not isinstance(family, Mapping) or not isinstance(parameters, Mapping):
        raise ValueError("the config's family must be a solver family spec and parameters a mapping name -> values")
    tensors = {name: torch.tensor(values, dtype=torch.float64) for name, values in parameters.items()}
    header = {"nfe": int(nfe), "metadata": {}, "family": json.loads(json.dumps(dict(family)))}
    with tempfile.TemporaryDirectory(prefix="flowsolve-scheduler-") as folder:
        file = os.path.join(folder, "solver.pt")
        write_solver_file(file, header, tensors)
        return flowsolve.load(file)
