"""torch.distributed: a 2-process fit (gloo, launched by torchrun) equals the 1-process fit."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from . import distributed_fit

SCRIPT = Path(distributed_fit.__file__)


def torchrun(tmp_path, *args, env=None, timeout=240):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT), *args]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "FLOWSOLVE_DIST_TIMEOUT": "60", **(env or {})}
    environment["PYTHONPATH"] = str(SCRIPT.parent.parent) + os.pathsep + environment.get("PYTHONPATH", "")
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment, cwd=tmp_path)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_processes_reach_the_parameters_of_one(tmp_path):
    store = tmp_path / "store"
    result = torchrun(tmp_path, str(tmp_path / "params.pt"), str(store))
    assert result.returncode == 0, result.stderr[-3000:]
    # Each rank wrote its own shards (6 shards of 16 paths, ranks alternate), readable by one process.
    assert sorted(p.name for p in store.glob("shard-*.pt")) == [f"shard-{k:05d}.pt" for k in range(6)]
    together = torch.load(tmp_path / "params.pt", weights_only=True)
    single = distributed_fit.run(str(store))  # reuses the shards: no new ground truth
    for name, value in single.params.items():
        torch.testing.assert_close(together[name], value.detach(), rtol=1e-9, atol=1e-12)
    history = json.loads((tmp_path / "params.pt.json").read_text())
    assert [h["val_rmse"] for h in history] == pytest.approx([h["val_rmse"] for h in single.metadata["history"]],
                                                            rel=1e-9)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_a_dying_rank_is_an_error_not_a_hang(tmp_path):
    result = torchrun(tmp_path, str(tmp_path / "params.pt"), str(tmp_path / "store"), env={"FAIL_RANK": "1"}, timeout=180)
    assert result.returncode != 0
    assert "rank 1 dies on purpose" in result.stderr
    assert not (tmp_path / "params.pt").exists()


@pytest.mark.parametrize("value", ["ten minutes", "0", "-5", "nan", "inf"])
def test_a_bad_timeout_variable_warns_and_falls_back(monkeypatch, value):
    import datetime

    from flowsolve.training import distributed

    monkeypatch.setenv("FLOWSOLVE_DIST_TIMEOUT", value)
    with pytest.warns(UserWarning, match=rf"FLOWSOLVE_DIST_TIMEOUT={value!r} is not a positive number of seconds"):
        assert distributed.timeout() == datetime.timedelta(seconds=600)
    monkeypatch.setenv("FLOWSOLVE_DIST_TIMEOUT", "42.5")
    assert distributed.timeout() == datetime.timedelta(seconds=42.5)


def test_a_bad_timeout_variable_does_not_stop_the_import():
    environment = {**os.environ, "FLOWSOLVE_DIST_TIMEOUT": "ten minutes", "OMP_NUM_THREADS": "1"}
    environment["PYTHONPATH"] = str(SCRIPT.parent.parent) + os.pathsep + environment.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", "import flowsolve.distributed, flowsolve.fit"],
                            capture_output=True, text=True, env=environment, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
