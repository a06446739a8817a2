"""What BespokeScheduler's bookkeeping costs on top of the network calls, in an unmodified pipeline.

Measured in one run, on one thread, as process CPU time (``time.process_time``: on a shared
machine wall time mostly measures the neighbours), the minimum over interleaved rounds:

* ``bare``: the ``nfe`` network calls alone, ``unet(x, t)`` at the scheduler's timesteps on a fixed batch;
* ``steps``: the scheduler's share alone: ``set_timesteps`` and ``nfe`` calls of ``scheduler.step``
  with the network's outputs replayed (no network), ``--step-repeats`` runs per round;
* ``loop``: diffusers' denoising loop (``unet`` then ``scheduler.step``, what ``DDIMPipeline.__call__``
  runs after ``set_timesteps``);
* ``pipeline``: the whole ``DDIMPipeline(...)(batch_size, num_inference_steps=nfe, output_type="pt")``
  call (noise drawing and the final ``clamp`` included, progress bar off).

The overhead is ``steps / bare`` (``loop / bare - 1`` and ``pipeline / bare - 1`` are printed too;
they carry the network's own run-to-run spread, a few percent on a busy machine). The network is a
small random ``UNet2DModel`` (nothing downloaded); larger networks only make the ratio smaller,
the bookkeeping being a few elementwise operations per step.

Usage::

    OMP_NUM_THREADS=1 python plugins/flowsolve-diffusers/scripts/scheduler_overhead.py [--batch 16] [--nfe 8]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch


def build_unet(channels: int, size: int, width: int) -> Any:
    import diffusers

    torch.manual_seed(0)
    unet: Any = diffusers.UNet2DModel(
        sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(width, 2 * width), down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    return unet.eval()


def solvers(u, nfe: int) -> dict:
    import flowsolve

    return {
        "non-stationary": flowsolve.NonStationary().at(nfe, init="dpm-solver++(2m)", model=u),
        "scale-time midpoint": flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe, init="log-snr", model=u),
        "scale-time ab2": flowsolve.compose(flowsolve.ScaleTime(), flowsolve.AdamsBashforth(2)).at(nfe, init="log-snr", model=u),
    }


def best_time(function, rounds_log: list) -> None:
    start = time.process_time()
    function()
    rounds_log.append(time.process_time() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--nfe", type=int, default=8)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--size", type=int, default=32, help="image side")
    parser.add_argument("--width", type=int, default=16, help="channels of the UNet's first block")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (minima are reported)")
    parser.add_argument("--step-repeats", type=int, default=20, help="scheduler-only runs per round")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    import diffusers

    import flowsolve
    from flowsolve_diffusers import BespokeScheduler

    unet = build_unet(args.channels, args.size, args.width)
    pipe: Any = diffusers.DDIMPipeline(unet=unet, scheduler=diffusers.DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    u = flowsolve.adapt(pipe)
    shape = (args.batch, args.channels, args.size, args.size)
    print(f"UNet2DModel {args.channels}x{args.size}x{args.size}, widths ({args.width}, {2 * args.width}), batch "
          f"{args.batch}, nfe {args.nfe}, torch {torch.__version__}, 1 thread; CPU ms, minimum of {args.rounds} rounds")
    print(f"{'solver':20s} {'bare':>8s} {'steps':>7s} {'loop':>8s} {'pipeline':>9s} {'overhead':>9s} {'per step':>9s} "
          f"{'loop-bare':>10s} {'pipe-bare':>10s}")
    for name, solver in solvers(u, args.nfe).items():
        scheduler = BespokeScheduler.from_solver(solver, pipe.scheduler)
        pipe.scheduler = scheduler
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        scheduler.set_timesteps(args.nfe)
        timesteps = list(scheduler.timesteps)
        outputs = []

        @torch.no_grad()
        def bare():
            for t in timesteps:
                unet(x, t).sample

        @torch.no_grad()
        def loop(record: bool = False):
            scheduler.set_timesteps(args.nfe)
            image = x
            for t in scheduler.timesteps:
                output = unet(image, t).sample
                if record:
                    outputs.append(output)
                image = scheduler.step(output, t, image, eta=0.0).prev_sample
            return image

        @torch.no_grad()
        def steps():
            for _ in range(args.step_repeats):
                scheduler.set_timesteps(args.nfe)
                image = x
                for t, output in zip(scheduler.timesteps, outputs):
                    image = scheduler.step(output, t, image, eta=0.0).prev_sample

        def pipeline():
            return pipe(batch_size=args.batch, num_inference_steps=args.nfe, output_type="pt").images

        loop(record=True)  # warm-up; keeps the outputs the step-only runs replay
        for function in (bare, steps, pipeline):
            function()
        runs: dict = {"bare": [], "steps": [], "loop": [], "pipeline": []}
        for _ in range(args.rounds):
            for key, function in (("bare", bare), ("steps", steps), ("loop", loop), ("pipeline", pipeline)):
                best_time(function, runs[key])
        bare_s, steps_s, loop_s, pipe_s = (min(runs[key]) for key in ("bare", "steps", "loop", "pipeline"))
        steps_s /= args.step_repeats
        print(f"{name:20s} {1e3 * bare_s:8.1f} {1e3 * steps_s:7.2f} {1e3 * loop_s:8.1f} {1e3 * pipe_s:9.1f} "
              f"{100 * steps_s / bare_s:8.2f}% {1e6 * steps_s / args.nfe:7.0f}us "
              f"{100 * (loop_s / bare_s - 1):9.2f}% {100 * (pipe_s / bare_s - 1):9.2f}%")


if __name__ == "__main__":
    main()
