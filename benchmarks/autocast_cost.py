"""What low-precision network calls (``fit(autocast=...)``) cost and change on a bundled U-Net.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/autocast_cost.py [--model animals-fm-ot] [--batch 16]
        [--device cuda] [--repeats 5]

Times one guided evaluation of ``--batch`` paths in the model's float32 and under
``torch.autocast`` in bfloat16 (and float16 on CUDA), the best of ``--repeats`` calls after a
warm-up, and prints the time ratio and the relative difference of the velocities.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from flowsolve import zoo  # noqa: E402


def timed(field, t, x, precision, repeats: int) -> tuple[float, torch.Tensor]:
    seconds = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            began = time.perf_counter()
            with precision():
                out = field(t, x)
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            seconds.append(time.perf_counter() - began)
    return min(seconds[1:]), out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="animals-fm-ot")
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    u = zoo.load_model(args.model, guidance=args.guidance).to(args.device)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, *u.sample_shape, generator=generator).to(args.device)
    field = u.bind({"labels": torch.randint(10, (args.batch,), generator=generator).to(args.device)})
    t = torch.tensor(0.5, device=args.device)
    full, reference = timed(field, t, x, contextlib.nullcontext, args.repeats)
    print(f"{args.model}, w = {args.guidance:g}, {args.batch} paths on {args.device}: float32 {full * 1e3:.1f} ms")
    dtypes = [torch.bfloat16] + ([torch.float16] if args.device.startswith("cuda") else [])
    for dtype in dtypes:
        low, out = timed(field, t, x, lambda: torch.autocast(x.device.type, dtype=dtype), args.repeats)
        error = float((out.float() - reference).norm() / reference.norm())
        print(f"  autocast {str(dtype).removeprefix('torch.')}: {low * 1e3:.1f} ms ({low / full:.2f}x float32's time), "
              f"relative velocity difference {error:.1e}")


if __name__ == "__main__":
    main()
