"""The comparison report: table, CSV, plot and image grids, with and without the quality metric."""

import csv

import matplotlib.colors
import pytest
import torch

from flowsolve.core.errors import FlowsolveValueError
from flowsolve.training.evaluation import (
    PALETTE,
    as_images,
    class_grid,
    image_grid,
    method_styles,
    plot,
    save_rows,
    table,
    write_csv,
)

NFES = [4, 6, 8]


def report_rows(quality: bool = True) -> list[dict]:
    """Rows as :func:`compare` makes them: a ground-truth row (with quality), baselines, a learned solver."""
    extra = (lambda nfe: {"fd": 40.0 / nfe, "accuracy": 0.5 + nfe / 20}) if quality else (lambda nfe: {})
    rows = [{"method": "ground truth", "budget": None, "nfe": 356.0, "rmse": 0.0, "psnr": float("inf"),
             "fd": 1.25, "accuracy": 0.9375}] if quality else []
    for k, method in enumerate(["euler", "midpoint", "edm-heun"]):
        for nfe in NFES:
            spent = nfe - 1 if method == "edm-heun" else nfe
            rows.append({"method": method, "budget": nfe, "nfe": spent, "rmse": 0.1 * (k + 1) / nfe,
                         "psnr": 20.0 + nfe + k, **extra(nfe + k)})
    rows.append({"method": "bespoke scale-time midpoint", "budget": 8, "nfe": 8, "rmse": 0.004, "psnr": 40.0,
                 **extra(16)})
    return rows


def test_table_shows_quality_columns_and_the_ground_truth_line():
    text = table(report_rows(), NFES)
    header, _, *lines = text.splitlines()
    assert header == "| method: RMSE / PSNR / FD / accuracy | reference | NFE 4 | NFE 6 | NFE 8 |"
    truth = next(line for line in lines if line.startswith("| ground truth |"))
    assert "0.00000 / inf / 1.25 / 94% (356 NFE)" in truth and truth.count("—") == 3
    euler = next(line for line in lines if line.startswith("| euler |"))
    assert euler.split(" | ")[1] == "" and "0.02500 / 24.0 / 10 / 70%" in euler
    assert "(7 NFE)" in next(line for line in lines if line.startswith("| edm-heun |"))


def test_table_without_quality_keeps_its_plain_layout():
    text = table(report_rows(quality=False), NFES)
    assert text.splitlines()[0] == "| method | NFE 4 | NFE 6 | NFE 8 |"
    assert "| euler | 0.02500 / 24.0 | 0.01667 / 26.0 | 0.01250 / 28.0 |" in text


def test_csv_header_is_the_union_of_the_keys_in_a_stable_order(tmp_path):
    rows = report_rows()
    rows[-1] = {**rows[-1], "fit_seconds": 3.5}  # an extra key of one row only
    write_csv(rows, tmp_path / "r.csv")
    with open(tmp_path / "r.csv") as stream:
        read = list(csv.DictReader(stream))
    assert list(read[0]) == ["method", "budget", "nfe", "rmse", "psnr", "fd", "accuracy", "fit_seconds"]
    assert read[0]["method"] == "ground truth" and read[0]["budget"] == "" and read[0]["fd"] == "1.25"
    assert read[1]["fit_seconds"] == "" and read[-1]["fit_seconds"] == "3.5"
    write_csv(report_rows(quality=False), tmp_path / "plain.csv")
    assert (tmp_path / "plain.csv").read_text().splitlines()[0] == "method,budget,nfe,rmse,psnr"


def test_every_method_has_its_own_colour_and_marker():
    methods = [f"baseline {k:02d}" for k in range(18)] + ["bespoke a", "learned time-only b"]
    styles = method_styles(reversed(methods))
    assert styles == method_styles(methods)  # assigned by name, not by row order
    colours = {matplotlib.colors.to_hex(s["color"]) for s in styles.values()}
    assert len(colours) == 20 and len({(s["color"], s["marker"]) for s in styles.values()}) == 20
    assert len(set(PALETTE)) == len(PALETTE)
    assert styles["bespoke a"]["linewidth"] > styles["baseline 00"]["linewidth"]
    assert styles["learned time-only b"]["zorder"] > styles["baseline 17"]["zorder"]


def test_plot_draws_rmse_psnr_fd_and_accuracy_with_the_ground_truth_as_a_dashed_line(tmp_path):
    figure = plot(report_rows(), tmp_path / "r.png", "title")
    assert (tmp_path / "r.png").stat().st_size > 0
    axes = figure.get_axes()
    assert [a.get_ylabel() for a in axes] == ["RMSE vs ground truth", "PSNR (dB)", "FD-classifier (lower is better)",
                                              "class accuracy"]
    assert axes[0].get_yscale() == "log"
    lines = [line for line in axes[2].get_lines() if line.get_label() != "ground truth"]
    assert len(lines) == 4
    assert len({(matplotlib.colors.to_hex(line.get_color()), line.get_marker()) for line in lines}) == 4
    bespoke = next(line for line in lines if line.get_label().startswith("bespoke"))
    assert bespoke.get_linewidth() > max(line.get_linewidth() for line in lines if line is not bespoke)
    (truth,) = [line for line in axes[2].get_lines() if line.get_label() == "ground truth"]
    assert truth.get_linestyle() == "--" and list(truth.get_ydata()) == [1.25, 1.25]
    assert not [line for line in axes[0].get_lines() if line.get_label() == "ground truth"]  # RMSE 0: no line
    (legend,) = figure.legends
    assert {t.get_text() for t in legend.get_texts()} == {"euler", "midpoint", "edm-heun", "ground truth",
                                                          "bespoke scale-time midpoint"}


def test_plot_without_quality_has_two_panels_and_save_rows_writes_all_three(tmp_path):
    figure = plot(report_rows(quality=False), tmp_path / "r.png")
    assert [a.get_ylabel() for a in figure.get_axes()] == ["RMSE vs ground truth", "PSNR (dB)"]
    paths = save_rows(report_rows(), NFES, tmp_path / "out", "stem", "title")
    assert [p.name for p in paths] == ["stem.md", "stem.csv", "stem.png"] and all(p.exists() for p in paths)
    assert "| ground truth |" in paths[0].read_text() and "fd" in paths[1].read_text().splitlines()[0]


def test_images_take_their_own_shape_or_the_one_given():
    assert as_images(torch.zeros(3, 1, 28, 28)).shape == (3, 1, 28, 28)
    assert as_images(torch.zeros(3, 784)).shape == (3, 1, 28, 28)
    assert as_images(torch.zeros(3, 64)).shape == (3, 1, 8, 8)
    assert as_images(torch.zeros(3, 5, 7)).shape == (3, 1, 5, 7)
    assert as_images(torch.zeros(3, 35), image_shape=(5, 7)).shape == (3, 1, 5, 7)
    with pytest.raises(FlowsolveValueError, match="image_shape"):
        as_images(torch.zeros(3, 35))
    with pytest.raises(FlowsolveValueError, match="does not hold"):
        as_images(torch.zeros(3, 35), image_shape=(6, 6))


@pytest.mark.parametrize("shape, side", [((20, 1, 28, 28), 28), ((20, 64), 8)])
def test_image_grid_renders_animals_and_digits(tmp_path, shape, side):
    samples = torch.rand(shape) * 2 - 1
    figure = image_grid([("a", samples), ("b", samples)], tmp_path / "g.png", columns=8)
    assert (tmp_path / "g.png").stat().st_size > 0
    (image,) = figure.get_axes()[0].get_images()
    assert image.get_array().shape == (3 * (side + 1), 8 * (side + 1))  # 20 samples: 3 rows of 8


def test_class_grid_has_one_row_per_class(tmp_path):
    labels = torch.tensor([0, 2, 2, 1, 2, 0, 2])
    samples = torch.arange(7.0)[:, None, None, None].expand(7, 1, 28, 28) / 10
    figure = class_grid([("truth", samples), ("solver", -samples)], labels, tmp_path / "c.png", per_class=3,
                        classes=4, class_names=["cat", "dog", "fish", "bird"])
    assert (tmp_path / "c.png").stat().st_size > 0
    left, right = figure.get_axes()
    assert left.get_title() == "truth" and right.get_title() == "solver"
    assert [t.get_text() for t in left.get_yticklabels()] == ["cat", "dog", "fish", "bird"]
    canvas = torch.as_tensor(left.get_images()[0].get_array().filled(float("nan")))
    assert canvas.shape == (4 * 29, 3 * 29)
    cell = lambda row, column: canvas[row * 29: row * 29 + 28, column * 29: column * 29 + 28]
    assert torch.allclose(cell(0, 0), torch.tensor(0.0)) and torch.allclose(cell(0, 1), torch.tensor(0.5))
    assert cell(0, 2).isnan().all() and cell(3, 0).isnan().all()  # two cats only; no birds
    assert torch.allclose(cell(2, 2), torch.tensor(0.4))  # the third fish is sample 4 (the fourth is left out)
    figure = class_grid(torch.zeros(7, 64), labels, tmp_path / "d.png")
    assert len(figure.get_axes()[0].get_yticklabels()) == 3
