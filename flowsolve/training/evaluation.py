"""Comparison tables and figures: learned solvers against the baselines at equal NFE."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeGuard

import torch

from flowsolve.baselines import Baseline
from flowsolve.core.errors import FlowsolveValueError
from flowsolve.paths.schedulers import Scheduler
from flowsolve.training.ground_truth import GroundTruth
from flowsolve.training.metrics import scores


# Methods registered on several grids ("name", "name edm", ...): each also gets a row with its
# best grid per NFE (picked on the compared paths themselves, which favours the baseline).
BEST_GRID_FAMILIES = ("dpm-solver++(2m)", "dpm-solver++(3m)", "unipc-bh2", "ipndm")


def compare(u, reference: GroundTruth, nfes: list[int], solvers=(), progress=None,
            baselines: Mapping[str, Callable[[], Baseline]] | None = None, quality=None) -> list[dict]:
    """Rows ``{method, budget, nfe, rmse, psnr}`` for every baseline at every NFE budget and every
    learned solver; ``nfe`` is what the method really spent (EDM's Heun spends one less than an
    even budget).

    Baselines that need a Gaussian-path scheduler are skipped for models without one; uniform
    grids skip NFEs that are not whole steps. ``solvers`` are ``(name, ParametricSolver)`` pairs;
    ``baselines`` ``{name: factory}``, by default every registered one (plugins' included).
    Conditional ground truth runs every method with its paths' conditions bound. ``quality``
    (e.g. :class:`~flowsolve.training.quality.SampleQuality`) called as ``quality(samples,
    labels)`` adds its numbers (FD, class accuracy) to every row, and a ``"ground truth"`` row.
    """
    if baselines is None:
        # The registry lives in the plugin layer above this one: looked up when the report is made.
        from flowsolve.plugins.registry import registry

        baselines = registry().baselines()
    rows = []
    gaussian = isinstance(getattr(u, "scheduler", None), Scheduler)
    field = reference.field(u)
    labels = None if reference.conditions is None else reference.conditions.get("labels")

    def scored(x1: torch.Tensor) -> dict:
        extra = {} if quality is None else _quality_scores(quality, x1, labels)
        return {**scores(x1, reference.x1), **extra}

    if quality is not None:
        rows.append({"method": "ground truth", "budget": None, "nfe": reference.evaluations, **scored(reference.x1)})
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
                x1, used = baseline.sample(field, reference.x0, nfe)
                if x1 is not None:
                    rows.append({"method": name, "budget": nfe, "nfe": used, **scored(x1)})
        rows += [row for family in BEST_GRID_FAMILIES for row in _best_grid_rows(rows, family)]
        for name, solver in solvers:
            x1 = solver.sample(field, reference.x0)
            rows.append({"method": name, "budget": solver.nfe, "nfe": solver.nfe, **scored(x1)})
    return rows


def _quality_scores(quality, x1: torch.Tensor, labels) -> dict:
    """The quality metric's scalar numbers for samples ``x1`` (per-class lists left out of the rows)."""
    found = quality(x1, labels)
    return {name: float(value) for name, value in found.items() if isinstance(value, (int, float))}


def _best_grid_rows(rows: list[dict], family: str) -> list[dict]:
    """Per budget, the best of ``family``'s grid variants (rows named ``family`` or ``family <spacing>``)."""
    variants = [r for r in rows if r["method"] == family or r["method"].startswith(family + " ")]
    best: dict[int, dict] = {}
    for row in variants:
        if row["budget"] not in best or row["rmse"] < best[row["budget"]]["rmse"]:
            best[row["budget"]] = row
    return [{**row, "method": f"{family} best grid"} for row in best.values()] if len(
        {r["method"] for r in variants}) > 1 else []


# The columns every row has, then the quality metric's (present when ``compare`` was given one).
CORE_COLUMNS = ("method", "budget", "nfe", "rmse", "psnr")
QUALITY_COLUMNS = ("fd", "accuracy")
_CELL_NAMES = {"rmse": "RMSE", "psnr": "PSNR", "fd": "FD", "accuracy": "accuracy"}


def columns(rows: list[dict]) -> list[str]:
    """The CSV header of ``rows``: the core columns, the quality columns some row has, then any
    other key in the order it first appears."""
    seen = dict.fromkeys(key for row in rows for key in row)
    quality = [name for name in QUALITY_COLUMNS if name in seen]
    return [*CORE_COLUMNS, *quality, *(key for key in seen if key not in CORE_COLUMNS + QUALITY_COLUMNS)]


def _cell_metrics(rows: list[dict]) -> list[str]:
    return ["rmse", "psnr", *(name for name in QUALITY_COLUMNS if any(name in row for row in rows))]


def _format(name: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "?"
    if name == "rmse":
        return f"{value:.5f}"
    if name == "psnr":
        return f"{value:.1f}"
    if name == "accuracy":
        return f"{100 * value:.0f}%"
    return f"{value:.3g}"


def _cell(row: dict, metrics: list[str]) -> str:
    return " / ".join(_format(name, row.get(name)) for name in metrics)


def table(rows: list[dict], nfes: list[int]) -> str:
    """Markdown table: one row per method, one column per NFE budget, cells ``RMSE / PSNR`` (then
    ``/ FD / accuracy`` when the rows carry the quality metric's numbers), with the NFE really
    spent in brackets where it differs from the budget.

    Rows without a budget (the ``"ground truth"`` row of :func:`compare`) get their own line, their
    numbers in a ``reference`` column (with the evaluations they spent).
    """
    metrics = _cell_metrics(rows)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    references = any(r["budget"] is None for r in rows)
    first = "method" if len(metrics) == 2 else "method: " + " / ".join(_CELL_NAMES[m] for m in metrics)
    headers = [first, *(["reference"] if references else []), *(f"NFE {n}" for n in nfes)]
    lines = ["| " + " | ".join(headers) + " |", "|---|" + "---|" * (len(headers) - 1)]
    for method in methods:
        cells = []
        if references:
            found = [r for r in rows if r["method"] == method and r["budget"] is None]
            spent = f" ({found[0]['nfe']:.0f} NFE)" if found and _is_number(found[0].get("nfe")) else ""
            cells.append(_cell(found[0], metrics) + spent if found else "")
        for nfe in nfes:
            found = [r for r in rows if r["method"] == method and r["budget"] == nfe]
            spent = f" ({found[0]['nfe']} NFE)" if found and found[0]["nfe"] != nfe else ""
            cells.append(_cell(found[0], metrics) + spent if found else "—")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _is_number(value) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def write_csv(rows: list[dict], path) -> None:
    """One CSV line per row; the header is :func:`columns` (missing values left empty)."""
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns(rows), restval="")
        writer.writeheader()
        writer.writerows(rows)


# Tableau's ten colours, their ten lighter partners, then ColorBrewer's Dark2: 28 distinct colours.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*")


def is_learned(method: str) -> bool:
    """Whether ``method`` names a learned solver (its name says ``bespoke`` or ``learned``)."""
    return "bespoke" in method.lower() or "learned" in method.lower()


def method_styles(methods) -> dict[str, dict]:
    """A matplotlib style per method: its own colour and marker (learned solvers first, then the
    others, each in name order, so a method keeps its style whatever order its rows come in;
    no colour repeats below ``len(PALETTE)`` methods, no colour and marker pair below 84).
    Learned solvers stand out: thicker lines, larger markers, drawn on top."""
    ordered = sorted(dict.fromkeys(methods), key=lambda m: (not is_learned(m), m))
    styles = {}
    for k, method in enumerate(ordered):
        learned = is_learned(method)
        styles[method] = {"color": PALETTE[k % len(PALETTE)], "marker": MARKERS[k % len(MARKERS)],
                          "linewidth": 2.8 if learned else 1.2, "markersize": 8.5 if learned else 5.0,
                          "zorder": 4 if learned else 2}
    return styles


# The panels of the plot: the row key, the axis label, whether the axis is logarithmic.
_PANELS = (("rmse", "RMSE vs ground truth", True), ("psnr", "PSNR (dB)", False),
           ("fd", "FD-classifier (lower is better)", True), ("accuracy", "class accuracy", False))


def plot(rows: list[dict], path, title: str = ""):
    """RMSE (log) and PSNR against NFE, one line per method (the paper's figure 5), plus the
    FD-classifier and class accuracy against NFE when the rows carry them. Rows without a budget
    (the ground truth) are dashed horizontal lines. Returns the (closed) figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgeted = [r for r in rows if r["budget"] is not None]
    references = [r for r in rows if r["budget"] is None]
    panels = [p for p in _PANELS if any(_is_number(r.get(p[0])) for r in budgeted)]
    shape = (2, 2) if len(panels) == 4 else (1, len(panels))
    styles = method_styles(r["method"] for r in budgeted)
    figure, grid = plt.subplots(*shape, figsize=(5.4 * shape[1], 3.9 * shape[0] + 1.2), layout="constrained",
                                squeeze=False)
    axes = list(grid.flat)
    for axis, (key, label, log) in zip(axes, panels):
        for method, style in styles.items():
            points = sorted((r["nfe"], r[key]) for r in budgeted if r["method"] == method and _is_number(r.get(key))
                            and (not log or r[key] > 0))
            if points:
                axis.plot([p[0] for p in points], [p[1] for p in points], label=method, **style)
        for row in references:
            value = row.get(key)
            if _is_number(value) and (not log or value > 0):
                axis.axhline(value, color="black", linestyle="--", linewidth=1.4, zorder=3, label=row["method"])
        if log:
            axis.set_yscale("log")
        axis.set(xlabel="NFE", ylabel=label)
        axis.grid(alpha=0.3)
    if panels and panels[0][0] == "rmse":
        # Data lie in [-1, 1]: errors beyond that (a diverging baseline) would squash every other line.
        axes[0].set_ylim(top=min(axes[0].get_ylim()[1], 1.0))
    for axis, (key, _, _) in zip(axes, panels):
        if key == "psnr":
            axis.set_ylim(bottom=max(axis.get_ylim()[0], 0.0))
        if key == "accuracy":
            axis.set_ylim(-0.02, 1.02)
    if title:
        figure.suptitle(title)
    handles: dict = {}
    for axis in axes:
        for handle, name in zip(*axis.get_legend_handles_labels()):
            handles.setdefault(name, handle)
    if handles:
        figure.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=min(len(handles), 4),
                      fontsize=8, frameon=False)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return figure


def as_images(samples: torch.Tensor, image_shape=None) -> torch.Tensor:
    """``samples`` as ``(batch, channels, height, width)`` float32 CPU images.

    The shape of one image is ``image_shape`` (``(H, W)`` or ``(C, H, W)``) when given, else the
    samples' own: ``(B, C, H, W)`` or ``(B, H, W)`` as they are, flat ``(B, D)`` as square images
    when ``D`` is a square number (8x8 digits, 28x28 animals).
    """
    samples = samples.detach().cpu().float()
    count = samples.shape[0]
    if image_shape is not None:
        shape = tuple(int(d) for d in image_shape)
        shape = (1, *shape) if len(shape) == 2 else shape
        if len(shape) != 3 or math.prod(shape) != samples[0].numel():
            raise FlowsolveValueError(f"image_shape {tuple(image_shape)} does not hold samples of "
                                      f"{samples[0].numel()} values (shape {tuple(samples.shape[1:])})")
        return samples.reshape(count, *shape)
    if samples.dim() == 4:
        return samples
    if samples.dim() == 3:
        return samples[:, None]
    flat = samples.reshape(count, -1)
    side = math.isqrt(flat.shape[1])
    if side * side != flat.shape[1]:
        raise FlowsolveValueError(f"cannot show samples of {flat.shape[1]} values as square images; "
                                  "pass image_shape=(height, width) or (channels, height, width)")
    return flat.reshape(count, 1, side, side)


def _canvas(cells: list[list[torch.Tensor | None]], shape: tuple[int, ...]) -> torch.Tensor:
    """Images ``(C, H, W)`` (``None``: blank) laid out as rows of columns, one pixel apart: ``(rows * (H + 1),
    columns * (W + 1))`` in ``[-1, 1]`` (NaN blank) for one channel, ``(..., 3)`` in ``[0, 1]`` for RGB."""
    channels, height, width = shape
    if channels not in (1, 3):
        raise FlowsolveValueError(f"images with {channels} channels cannot be shown: 1 (grey) or 3 (RGB) only")
    columns = max((len(row) for row in cells), default=0)
    canvas = torch.full((channels, len(cells) * (height + 1), columns * (width + 1)), float("nan"))
    for r, row in enumerate(cells):
        for c, image in enumerate(row):
            if image is not None:
                canvas[:, r * (height + 1): r * (height + 1) + height, c * (width + 1): c * (width + 1) + width] = image
    if channels == 1:
        return canvas[0].clamp(-1, 1)
    return ((canvas.clamp(-1, 1) + 1) / 2).nan_to_num(1.0).permute(1, 2, 0)


def _show(axis, canvas: torch.Tensor) -> None:
    if canvas.dim() == 2:
        axis.imshow(canvas.numpy(), cmap="gray", vmin=-1, vmax=1)
    else:
        axis.imshow(canvas.numpy())


def image_grid(batches: list[tuple[str, torch.Tensor]], path, columns: int = 8, image_shape=None):
    """Panels of samples side by side (e.g. ground truth | Midpoint | Bespoke from the same noise),
    at most ``columns`` x ``columns`` samples each; returns the (closed) figure.

    Each sample is shown at ``image_shape`` or its own shape (see :func:`as_images`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(batches), figsize=(3.2 * len(batches), 3.4), squeeze=False)
    for axis, (title, samples) in zip(axes[0], batches):
        images = as_images(samples, image_shape)[: columns * columns]
        cells = [list(images[i: i + columns]) for i in range(0, images.shape[0], columns)]
        _show(axis, _canvas(cells, tuple(images.shape[1:])))
        axis.set_title(title)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return figure


def class_grid(samples, labels: torch.Tensor, path, per_class: int = 8, image_shape=None, classes: int | None = None,
               class_names=None):
    """One row per class: the first ``per_class`` samples drawn for that class (blank where fewer).

    Args:
        samples: a ``(batch, ...)`` tensor of images, or ``(title, tensor)`` pairs drawn for the
            same ``labels`` (e.g. ground truth and a solver), shown side by side.
        labels: ``(batch,)`` integer class of each sample.
        path: the PNG to write.
        per_class: samples (columns) per class.
        image_shape: the shape of one image (see :func:`as_images`).
        classes: number of classes (rows); default ``max(labels) + 1``.
        class_names: a name per class for the row labels (default ``class k``).

    Returns:
        The (closed) figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("", samples)] if isinstance(samples, torch.Tensor) else list(samples)
    labels = torch.as_tensor(labels).cpu().reshape(-1)
    classes = int(labels.max()) + 1 if classes is None else int(classes)
    names = [f"class {k}" for k in range(classes)] if class_names is None else [str(n) for n in class_names]
    width, height = 1.0 + 0.42 * per_class, 0.6 + 0.42 * classes
    figure, axes = plt.subplots(1, len(panels), figsize=(width * len(panels) + 0.8, height), squeeze=False)
    for axis, (title, batch) in zip(axes[0], panels):
        images = as_images(batch, image_shape)
        if images.shape[0] != labels.shape[0]:
            raise FlowsolveValueError(f"{images.shape[0]} samples for {labels.shape[0]} labels")
        cells: list[list[torch.Tensor | None]] = []
        for k in range(classes):
            chosen = list(images[labels == k][:per_class])
            cells.append(chosen + [None] * (per_class - len(chosen)))
        _show(axis, _canvas(cells, tuple(images.shape[1:])))
        side = images.shape[2] + 1
        axis.set_yticks([k * side + (side - 1) / 2 for k in range(classes)], names[:classes], fontsize=8)
        axis.set_xticks([])
        for spine in axis.spines.values():
            spine.set_visible(False)
        axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return figure


def save_rows(rows, nfes, directory: Path, stem: str, title: str) -> list[Path]:
    """Write ``stem.md`` (:func:`table`), ``stem.csv`` (:func:`write_csv`) and ``stem.png``
    (:func:`plot`) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{stem}.md", directory / f"{stem}.csv", directory / f"{stem}.png"]
    paths[0].write_text(table(rows, nfes) + "\n")
    write_csv(rows, paths[1])
    plot(rows, paths[2], title)
    return paths
