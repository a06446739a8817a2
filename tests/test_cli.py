"""The command line, end to end on the analytic Gaussian-mixture model (registered as gmm-fm-ot)."""

import re

import numpy as np
import pytest
import torch

import flowsolve
from flowsolve.cli import main


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWSOLVE_CACHE", str(tmp_path / "cache"))


def test_fit_sample_eval_round_trip(tmp_path, capsys):
    solver_file = tmp_path / "s.pt"
    assert main(["fit", "gmm-fm-ot", "--nfe", "6", "--iterations", "30", "--quiet", "-o", str(solver_file)]) == 0
    assert "validation RMSE" in capsys.readouterr().out
    assert flowsolve.load(solver_file).nfe == 6
    assert main(["sample", str(solver_file), "gmm-fm-ot", "-n", "5", "-o", str(tmp_path / "x.npy")]) == 0
    assert np.load(tmp_path / "x.npy").shape == (5, 64)
    assert main(["eval", "gmm-fm-ot", str(solver_file), "--nfe", "4,6", "--test", "64", "--quiet",
                 "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "dpm-solver++(2m)" in out and "bespoke scale-time midpoint" in out
    edm_row = next(line for line in out.splitlines() if line.startswith("| edm-heun"))
    assert "(3 NFE)" in edm_row and "(5 NFE)" in edm_row  # Heun's last step is Euler: 2k - 1 NFE
    assert {p.suffix for p in (tmp_path / "report").iterdir()} == {".md", ".csv", ".png"}


def test_solver_of_another_model_is_refused(tmp_path, capsys):
    solver_file = tmp_path / "s.pt"
    main(["fit", "gmm-fm-ot", "--nfe", "4", "--iterations", "5", "--quiet", "-o", str(solver_file)])
    assert main(["sample", str(solver_file), "gmm-vp", "-o", str(tmp_path / "x.npy")]) == 1
    assert "was fitted to model" in capsys.readouterr().err


def test_errors_are_messages_with_exit_codes(tmp_path, capsys):
    assert main(["fit", "no-such-model", "--nfe", "4"]) == 1
    assert "unknown model 'no-such-model'; registered: [" in capsys.readouterr().err
    assert main(["fit", "gmm-fm-ot", "--nfe", "5", "--quiet"]) == 1
    assert "does not split into whole steps" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "missing.pt"), "gmm-fm-ot"]) == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "gmm-fm-ot", "--nfe", "four"])
    assert exit_info.value.code == 2


def test_demo_writes_table_plot_and_samples(tmp_path, capsys):
    assert main(["demo", "--model", "gmm-fm-ot", "--nfe", "6", "--iterations", "40", "--test", "64", "--quiet",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| bespoke scale-time midpoint |" in out and "| learned time-only midpoint |" in out
    assert "| method | NFE 4 | NFE 6 | NFE 8 | NFE 10 | NFE 12 | NFE 16 |" in out  # the baselines over 4..16
    assert "| dpm-solver++(3m) |" in out and "| ground truth |" not in out  # no quality metric for gmm
    assert re.search(r"demo finished in \d+\.\ds", out)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"demo-gmm-fm-ot.png", "demo-gmm-fm-ot-samples.png", "demo-gmm-fm-ot.md"} <= names
    assert "demo-gmm-fm-ot-classes.png" not in names


class TinyConditionalNet(torch.nn.Module):
    """``net(x, t, labels)`` of 4x4 one-channel "images": a smooth pull towards each label's mean (3 classes + null)."""

    sample_shape = (1, 4, 4)

    def __init__(self):
        super().__init__()
        self.register_buffer("means", torch.linspace(-0.8, 0.8, 4 * 16).reshape(4, 1, 4, 4))

    def forward(self, x, t, labels):
        return torch.tanh(self.means[labels] - x) * (1 + t.reshape(-1, 1, 1, 1))


CONDITIONAL = flowsolve.adapt(flowsolve.ClassifierFreeGuidance(
    TinyConditionalNet(), 1.0, null_condition=torch.tensor([3]), distribution=flowsolve.Labels(3)), "fm-ot")


class FakeQuality:
    """Stands in for the animal classifier: an "FD" and "accuracy" computed from the samples."""

    def __init__(self):
        self.calls = []

    def __call__(self, samples, labels):
        self.calls.append(None if labels is None else labels.tolist())
        return {"fd": float(samples.square().mean()), "accuracy": 0.75, "per_class_accuracy": [0.5, 1.0], "n": 8}

    def data_floor_fd(self, n):
        return 0.125


def test_demo_of_a_conditional_model_reports_quality_and_a_class_grid(tmp_path, capsys, monkeypatch):
    quality = FakeQuality()
    monkeypatch.setattr("flowsolve.cli.demo.quality_for", lambda spec: quality)
    assert main(["demo", "--model", f"{__name__}:CONDITIONAL", "--nfe", "4", "--baseline-nfe", "4", "--iterations", "3", "--quiet",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # The conditional settings: 8 test paths, 16 + 8 fit paths, one scale-time fit, dopri5 at 1e-4.
    assert "ground truth for 8 test paths" in out and "fitted scale-time midpoint at NFE 4" in out
    assert "| method: RMSE / PSNR / FD / accuracy | reference | NFE 4 |" in out
    truth = next(line for line in out.splitlines() if line.startswith("| ground truth |"))
    assert " / 75% (" in truth and "(0.125)" in out
    assert quality.calls and all(len(labels) == 8 for labels in quality.calls)  # scored with the paths' labels
    stem = f"demo-{__name__}_CONDITIONAL"
    header = (tmp_path / f"{stem}.csv").read_text().splitlines()[0]
    assert header == "method,budget,nfe,rmse,psnr,fd,accuracy,n"  # then the other numbers the metric returns
    assert {f"{stem}-classes.png", f"{stem}-samples.png", f"{stem}.png"} <= {p.name for p in tmp_path.iterdir()}
    stores = [p.name for p in (tmp_path / "cache" / "stores").iterdir()]
    assert len(stores) == 2 and all(name.endswith("-tol0.0001-shard8") for name in stores)


def test_eval_reports_the_quality_metric_beside_rmse(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("flowsolve.cli.evaluate.quality_for", lambda spec: FakeQuality())
    assert main(["eval", "gmm-fm-ot", "--nfe", "4,6", "--test", "16", "--quiet", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "| method: RMSE / PSNR / FD / accuracy | reference | NFE 4 | NFE 6 |" in out
    assert "| ground truth |" in out and "FD-classifier of 16 samples" in out
    assert (tmp_path / "r" / "eval-gmm-fm-ot.csv").read_text().startswith("method,budget,nfe,rmse,psnr,fd,accuracy")


def test_the_quality_metric_is_looked_up_for_the_animals_models_only(monkeypatch, capsys):
    from flowsolve.cli.evaluate import quality_for
    from flowsolve.core.errors import FlowsolveFileNotFoundError
    from flowsolve.training.quality import SampleQuality

    sentinel = object()
    monkeypatch.setattr(SampleQuality, "animals", classmethod(lambda cls: sentinel))
    assert quality_for("animals-fm-ot") is sentinel and quality_for("animals-eps-vp") is sentinel
    assert quality_for("gmm-fm-ot") is None and quality_for("digits-fm-ot") is None
    assert quality_for("animals-x:Model") is None  # module:object models are not looked up

    def missing(cls):
        raise FlowsolveFileNotFoundError("the animal-mnist classifier weights are missing")

    monkeypatch.setattr(SampleQuality, "animals", classmethod(missing))
    assert quality_for("animals-fm-ot") is None
    assert "no FD-classifier for animals-fm-ot" in capsys.readouterr().err


def test_fits_of_different_settings_do_not_share_a_checkpoint(tmp_path, capsys):
    for nfe in ("4", "6"):
        assert main(["fit", "gmm-fm-ot", "--nfe", nfe, "--iterations", "5", "--quiet", "-o", str(tmp_path / "s.pt")]) == 0
    assert len(list((tmp_path / "cache" / "checkpoints").glob("*.ckpt"))) == 2


def test_fit_a_non_stationary_solver_from_dpm_solver_and_evaluate_it(tmp_path, capsys):
    solver_file = tmp_path / "ns.pt"
    assert main(["fit", "gmm-vp", "--nfe", "4", "--family", "non-stationary", "--init", "dpm-solver++(2m)",
                 "--iterations", "20", "--lr", "0.01", "--quiet", "-o", str(solver_file)]) == 0
    assert "fitted non-stationary at NFE 4" in capsys.readouterr().out
    solver = flowsolve.load(solver_file)
    assert isinstance(solver, flowsolve.NonStationarySolver)
    assert solver.metadata["fit"]["init"] == "dpm-solver++(2m)" and solver.metadata["fit"]["loss"]["name"] == "rmse"
    assert main(["eval", "gmm-vp", str(solver_file), "--nfe", "4", "--test", "64", "--quiet",
                 "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "bespoke non-stationary (ns.pt)" in out and "dpm-solver++(2m) best grid" in out
    assert main(["fit", "gmm-vp", "--nfe", "4", "--family", "non-stationary", "--loss", "rmse-bound", "--quiet"]) == 1
    assert "has no per-step map" in capsys.readouterr().err


def test_fit_starts_from_a_solver_file_or_a_schedule(tmp_path, capsys):
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    assert main(["fit", "gmm-vp", "--nfe", "4", "--init", "log-snr+ddim", "--iterations", "5", "--quiet", "-o", str(first)]) == 0
    assert flowsolve.load(first).metadata["fit"]["init"] == "log-snr+ddim"
    assert main(["fit", "gmm-vp", "--nfe", "6", "--init", str(first), "--iterations", "5", "--quiet", "-o", str(second)]) == 0
    assert flowsolve.load(second).metadata["fit"]["init"].startswith("nfe4-")


def test_a_transform_with_a_non_stationary_family_is_refused(capsys):
    assert main(["fit", "gmm-vp", "--nfe", "4", "--family", "non-stationary", "--transform", "time-only", "--quiet"]) == 1
    assert "--transform belongs to transform x base families" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["sample", "s.pt", "gmm-fm-ot", "-n", "0"], r"argument -n: expected a positive integer, got '0'"),
    (["--threads", "0", "plugins"], r"argument --threads: expected a positive integer, got '0'"),
    (["eval", "gmm-fm-ot", "--test", "0"], r"argument --test: expected a positive integer, got '0'"),
    (["fit", "gmm-fm-ot", "--nfe", "-2"], r"argument --nfe: expected a positive integer, got '-2'"),
    (["fit", "gmm-fm-ot", "--nfe", "4", "--iterations", "ten"], r"argument --iterations: expected a positive integer"),
    (["fit", "gmm-fm-ot", "--nfe", "4", "--batch-size", "0"], r"argument --batch-size: expected a positive integer"),
    (["fit", "gmm-fm-ot", "--nfe", "4", "--lr", "inf"], r"argument --lr: expected a positive finite number .*'inf'"),
    (["fit", "gmm-fm-ot", "--nfe", "4", "--lr", "nan"], r"argument --lr: expected a positive finite number"),
    (["fit", "gmm-fm-ot", "--nfe", "4", "--sample-shape", "3,x"], r"argument --sample-shape: expected"),
    (["fit", "gmm-fm-ot", "--nfe", "4", "--dtype", "int8"], r"argument --dtype: invalid choice"),
    (["fit", "gmm-fm-ot", "--nfe", "4", "--device", "gpu0"], r"argument --device: expected a torch device"),
    (["demo", "--iterations", "0"], r"argument --iterations: expected a positive integer"),
    (["demo", "--test", "-1"], r"argument --test: expected a positive integer"),
    (["demo", "--train", "0"], r"argument --train: expected a positive integer"),
    (["demo", "--baseline-nfe", "4,x"], r"argument --baseline-nfe: expected comma-separated integers"),
    (["sample", "s.pt", "gmm-fm-ot", "-o", "x.jpg"], r"argument -o/--output: expected a file name ending in .png or .npy"),
])
def test_every_number_is_checked_by_the_parser(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_eval_checks_its_solver_files_before_any_ground_truth(tmp_path, capsys):
    assert main(["eval", "gmm-fm-ot", str(tmp_path / "missing.pt"), "--test", "64", "--quiet"]) == 1
    assert "no solver file at" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "stores").exists()


class ShapelessField(torch.nn.Module):
    """A ``module:object`` model without ``sample_shape``: u(t, x) = -w x."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, t, x):
        return -self.w * x


def test_a_model_without_sample_shape_with_device_and_dtype(tmp_path, capsys):
    solver_file, samples = tmp_path / "s.pt", tmp_path / "x.npy"
    model = f"{__name__}:ShapelessField"
    assert main(["fit", model, "--nfe", "4", "--iterations", "3", "--quiet", "-o", str(solver_file)]) == 1
    assert "--sample-shape" in capsys.readouterr().err
    options = ["--sample-shape", "3", "--dtype", "float64", "--device", "cpu"]
    assert main(["fit", model, *options, "--nfe", "4", "--iterations", "3", "--quiet", "-o", str(solver_file)]) == 0
    assert main(["sample", str(solver_file), model, *options, "-n", "2", "-o", str(samples)]) == 0
    assert np.load(samples).shape == (2, 3) and np.load(samples).dtype == np.float64
    assert main(["eval", model, str(solver_file), *options, "--nfe", "4", "--test", "16", "--quiet",
                 "--out", str(tmp_path / "report")]) == 0


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only flowsolve's own errors become messages: any other exception propagates."""
    def broken_registry():
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr("flowsolve.plugins.registry.registry", broken_registry)
    with pytest.raises(ValueError, match="a bug, not bad input"):
        main(["plugins"])


def test_fit_passes_only_the_options_given(monkeypatch, capsys):
    """fit's defaults live in fit: the command line passes iterations, batch size, lr and loss only when given."""
    calls = []

    def interrupted_fit(self, model, nfe, **options):
        calls.append(options)
        raise KeyboardInterrupt

    monkeypatch.setattr(flowsolve.ParametricFamily, "fit", interrupted_fit)
    assert main(["fit", "gmm-fm-ot", "--nfe", "4", "--quiet"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert main(["fit", "gmm-fm-ot", "--nfe", "4", "--iterations", "7", "--lr", "0.01", "--loss", "rmse",
                 "--quiet"]) == 130
    assert not {"iterations", "batch_size", "lr", "loss"} & set(calls[0])
    assert calls[1]["iterations"] == 7 and calls[1]["lr"] == 0.01 and "batch_size" not in calls[1]
    assert calls[1]["loss"].name == "rmse"
    # A 15-minute budget unless told otherwise; `none` lifts it; low precision only when asked.
    assert calls[0]["max_minutes"] == 15 and calls[0]["autocast"] is None
    assert main(["fit", "gmm-fm-ot", "--nfe", "4", "--minutes", "none", "--autocast", "bfloat16", "--quiet"]) == 130
    assert calls[2]["max_minutes"] is None and calls[2]["autocast"] is torch.bfloat16
    with pytest.raises(SystemExit):
        main(["fit", "gmm-fm-ot", "--nfe", "4", "--minutes", "-1"])
    # Several starts, comma-separated: fit chooses among them on validation.
    assert main(["fit", "gmm-fm-ot", "--nfe", "4", "--init", "log-snr, uniform", "--quiet"]) == 130
    assert calls[3]["init"] == ["log-snr", "uniform"]


def test_a_module_object_a_plugin_recognises_is_adapted(monkeypatch):
    """`flowsolve fit module:pipe` without --kind: the plugin that recognises the object adapts it."""
    import sys
    import types

    from flowsolve.cli.model_loading import resolve_model
    from flowsolve.models.adapters import Adapter

    class Declared(torch.nn.Module):
        flowsolve_adapter = ("fm-ot", {})
        sample_shape = (3,)

        def forward(self, x, t):
            return -x

    module = types.ModuleType("declared_models")
    module.net = Declared()
    module.plain = lambda t, x: -x
    monkeypatch.setitem(sys.modules, "declared_models", module)
    assert isinstance(resolve_model("declared_models:net"), Adapter)
    assert resolve_model("declared_models:plain") is module.plain
