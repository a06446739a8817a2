"""The ``flowsolve`` command line."""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    import time

    import torch

    from . import Euler, Midpoint, RK4, RMSE, ScaleTime, compose, evaluate
    from .gaussian_mixture import GaussianMixtureFlow
    from .store import TrajectoryStore

    torch.set_num_threads(1)
    flow = GaussianMixtureFlow.random(dim=64, components=10, seed=0)
    store = TrajectoryStore(None, flow)
    started = time.perf_counter()
    validation = store.load(256, progress=not args.quiet)
    print(f"exact Gaussian-mixture flow (FM-OT, 64 dims, 10 components); ground truth: dopri5, "
          f"{time.perf_counter() - started:.1f}s")
    rows = []
    for nfe in args.nfe:
        started = time.perf_counter()
        solver = compose(ScaleTime(), Midpoint()).fit(
            flow, nfe=nfe, loss=RMSE(), iterations=args.iterations, lr=5e-3, store=store, progress=not args.quiet
        )
        rows.append((f"bespoke scale-time midpoint ({time.perf_counter() - started:.0f}s fit)", evaluate(solver, flow, validation)))
        for name, base in (("euler", Euler()), ("midpoint", Midpoint()), ("rk4", RK4())):
            if nfe % base.stages == 0:
                rows.append((name, evaluate((base, nfe), flow, validation)))
    print(f"\n{'solver':<40}{'NFE':>5}{'RMSE':>11}{'PSNR':>8}")
    for name, metrics in rows:
        print(f"{name:<40}{metrics['nfe']:>5}{metrics['rmse']:>11.5f}{metrics['psnr']:>8.2f}")
    return 0


def _plugins(args) -> int:
    from .registry import registry

    found = registry()
    print("plugins (entry-point group 'flowsolve'):")
    for record in found.records:
        status = "disabled" if record.disabled else (f"FAILED: {record.error}" if record.error else "loaded")
        print(f"  {record.name:<20} {status:<10} {record.source}")
    sections = (("base solvers", found.base_solvers), ("transforms", found.transforms), ("losses", found.losses),
                ("model adapters", found.adapters), ("models", found.models))
    for title, provided in sections:
        print(f"{title}: {', '.join(sorted(provided()))}")
    return 1 if any(r.error for r in found.records) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowsolve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="fit bespoke solvers to the exact Gaussian-mixture flow and compare")
    demo.add_argument("--nfe", type=lambda s: [int(v) for v in s.split(",")], default=[8, 10],
                      help="comma-separated NFEs to fit (default 8,10)")
    demo.add_argument("--iterations", type=int, default=1000, help="Adam steps per fit (default 1000)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(run=_demo)
    plugins = commands.add_parser("plugins", help="list discovered plugins and what they provide")
    plugins.set_defaults(run=_plugins)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
