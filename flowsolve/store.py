"""A trajectory store: ground truth generated once, on disk, reused by every fit of one model.

Layout: ``manifest.json`` (the key: model fingerprint, noise seed, tolerances, sample shape,
dtype, shard size) and one atomically written ``shard-NNNNN.pt`` per batch of paths. Shards
are generated in order; an interrupted generation resumes at the first missing shard.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from . import distributed
from .fingerprint import model_fingerprint
from .reference_paths import DEFAULT_ATOL, DEFAULT_MAX_STEP, DEFAULT_RTOL, GroundTruth, solve_dense
from .persistence import atomic_torch_save
from .progress import Progress

STORE_FORMAT = "flowsolve.trajectories"
STORE_VERSION = 1


class StoreMismatchError(ValueError):
    """The store on disk belongs to another model or setting, or is unreadable."""


def noise(seed: int, shard: int, count: int, sample_shape, dtype) -> torch.Tensor:
    """The noise of one shard: reproducible from ``(seed, shard)`` on any device."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + shard)
    return torch.randn((count, *sample_shape), generator=generator, dtype=torch.float64).to(dtype)


class TrajectoryStore:
    """Ground-truth paths of one model, keyed so that a mismatched store is never reused.

    Args:
        path: directory on disk, or ``None`` to keep the shards in memory only.
        model: the velocity field.
        sample_shape: shape of one sample, e.g. ``(3, 32, 32)``; default ``model.sample_shape``.
        dtype, device: where the model runs.
        seed: noise seed; shard ``k`` draws its noise from ``(seed, k)``.
        rtol, atol, max_step: dopri5 settings (see :func:`flowsolve.ground_truth`).
        shard_size: paths per shard (solved together).

    Example:
        >>> from flowsolve.gaussian_mixture import GaussianMixtureFlow
        >>> store = TrajectoryStore(None, GaussianMixtureFlow.random(dim=4, components=2), shard_size=8)
        >>> len(store.load(16, progress=False))
        16
    """

    def __init__(
        self,
        path,
        model,
        *,
        sample_shape=None,
        dtype: torch.dtype = torch.float32,
        device="cpu",
        seed: int = 0,
        rtol: float = DEFAULT_RTOL,
        atol: float = DEFAULT_ATOL,
        max_step: float | None = DEFAULT_MAX_STEP,
        shard_size: int = 256,
    ):
        if sample_shape is None:
            sample_shape = getattr(model, "sample_shape", None)
            if sample_shape is None:
                raise ValueError(
                    "the model does not say what shape its samples have; pass sample_shape=(C, H, W) "
                    "(or set model.sample_shape)"
                )
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.model, self.device, self.dtype = model, torch.device(device), dtype
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.key = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "model": model_fingerprint(model, self.sample_shape, dtype, self.device),
            "sample_shape": list(self.sample_shape),
            "dtype": str(dtype).replace("torch.", ""),
            "seed": int(seed),
            "rtol": float(rtol),
            "atol": float(atol),
            "max_step": None if max_step is None else float(max_step),
            "shard_size": int(shard_size),
        }
        self.path = None if path is None else Path(path)
        self._memory: dict[int, dict] = {}
        if self.path is not None:
            context = distributed.current()
            if context.is_main:
                self._open_manifest()
            context.barrier()  # rank 0 creates the manifest; the others then check it
            if not context.is_main:
                self._open_manifest()

    def _open_manifest(self) -> None:
        manifest = self.path / "manifest.json"
        if manifest.exists():
            try:
                found = json.loads(manifest.read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise StoreMismatchError(f"{manifest} is unreadable ({error}); delete {self.path} to regenerate") from error
            if found.get("format") != STORE_FORMAT:
                raise StoreMismatchError(f"{self.path} is not a flowsolve trajectory store")
            if not isinstance(found.get("version"), int) or found["version"] > STORE_VERSION:
                raise StoreMismatchError(
                    f"{self.path} has store version {found.get('version')}; this flowsolve reads up to {STORE_VERSION}"
                )
            differing = sorted(k for k in self.key if found.get(k) != self.key[k])
            if differing:
                details = ", ".join(f"{k}: stored {found.get(k)!r}, requested {self.key[k]!r}" for k in differing)
                raise StoreMismatchError(
                    f"the trajectory store at {self.path} was made for another setting ({details}); "
                    "use another directory, or delete it to regenerate"
                )
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.path, suffix=".tmp")
            with os.fdopen(handle, "w") as stream:
                json.dump(self.key, stream, indent=1, sort_keys=True)
            os.replace(temporary, manifest)

    def _shard_path(self, shard: int) -> Path:
        return self.path / f"shard-{shard:05d}.pt"

    def _has(self, shard: int) -> bool:
        return shard in self._memory if self.path is None else self._shard_path(shard).exists()

    def available(self) -> int:
        """Number of paths already generated (contiguous from the first shard)."""
        shard = 0
        while self._has(shard):
            shard += 1
        return shard * self.key["shard_size"]

    def _generate(self, shard: int) -> dict:
        x0 = noise(self.key["seed"], shard, self.key["shard_size"], self.sample_shape, self.dtype).to(self.device)
        times, states, velocities, evaluations = solve_dense(
            self.model, x0, rtol=self.key["rtol"], atol=self.key["atol"], max_step=self.key["max_step"]
        )
        return {
            "model": self.key["model"],
            "x0": x0.cpu(),
            "times": times.cpu(),
            "states": states.transpose(0, 1).cpu(),
            "velocities": velocities.transpose(0, 1).cpu(),
            "evaluations": torch.tensor(float(evaluations)),
        }

    def ensure(self, count: int, progress: bool | None = None) -> None:
        """Generate shards until at least ``count`` paths exist (resuming after an interruption).

        Under torch.distributed, shard ``k`` is generated by rank ``k % world``.
        """
        context = distributed.current()
        shards = -(-count // self.key["shard_size"])
        missing = context.share([k for k in range(shards) if not self._has(k)], owner=0)
        if not missing:
            return
        mine = [k for k in missing if k % context.world == context.rank]
        with Progress(len(mine), f"ground truth (dopri5, rank {context.rank})" if context.active else "ground truth (dopri5)",
                      enabled=progress if context.is_main else False) as bar:
            for shard in mine:
                data = self._generate(shard)
                if self.path is None:
                    self._memory[shard] = data
                else:
                    atomic_torch_save(data, self._shard_path(shard))
                bar.update(nfe=float(data["evaluations"]))
        context.barrier()
        if self.path is None:
            for shard in missing:  # in-memory shards travel to every rank
                self._memory[shard] = context.share(self._memory.get(shard), owner=shard % context.world)
        absent = [k for k in missing if not self._has(k)]
        if absent:
            raise StoreMismatchError(
                f"ground-truth shards {absent} are missing from {self.path} after generation "
                f"(their ranks failed to write them); rerun to regenerate only those"
            )

    def _read(self, shard: int) -> dict:
        if self.path is None:
            return self._memory[shard]
        path = self._shard_path(shard)
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise StoreMismatchError(f"{path} is unreadable ({error}); delete the file to regenerate it") from error
        if data.get("model") != self.key["model"]:
            raise StoreMismatchError(f"{path} belongs to model {data.get('model')}, not {self.key['model']}")
        return data

    def load(self, count: int, *, start: int = 0, device=None, progress: bool | None = None) -> GroundTruth:
        """Paths ``[start, start + count)`` as a :class:`GroundTruth` (generated first if missing)."""
        self.ensure(start + count, progress)
        size = self.key["shard_size"]
        parts = []
        for shard in range(start // size, -(-(start + count) // size)):
            data = self._read(shard)
            lo, hi = max(start - shard * size, 0), min(start + count - shard * size, size)
            part = GroundTruth(
                data["x0"][lo:hi], data["times"].expand(hi - lo, -1), data["states"][lo:hi],
                data["velocities"][lo:hi], float(data["evaluations"]),
            )
            parts.append(part)
        return GroundTruth.concatenate(parts).to(device=device or self.device)
