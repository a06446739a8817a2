"""Bespoke solvers on the exact Gaussian-mixture flow: accuracy, ablations, memory.

    OMP_NUM_THREADS=1 python benchmarks/gmm_bespoke.py            # all sections (~5 min, 2 cores)
    python benchmarks/gmm_bespoke.py --sections main --nfe 6,8,10

Prints tables (RMSE / PSNR against dopri5 ground truth on held-out noise). The flow is
FM-OT, 64 dimensions, 10 components (``GaussianMixtureFlow.random(64, 10, seed=0)``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import weakref

import torch

import flowsolve
from flowsolve import LTE, RMSE, RMSEBound
from flowsolve.training.store import GroundTruthStore

LOSSES = {"rmse": RMSE, "rmse-bound": RMSEBound, "lte": LTE}


def fit(family, flow, nfe, store, args, loss=None):
    started = time.perf_counter()
    solver = family.fit(
        flow, nfe=nfe, loss=loss or LOSSES[args.loss](), iterations=args.iterations, batch_size=args.batch_size,
        lr=args.lr, store=store, progress=False, train_trajectories=args.train, val_trajectories=args.val,
    )
    return solver, time.perf_counter() - started


def cold_start(flow, args):
    """NFE 10 fit from an empty store (ground truth included), then again with the store present."""
    family = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint())
    with tempfile.TemporaryDirectory() as directory:
        cold, cold_seconds = fit(family, flow, 10, directory, args)
        _, warm_seconds = fit(family, flow, 10, directory, args)
    gt_seconds = cold.metadata["timing"]["ground_truth_seconds"]
    print(f"\nfit NFE 10 from an empty store: {cold_seconds:.1f}s (ground truth {gt_seconds:.1f}s of it); "
          f"with the store present: {warm_seconds:.1f}s")


def main_table(flow, store, validation, args):
    print(f"\n## Accuracy vs NFE (RMSE / PSNR dB against dopri5 on {len(validation)} test paths, noise never seen in fitting)")
    print(f"bespoke = ScaleTime x Midpoint fitted with {args.loss}, {args.iterations} Adam steps, "
          f"batch {args.batch_size}, lr {args.lr}\n")
    header = "| NFE | Euler | Midpoint | RK4 | Bespoke | Bespoke/Midpoint | Midpoint@2xNFE | fit s |"
    print(header + "\n|" + "---|" * 8)
    family = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint())
    for nfe in args.nfe:
        cells = []
        for base in (flowsolve.Euler(), flowsolve.Midpoint(), flowsolve.RK4()):
            if nfe % base.stages:
                cells.append("—")
                continue
            m = flowsolve.evaluate((base, nfe), flow, validation)
            cells.append(f"{m['rmse']:.5f} / {m['psnr']:.1f}")
        midpoint = flowsolve.evaluate((flowsolve.Midpoint(), nfe), flow, validation)["rmse"]
        double = flowsolve.evaluate((flowsolve.Midpoint(), 2 * nfe), flow, validation)["rmse"]
        solver, seconds = fit(family, flow, nfe, store, args)
        m = flowsolve.evaluate(solver, flow, validation)
        print(f"| {nfe} | {' | '.join(cells)} | {m['rmse']:.5f} / {m['psnr']:.1f} | {m['rmse'] / midpoint:.3f} "
              f"| {double:.5f} | {seconds:.1f} |", flush=True)


def ablation(flow, store, validation, args):
    print(f"\n## Ablation (appendix K) at NFE {args.ablation_nfe}: RMSE / PSNR dB, ratio to the plain base solver\n")
    print("| transform | base | loss | RMSE / PSNR | ratio to base | fit s |\n|---|---|---|---|---|---|")
    nfe = args.ablation_nfe
    rows = [(flowsolve.ScaleTime(), flowsolve.Midpoint(), name) for name in LOSSES] + [
        (flowsolve.TimeOnly(), flowsolve.Midpoint(), args.loss),
        (flowsolve.ScaleOnly(), flowsolve.Midpoint(), args.loss),
        (flowsolve.ScaleTime(), flowsolve.Euler(), args.loss),
        (flowsolve.TimeOnly(), flowsolve.Euler(), args.loss),
    ]
    for transform, base, loss_name in rows:
        solver, seconds = fit(flowsolve.compose(transform, base), flow, nfe, store, args, LOSSES[loss_name]())
        m = flowsolve.evaluate(solver, flow, validation)
        plain = flowsolve.evaluate((base, nfe), flow, validation)["rmse"]
        print(f"| {transform.name} | {base.name} | {loss_name} | {m['rmse']:.5f} / {m['psnr']:.1f} "
              f"| {m['rmse'] / plain:.3f} | {seconds:.1f} |", flush=True)


class SavedTensorMeter:
    """Peak bytes of tensors autograd keeps alive for backward (the activation memory of training)."""

    def __init__(self):
        self.live = self.peak = 0

    def __enter__(self):
        meter = self

        class Packed:
            def __init__(self, tensor):
                self.tensor = tensor
                size = tensor.numel() * tensor.element_size()
                meter.live += size
                meter.peak = max(meter.peak, meter.live)
                weakref.finalize(self, meter._release, size)

        self._hooks = torch.autograd.graph.saved_tensors_hooks(Packed, lambda packed: packed.tensor)
        self._hooks.__enter__()
        return self

    def _release(self, size):
        self.live -= size

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)


def memory(flow, store, args):
    print("\n## Training memory vs steps (peak autograd saved-tensor MiB, batch 64, ScaleTime x Midpoint)\n")
    # RMSE(checkpoint=True) is left out: its recomputed activations bypass this meter's hooks.
    losses = {"RMSE": RMSE(), "RMSE-Bound (one batch)": RMSEBound(), "RMSE-Bound (1 step/batch)": RMSEBound(steps_per_batch=1)}
    print("| n steps | " + " | ".join(losses) + " |\n|---|" + "---|" * len(losses))
    gt = store.load(64, progress=False)
    for n in (2, 4, 8, 16, 32):
        cells = []
        for loss in losses.values():
            solver = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint()).at(nfe=2 * n)
            with SavedTensorMeter() as meter:
                loss.backward(solver, flow, gt)
            cells.append(f"{meter.peak / 2**20:.2f}")
        print(f"| {n} | " + " | ".join(cells) + " |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="main,ablation,memory")
    parser.add_argument("--nfe", default="4,6,8,10,16,20", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--ablation-nfe", default=8, type=int)
    parser.add_argument("--loss", default="rmse-bound", choices=sorted(LOSSES))
    parser.add_argument("--iterations", default=1000, type=int)
    parser.add_argument("--batch-size", default=32, type=int)
    parser.add_argument("--lr", default=2e-3, type=float)
    parser.add_argument("--train", default=1024, type=int, help="training paths")
    parser.add_argument("--val", default=256, type=int, help="validation paths (pick the best iteration)")
    parser.add_argument("--test", default=1024, type=int, help="test paths (the reported figures)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    flow = flowsolve.GaussianMixtureFlow.random(dim=64, components=10, seed=0)
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        store = GroundTruthStore(directory, flow)
        store.load(args.train + args.val, progress=False)
        print(f"ground truth: {args.train + args.val} dopri5 paths in {time.perf_counter() - started:.1f}s "
              f"(rtol=atol=1e-5, knots <= 0.05 apart)")
        # The test set has its own noise seed: neither trained on nor used to pick the best iteration.
        validation = GroundTruthStore(f"{directory}/test", flow, seed=1).load(args.test, progress=False)
        sections = args.sections.split(",")
        if "main" in sections:
            cold_start(flow, args)
            main_table(flow, store, validation, args)
        if "ablation" in sections:
            ablation(flow, store, validation, args)
        if "memory" in sections:
            memory(flow, store, args)


if __name__ == "__main__":
    main()
