"""Run by tests/test_distributed.py under torchrun: a small fit whose result rank 0 writes."""

import json
import os
import sys

import torch

import flowsolve
from flowsolve.training import distributed
from flowsolve.training.store import GroundTruthStore

torch.set_num_threads(1)


def run(store_dir, fail_rank=None):
    distributed.setup()
    flow = flowsolve.GaussianMixtureFlow.random(dim=8, components=4, seed=3)
    if fail_rank is not None and distributed.current().rank == fail_rank:
        raise SystemExit(f"rank {fail_rank} dies on purpose")
    store = GroundTruthStore(store_dir, flow, dtype=torch.float64, shard_size=16)
    family = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint())
    return family.fit(flow, nfe=4, iterations=20, batch_size=16, train_trajectories=64, val_trajectories=32,
                      validate_every=10, dtype=torch.float64, store=store, progress=False)


if __name__ == "__main__":
    output, store_dir = sys.argv[1], sys.argv[2]
    fail = int(os.environ["FAIL_RANK"]) if "FAIL_RANK" in os.environ else None
    solver = run(store_dir, fail)
    if distributed.current().is_main:
        torch.save({k: v.detach() for k, v in solver.params.items()}, output)
        with open(output + ".json", "w") as stream:
            json.dump(solver.metadata["history"], stream)
