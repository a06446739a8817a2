"""A trajectory store never hands back data it cannot vouch for; its files honour the umask."""

import json
import os
import shutil
import stat

import pytest
import torch

from flowsolve.models.gaussian_mixture import GaussianMixtureFlow
from flowsolve.training.store import GroundTruthStore, StoreMismatchError

LOOSE = {"rtol": 1e-3, "atol": 1e-3, "shard_size": 4}


@pytest.fixture(scope="module")
def flow():
    return GaussianMixtureFlow.random(dim=2, components=2, seed=1)


def open_store(path, flow, **changes):
    return GroundTruthStore(path, flow, **{**LOOSE, **changes})


def assert_same_paths(found, expected):
    assert len(found) == len(expected)
    for name in ("x0", "times", "states", "velocities"):
        assert torch.equal(getattr(found, name), getattr(expected, name)), name


def fresh(flow, count=8, **changes):
    return open_store(None, flow, **changes).load(count, progress=False)


def flip_a_bit_inside(path, tensor):
    """Flip one bit of ``tensor``'s stored bytes in the file at ``path``."""
    raw = path.read_bytes()
    at = raw.find(tensor.contiguous().numpy().tobytes())
    assert at >= 0, "the tensor's bytes are not stored verbatim"
    corrupted = bytearray(raw)
    corrupted[at + 3] ^= 0x10
    path.write_bytes(bytes(corrupted))


def test_a_flipped_bit_in_a_shard_is_caught_and_the_shard_regenerated(tmp_path, flow):
    open_store(tmp_path, flow).load(8, progress=False)
    expected = fresh(flow)
    flip_a_bit_inside(tmp_path / "shard-00001.pt", expected.x0[4:8])
    with pytest.warns(UserWarning, match=r"shard-00001\.pt .*checksum.*regenerat"):
        found = open_store(tmp_path, flow).load(8, progress=False)
    assert_same_paths(found, expected)
    assert_same_paths(open_store(tmp_path, flow).load(8, progress=False), expected)  # repaired on disk


@pytest.mark.parametrize("damage", ["truncate", "swap", "foreign"])
def test_a_shard_that_does_not_belong_is_regenerated(tmp_path, flow, damage):
    open_store(tmp_path / "a", flow).load(8, progress=False)
    shard0, shard1 = tmp_path / "a" / "shard-00000.pt", tmp_path / "a" / "shard-00001.pt"
    if damage == "truncate":
        shard0.write_bytes(shard0.read_bytes()[:100])
    elif damage == "swap":
        shard0.write_bytes(shard1.read_bytes())
    else:  # the same shard of a store with another seed
        open_store(tmp_path / "b", flow, seed=5).load(4, progress=False)
        shutil.copy(tmp_path / "b" / "shard-00000.pt", shard0)
    with pytest.warns(UserWarning, match=r"shard-00000\.pt .*regenerat"):
        found = open_store(tmp_path / "a", flow).load(8, progress=False)
    assert_same_paths(found, fresh(flow))


@pytest.mark.parametrize(
    "change", [{}, {"seed": 1}, {"shard_size": 8}, {"dtype": torch.float64}, {"rtol": 1e-5, "atol": 1e-5}]
)
def test_shards_without_a_manifest_are_never_reused(tmp_path, flow, change):
    open_store(tmp_path, flow).load(8, progress=False)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(StoreMismatchError, match=r"no manifest\.json.*delete .*or pass another"):
        open_store(tmp_path, flow, **change).load(16, progress=False)


def edit_manifest(path, edit):
    manifest = json.loads((path / "manifest.json").read_text())
    manifest = edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "edit, reopen, complaint",
    [
        (lambda m: [m], {}, "not a JSON object"),
        (lambda m: {**m, "shard_size": 4.0}, {}, "shard_size"),
        (lambda m: {**m, "seed": False}, {}, "seed"),
        (lambda m: {**m, "comment": "hello"}, {}, "comment"),
        (lambda m: {**{k: v for k, v in m.items() if k != "atol"}, "a_tol": m["atol"]}, {}, "a_tol"),
        # The key edited to match another request no longer matches its own checksum (nor its shards).
        (lambda m: {**m, "seed": 1}, {"seed": 1}, "edited"),
    ],
)
def test_an_edited_manifest_is_refused(tmp_path, flow, edit, reopen, complaint):
    open_store(tmp_path, flow).load(8, progress=False)
    edit_manifest(tmp_path, edit)
    with pytest.raises(StoreMismatchError, match=complaint):
        open_store(tmp_path, flow, **reopen).load(8, progress=False)


def test_a_store_of_an_older_version_is_refused(tmp_path, flow):
    open_store(tmp_path, flow).load(4, progress=False)
    old = {"format": "flowsolve.trajectories", "version": 1, "model": "0123456789abcdef", "sample_shape": [2],
           "dtype": "float32", "seed": 0, "rtol": 1e-3, "atol": 1e-3, "max_step": 0.05, "shard_size": 4}
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    with pytest.raises(StoreMismatchError, match=r"store version 1.*delete"):
        open_store(tmp_path, flow)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_store_files_honour_the_umask(tmp_path, flow, umask, mode):
    previous = os.umask(umask)
    try:
        open_store(tmp_path / "store", flow).load(8, progress=False)
    finally:
        os.umask(previous)
    files = sorted((tmp_path / "store").iterdir())
    assert [f.name for f in files] == ["manifest.json", "shard-00000.pt", "shard-00001.pt"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path.name


def test_the_atomic_writer_honours_the_umask_and_leaves_nothing_on_failure(tmp_path):
    from flowsolve.core.atomic import atomic_write

    previous = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.txt", b"hello")
        atomic_write(tmp_path / "b.pt", lambda stream: torch.save({"x": torch.ones(2)}, stream))
        with pytest.raises(RuntimeError, match="disk full"):
            atomic_write(tmp_path / "a.txt", lambda stream: (stream.write(b"partial"), _fail("disk full")))
    finally:
        os.umask(previous)
    assert (tmp_path / "a.txt").read_bytes() == b"hello"  # the old content survives a failed write
    assert torch.equal(torch.load(tmp_path / "b.pt", weights_only=True)["x"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.pt"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {0o640}


def _fail(message):
    raise RuntimeError(message)
