"""A trajectory store: ground truth generated once, on disk, reused by every fit of one model.

Layout: ``manifest.json`` and one ``shard-NNNNN.pt`` per batch of paths, each written
atomically (files get the usual ``0o666 & ~umask`` permissions). Shards are generated in
order; an interrupted generation resumes at the first missing shard.

What is trusted, and what is not:

- The manifest is the store's key (format, version, model fingerprint, sample shape, dtype,
  noise seed, dopri5 tolerances, shard size) plus ``key_sha256``, the SHA-256 of those
  fields. It is validated as data: a JSON object with exactly these fields, of these types,
  of this format and version, whose ``key_sha256`` matches; anything else, or a key other
  than the one requested, raises :class:`StoreMismatchError`. An older store version is
  refused too (its shards carry no checksums): delete the directory to regenerate it.
- A directory holding shards but no manifest is refused: nothing says what they are.
- Every shard records the ``key_sha256`` of its store, its index, its number of paths and
  the SHA-256 of its contents. A shard that is unreadable, fails its checksum or belongs to
  another store or index is never used: since its noise is reproducible from
  ``(seed, index)``, it is regenerated (with a warning) and rewritten in place.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from flowsolve.core.atomic import atomic_write
from flowsolve.core.errors import FlowsolveValueError
from flowsolve.core.fingerprint import model_fingerprint
from flowsolve.models.conditioning import ConditionDistribution, bind, check_conditions, distribution_of
from flowsolve.training import distributed
from flowsolve.training.ground_truth import (
    DEFAULT_ATOL,
    DEFAULT_MAX_STEP,
    DEFAULT_RTOL,
    GroundTruth,
    network_end,
    solve_dense,
)
from flowsolve.training.progress import Progress

STORE_FORMAT = "flowsolve.trajectories"
SHARD_FORMAT = "flowsolve.trajectory-shard"
CONDITION_SEED_SALT = 0x5EED_C0DE  # conditions and noise of a shard come from different generators
STORE_VERSION = 2  # 2: checksummed shards that carry their store key; a validated, self-hashed manifest

# The manifest's fields and their types ("shape": a list of ints; None: JSON null allowed).
MANIFEST_FIELDS = {
    "format": (str,), "version": (int,), "model": (str,), "sample_shape": ("shape",), "dtype": (str,),
    "seed": (int,), "rtol": (float,), "atol": (float,), "max_step": (float, None), "shard_size": (int,),
    "key_sha256": (str,),
}
# Present only where they apply (conditional paths; a network that stops before t = 1), so other keys are unchanged.
OPTIONAL_MANIFEST_FIELDS = {"conditions": (dict,), "ends_at": (float,)}
SHARD_FIELDS = {"format", "version", "store", "index", "count", "tensors", "sha256"}
CONDITION_PREFIX = "condition."  # shard tensor "condition.labels" holds the paths' "labels"
SHARD_TENSORS = {"x0", "times", "states", "velocities", "evaluations"}


DEFAULT_SHARD_SIZE = 256  # paths solved together and kept in one file


class StoreMismatchError(FlowsolveValueError):
    """The store on disk belongs to another model or setting, or is unreadable."""


def noise(seed: int, shard: int, count: int, sample_shape, dtype) -> torch.Tensor:
    """The noise of one shard: reproducible from ``(seed, shard)`` on any device."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + shard)
    return torch.randn((count, *sample_shape), generator=generator, dtype=torch.float64).to(dtype)


def key_digest(key: dict) -> str:
    """SHA-256 of a store key (the manifest without its ``key_sha256``)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _has_type(value, kinds) -> bool:
    for kind in kinds:
        if kind is None and value is None:
            return True
        if kind == "shape" and isinstance(value, list) and all(_has_type(d, (int,)) for d in value):
            return True
        if isinstance(kind, type) and isinstance(value, kind) and not isinstance(value, bool):
            return True
    return False


def validate_manifest(found, where) -> dict:
    """``found`` (parsed JSON) as a current store key, or :class:`StoreMismatchError` saying what is wrong."""
    fix = f"delete {where} to regenerate the store, or pass another path"
    if not isinstance(found, dict):
        raise StoreMismatchError(f"{where}/manifest.json is not a JSON object (found {type(found).__name__}); {fix}")
    if found.get("format") != STORE_FORMAT:
        raise StoreMismatchError(f"{where} is not a flowsolve trajectory store (format {found.get('format')!r}); {fix}")
    version: Any = found.get("version")
    if not _has_type(version, (int,)) or version != STORE_VERSION:
        newer = _has_type(version, (int,)) and version > STORE_VERSION
        raise StoreMismatchError(
            f"{where} has store version {version!r}; this flowsolve reads version {STORE_VERSION} only: "
            + ("upgrade flowsolve to read it" if newer else f"{fix} (older stores carry no checksums)")
        )
    fields = {**MANIFEST_FIELDS, **OPTIONAL_MANIFEST_FIELDS}
    missing, unexpected = sorted(set(MANIFEST_FIELDS) - set(found)), sorted(set(found) - set(fields))
    if missing or unexpected:
        found_wrong = [f"{label} fields {names}" for label, names in (("missing", missing), ("unexpected", unexpected))
                       if names]
        raise StoreMismatchError(f"{where}/manifest.json has {' and '.join(found_wrong)}; {fix}")
    wrong = [f"{name} = {value!r}" for name, value in found.items() if not _has_type(value, fields[name])]
    if wrong:
        raise StoreMismatchError(f"{where}/manifest.json has fields of the wrong type: {', '.join(wrong)}; {fix}")
    key = {name: value for name, value in found.items() if name != "key_sha256"}
    if key_digest(key) != found["key_sha256"]:
        raise StoreMismatchError(
            f"{where}/manifest.json was edited: its fields no longer match their key_sha256, so its shards "
            f"cannot be trusted; {fix}"
        )
    return key


def _shard_checksum(header: dict, tensors: dict) -> str:
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


class GroundTruthStore:
    """Ground-truth paths of one model, keyed so that a mismatched store is never reused.

    Args:
        path: directory on disk (its manifest and shards are validated as the module docstring
            describes), or ``None`` to keep the shards in memory only.
        model: the velocity field.
        sample_shape: shape of one sample, e.g. ``(3, 32, 32)``; default ``model.sample_shape``.
        dtype, device: where the model runs.
        seed: noise seed; shard ``k`` draws its noise from ``(seed, k)``.
        rtol, atol, max_step: dopri5 settings (see :func:`flowsolve.ground_truth`).
        shard_size: paths per shard (solved together).
        conditions: the :class:`~flowsolve.ConditionDistribution` each path's conditions are
            drawn from (reproducibly from ``(seed, k)``, independently of the noise) and stored
            with it; default: the model's ``condition_distribution`` (``None``: unconditional).

    Example:
        >>> from flowsolve.models.gaussian_mixture import GaussianMixtureFlow
        >>> store = GroundTruthStore(None, GaussianMixtureFlow.random(dim=4, components=2), shard_size=8)
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
        shard_size: int = DEFAULT_SHARD_SIZE,
        conditions: ConditionDistribution | None = None,
    ):
        if sample_shape is None:
            sample_shape = getattr(model, "sample_shape", None)
            if sample_shape is None:
                raise FlowsolveValueError(
                    "the model does not say what shape its samples have; pass sample_shape=(C, H, W) "
                    "(or set model.sample_shape)"
                )
        if shard_size < 1:
            raise FlowsolveValueError(f"shard_size must be >= 1, got {shard_size}")
        self.model, self.device, self.dtype = model, torch.device(device), dtype
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.key: dict[str, Any] = {
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
        ending = network_end(model)
        if ending is not None:  # solved to the network's end, then denoised (not through its continuation)
            self.key["ends_at"] = float(ending[0])
        self.conditions = conditions if conditions is not None else distribution_of(model)
        if self.conditions is not None:
            self.key["conditions"] = self.conditions.to_dict()
        self.digest = key_digest(self.key)  # every shard on disk records it
        self.path = None if path is None else Path(path)
        self._memory: dict[int, dict] = {}
        if self.path is not None:
            context = distributed.current()
            if context.is_main:
                self._open_manifest()
            context.barrier()  # rank 0 creates the manifest; the others then check it
            if not context.is_main:
                self._open_manifest()

    @property
    def _directory(self) -> Path:
        """The store's directory; only the code paths of an on-disk store (``path`` given) ask for it."""
        if self.path is None:
            raise RuntimeError("an in-memory GroundTruthStore has no directory")
        return self.path

    def _open_manifest(self) -> None:
        manifest = self._directory / "manifest.json"
        if manifest.exists():
            self._check_manifest(manifest)
        elif any(self._directory.glob("shard-*.pt")):
            raise StoreMismatchError(
                f"{self.path} holds ground-truth shards but no manifest.json, so nothing says which model and "
                f"settings they belong to; delete the directory to regenerate them, or pass another path"
            )
        else:
            text = json.dumps({**self.key, "key_sha256": self.digest}, indent=1, sort_keys=True)
            atomic_write(manifest, text.encode())

    def _check_manifest(self, manifest: Path) -> None:
        try:
            found = json.loads(manifest.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise StoreMismatchError(
                f"{manifest} is unreadable ({error}); delete {self.path} to regenerate the store, or pass another path"
            ) from error
        stored = validate_manifest(found, self.path)
        differing = sorted(k for k in set(self.key) | set(stored) if stored.get(k) != self.key.get(k))
        if differing:
            details = ", ".join(f"{k}: stored {stored.get(k)!r}, requested {self.key.get(k)!r}" for k in differing)
            raise StoreMismatchError(
                f"the trajectory store at {self.path} was made for another setting ({details}); "
                "use another directory, or delete it to regenerate"
            )

    def _shard_path(self, shard: int) -> Path:
        return self._directory / f"shard-{shard:05d}.pt"

    def _has(self, shard: int) -> bool:
        return shard in self._memory if self.path is None else self._shard_path(shard).exists()

    def available(self) -> int:
        """Number of paths already generated (contiguous from the first shard)."""
        shard = 0
        while self._has(shard):
            shard += 1
        return shard * self.key["shard_size"]

    def _generate(self, shard: int) -> dict:
        """The tensors of one shard, solved from its reproducible noise."""
        x0 = noise(self.key["seed"], shard, self.key["shard_size"], self.sample_shape, self.dtype).to(self.device)
        conditions = self._draw_conditions(shard)
        field = bind(self.model, {k: v.to(self.device) for k, v in conditions.items()})
        times, states, velocities, evaluations = solve_dense(
            field, x0, rtol=self.key["rtol"], atol=self.key["atol"], max_step=self.key["max_step"]
        )
        return {
            "x0": x0.cpu(),
            "times": times.cpu(),
            "states": states.transpose(0, 1).contiguous().cpu(),
            "velocities": velocities.transpose(0, 1).contiguous().cpu(),
            "evaluations": torch.tensor(float(evaluations)),
            **{CONDITION_PREFIX + k: v.cpu() for k, v in conditions.items()},
        }

    def _draw_conditions(self, shard: int) -> dict[str, torch.Tensor]:
        """The conditions of one shard's paths: reproducible from ``(seed, shard)``, independent of its noise."""
        if self.conditions is None:
            return {}
        generator = torch.Generator().manual_seed((self.key["seed"] * 1_000_003 + shard) ^ CONDITION_SEED_SALT)
        drawn = self.conditions.sample(self.key["shard_size"], generator)
        if set(drawn) != set(self.conditions.keys):
            raise FlowsolveValueError(f"{self.conditions!r} drew {sorted(drawn)}, not its keys {list(self.conditions.keys)}")
        return check_conditions(drawn, self.key["shard_size"])

    def _tensor_names(self) -> set[str]:
        keys = () if self.conditions is None else self.conditions.keys
        return SHARD_TENSORS | {CONDITION_PREFIX + k for k in keys}

    def _shard_header(self, shard: int) -> dict:
        return {"format": SHARD_FORMAT, "version": STORE_VERSION, "store": self.digest, "index": shard,
                "count": self.key["shard_size"]}

    def _write(self, shard: int, tensors: dict) -> None:
        header = self._shard_header(shard)
        payload = {**header, "tensors": tensors, "sha256": _shard_checksum(header, tensors)}
        atomic_write(self._shard_path(shard), lambda stream: torch.save(payload, stream))

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
                    self._write(shard, data)
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
        """The tensors of one shard; a shard on disk that cannot be vouched for is regenerated."""
        if self.path is None:
            return self._memory[shard]
        path = self._shard_path(shard)
        problem: str | None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated, not a torch archive, foreign pickle
            problem = f"is unreadable ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
        else:
            try:
                problem = self._shard_problem(shard, payload)
            except Exception as error:  # fields of unexpected types (a crafted or garbled file)
                problem = f"is malformed ({type(error).__name__}: {error})"
            if problem is None:
                return payload["tensors"]
        warnings.warn(f"{path} {problem}; regenerating it from noise seed {self.key['seed']}", stacklevel=3)
        tensors = self._generate(shard)
        self._write(shard, tensors)
        return tensors

    def _shard_problem(self, shard: int, payload) -> str | None:
        """Why ``payload`` is not shard ``shard`` of this store, or ``None`` when it is."""
        if not isinstance(payload, dict) or set(payload) != SHARD_FIELDS:
            return f"is not a flowsolve trajectory shard of store version {STORE_VERSION}"
        header = {name: payload[name] for name in ("format", "version", "store", "index", "count")}
        if header["format"] != SHARD_FORMAT or header["version"] != STORE_VERSION:
            return (f"is a {header['format']!r} file of version {header['version']!r}, "
                    f"not a version {STORE_VERSION} shard")
        if header["store"] != self.digest:
            return "belongs to another store (its store key differs from manifest.json)"
        if header["index"] != shard or header["count"] != self.key["shard_size"]:
            return (f"is shard {header['index']!r} of {header['count']!r} paths, "
                    f"not shard {shard} of {self.key['shard_size']}")
        tensors = payload["tensors"]
        if (not isinstance(tensors, dict) or set(tensors) != self._tensor_names()
                or not all(isinstance(t, torch.Tensor) for t in tensors.values())):
            return f"does not hold the tensors {sorted(self._tensor_names())}"
        if _shard_checksum(header, tensors) != payload["sha256"]:
            return "failed its checksum (the file is corrupt)"
        expected = (self.key["shard_size"], *self.sample_shape)
        if tuple(tensors["x0"].shape) != expected or tensors["x0"].dtype != self.dtype:
            x0 = tensors["x0"]
            return f"holds noise of shape {tuple(x0.shape)} ({x0.dtype}), not {expected} ({self.dtype})"
        return None

    def load(self, count: int, *, start: int = 0, device=None, progress: bool | None = None) -> GroundTruth:
        """Paths ``[start, start + count)`` as a :class:`GroundTruth` (generated first if missing)."""
        self.ensure(start + count, progress)
        size = self.key["shard_size"]
        parts = []
        for shard in range(start // size, -(-(start + count) // size)):
            data = self._read(shard)
            lo, hi = max(start - shard * size, 0), min(start + count - shard * size, size)
            conditions = {name[len(CONDITION_PREFIX):]: value[lo:hi] for name, value in data.items()
                          if name.startswith(CONDITION_PREFIX)}
            part = GroundTruth(
                data["x0"][lo:hi], data["times"].expand(hi - lo, -1), data["states"][lo:hi],
                data["velocities"][lo:hi], float(data["evaluations"]), conditions or None,
            )
            parts.append(part)
        return GroundTruth.concatenate(parts).to(device=device or self.device)


def __getattr__(name: str):
    if name == "TrajectoryStore":  # renamed in this release; the old name goes in the next one
        warnings.warn("TrajectoryStore is now GroundTruthStore", DeprecationWarning, stacklevel=2)
        return GroundTruthStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
