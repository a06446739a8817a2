"""Ground-truth throughput with 1 and 2 processes (torch.distributed, gloo on CPU).

    OMP_NUM_THREADS=1 python benchmarks/distributed_ground_truth.py [--paths 2048]

Each run launches `torchrun --nproc_per_node=P` on this script's worker, which fills a fresh
trajectory store for a 64-dimensional Gaussian-mixture flow behind a small MLP (so that the
model, not Python overhead, dominates), and prints trajectories per second.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def worker(paths: int, directory: str) -> None:
    import torch

    import flowsolve
    from flowsolve.training import distributed
    from flowsolve.training.store import GroundTruthStore

    torch.set_num_threads(1)
    context = distributed.setup()
    flow = flowsolve.GaussianMixtureFlow.random(dim=64, components=10, seed=0)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(65, 512), torch.nn.SiLU(), torch.nn.Linear(512, 512), torch.nn.SiLU(),
                              torch.nn.Linear(512, 64))

    class Model(torch.nn.Module):
        """The exact flow plus a small MLP's (tiny) output: a network-sized cost per evaluation."""

        sample_shape = (64,)
        accepts_batched_time = True

        def __init__(self):
            super().__init__()
            self.mlp = mlp

        def forward(self, t, x):
            time_column = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0]).reshape(-1, 1)
            return flow(t, x) + 1e-3 * torch.tanh(self.mlp(torch.cat([x, time_column], 1)))

    store = GroundTruthStore(directory, Model(), shard_size=128)
    started = time.perf_counter()
    store.ensure(paths, progress=False)
    seconds = time.perf_counter() - started
    if context.is_main:
        print(f"RESULT {context.world} {paths / seconds:.1f} {seconds:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paths", type=int, default=2048)
    parser.add_argument("--worker", nargs=2, metavar=("PATHS", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(int(args.worker[0]), args.worker[1])
        return
    print("| processes | trajectories/s | seconds |\n|---|---|---|")
    for processes in (1, 2):
        with tempfile.TemporaryDirectory() as directory:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                       __file__, "--worker", str(args.paths), directory]
            out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT")), None)
            if line is None:
                sys.exit(f"worker failed:\n{out.stderr[-2000:]}")
            _, world, rate, seconds = line.split()
            print(f"| {world} | {rate} | {seconds} |", flush=True)


if __name__ == "__main__":
    main()
