"""Comparison tables and figures: learned solvers against the baselines at equal NFE."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from flowsolve.baselines import Baseline
from flowsolve.core.errors import FlowsolveValueError
from flowsolve.paths.schedulers import Scheduler
from flowsolve.training.ground_truth import GroundTruth
from flowsolve.training.metrics import scores


def compare(u, reference: GroundTruth, nfes: list[int], solvers=(), progress=None,
            baselines: Mapping[str, Callable[[], Baseline]] | None = None) -> list[dict]:
    """Rows ``{method, budget, nfe, rmse, psnr}`` for every baseline at every NFE budget and every
    learned solver; ``nfe`` is what the method really spent (EDM's Heun spends one less than an
    even budget).

    Baselines that need a Gaussian-path scheduler are skipped for models without one; uniform
    grids skip NFEs that are not whole steps. ``solvers`` are ``(name, ParametricSolver)`` pairs;
    ``baselines`` ``{name: factory}``, by default every registered one (plugins' included).
    """
    if baselines is None:
        # The registry lives in the plugin layer above this one: looked up when the report is made.
        from flowsolve.plugins.registry import registry

        baselines = registry().baselines()
    rows = []
    gaussian = isinstance(getattr(u, "scheduler", None), Scheduler)
    with torch.no_grad():
        for name, make in baselines.items():
            baseline = make()
            if not isinstance(baseline, Baseline):
                raise FlowsolveValueError(
                    f"the baseline {name!r} is a {type(baseline).__name__}, not a flowsolve.baselines.Baseline: "
                    "its plugin must return a factory of Baseline subclasses (see the flowsolve_baselines hook)"
                )
            if not gaussian and baseline.needs_scheduler:
                continue
            for nfe in nfes:
                x1, used = baseline.sample(u, reference.x0, nfe)
                if x1 is not None:
                    rows.append({"method": name, "budget": nfe, "nfe": used, **scores(x1, reference.x1)})
        rows += _best_grid_rows(rows, "dpm-solver++(2m)")
        for name, solver in solvers:
            x1 = solver.sample(u, reference.x0)
            rows.append({"method": name, "budget": solver.nfe, "nfe": solver.nfe, **scores(x1, reference.x1)})
    return rows


def _best_grid_rows(rows: list[dict], family: str) -> list[dict]:
    """Per budget, the best of ``family``'s grid variants (rows named ``family`` or ``family <spacing>``)."""
    variants = [r for r in rows if r["method"] == family or r["method"].startswith(family + " ")]
    best: dict[int, dict] = {}
    for row in variants:
        if row["budget"] not in best or row["rmse"] < best[row["budget"]]["rmse"]:
            best[row["budget"]] = row
    return [{**row, "method": f"{family} best grid"} for row in best.values()] if len(
        {r["method"] for r in variants}) > 1 else []


def table(rows: list[dict], nfes: list[int]) -> str:
    """Markdown table: one row per method, one column per NFE budget, cells ``RMSE / PSNR``
    (with the NFE really spent in brackets where it is below the budget)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["| method | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|" + "---|" * len(nfes)]
    for method in methods:
        cells = []
        for nfe in nfes:
            found = [r for r in rows if r["method"] == method and r["budget"] == nfe]
            spent = f" ({found[0]['nfe']} NFE)" if found and found[0]["nfe"] != nfe else ""
            cells.append(f"{found[0]['rmse']:.5f} / {found[0]['psnr']:.1f}{spent}" if found else "—")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: list[dict], path) -> None:
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["method", "budget", "nfe", "rmse", "psnr"])
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: list[dict], path, title: str = "") -> None:
    """RMSE and PSNR against NFE, one line per method (the paper's figure 5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        points = sorted((r["nfe"], r["rmse"], r["psnr"]) for r in rows if r["method"] == method)
        style = dict(marker="o", linewidth=2.5 if "bespoke" in method else 1.2)
        left.plot([p[0] for p in points], [p[1] for p in points], label=method, **style)
        right.plot([p[0] for p in points], [p[2] for p in points], label=method, **style)
    left.set_yscale("log")
    # Data lie in [-1, 1]: errors beyond that (a diverging baseline) would squash every other line.
    left.set_ylim(top=min(left.get_ylim()[1], 1.0))
    right.set_ylim(bottom=max(right.get_ylim()[0], 0.0))
    left.set(xlabel="NFE", ylabel="RMSE vs ground truth", title=title)
    right.set(xlabel="NFE", ylabel="PSNR (dB)")
    right.legend(fontsize=8)
    for axis in (left, right):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def image_grid(batches: list[tuple[str, torch.Tensor]], path, columns: int = 8) -> None:
    """Rows of samples side by side (e.g. ground truth | Midpoint | Bespoke from the same noise).

    Each sample is shown as a square image when its size is a square number (8x8 digits).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(batches), figsize=(3.2 * len(batches), 3.4))
    axes = [axes] if len(batches) == 1 else axes
    for axis, (title, samples) in zip(axes, batches):
        flat = samples.detach().cpu().float().reshape(samples.shape[0], -1)[: columns * columns]
        side = int(math.isqrt(flat.shape[1]))
        if side * side != flat.shape[1]:
            raise FlowsolveValueError(f"cannot show samples of {flat.shape[1]} values as square images")
        count = flat.shape[0]
        rows = -(-count // columns)
        canvas = torch.full((rows * (side + 1), columns * (side + 1)), float("nan"))
        for k in range(count):
            r, c = divmod(k, columns)
            canvas[r * (side + 1): r * (side + 1) + side, c * (side + 1): c * (side + 1) + side] = flat[k].reshape(side, side)
        axis.imshow(canvas.clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
        axis.set_title(title)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def save_rows(rows, nfes, directory: Path, stem: str, title: str) -> list[Path]:
    """Write ``stem.md``, ``stem.csv`` and ``stem.png`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{stem}.md", directory / f"{stem}.csv", directory / f"{stem}.png"]
    paths[0].write_text(table(rows, nfes) + "\n")
    write_csv(rows, paths[1])
    plot(rows, paths[2], title)
    return paths
