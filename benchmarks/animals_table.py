"""The README's table of learned vs free solvers on the animal U-Nets, from ``benchmarks/animals.py``'s results.

Usage::

    python benchmarks/animals_table.py [--out .bench/animals] [--test 128]

Reads every ``<model>-w<guidance>/`` directory that ``benchmarks/animals.py`` filled and prints
one Markdown row per (model, guidance, fitted NFE): the best of DPM-Solver++(2M/3M), UniPC and
iPNDM on any grid, the best of every baseline, the learned solver, both ratios, FD-classifier
and class accuracy next to the ground truth's, and the fit's start and validation RMSE.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

STRONG = ("dpm-solver++(2m)", "dpm-solver++(3m)", "unipc-bh2", "ipndm")
NAMES = {"dpm-solver++(2m)": "DPM-Solver++(2M)", "dpm-solver++(3m)": "DPM-Solver++(3M)", "unipc-bh2": "UniPC",
         "ipndm": "iPNDM", "midpoint": "Midpoint", "euler": "Euler", "heun": "Heun", "ddim": "DDIM", "rk4": "RK4"}


def strong(method: str) -> bool:
    return any(method == name or method.startswith(name + " ") for name in STRONG)


def label(method: str) -> str:
    base, _, grid = method.partition(" ")
    grid = grid.removesuffix("best grid").strip()
    return NAMES.get(base, base) + (f", {grid} grid" if grid else "")


def starts_of(learned: dict) -> str:
    count = learned.get("starts", 1)
    return "" if count == 1 else f"best of {count} starts, "


def rows_of(directory: Path, test: int) -> list[str]:
    model, _, guidance = directory.name.rpartition("-w")
    baselines = json.loads((directory / f"baselines-test{test}.json").read_text())
    truth = next(r for r in baselines if r["method"] == "ground truth")
    lines = []
    for path in sorted(directory.glob(f"non-stationary-nfe*-test{test}.json"), key=lambda p: json.loads(p.read_text())["budget"]):
        learned = json.loads(path.read_text())
        nfe = learned["budget"]
        at_nfe = [r for r in baselines if r["budget"] == nfe and r["nfe"] <= nfe and not r["method"].endswith("best grid")]
        best_strong = min((r for r in at_nfe if strong(r["method"])), key=lambda r: r["rmse"])
        best_any = min(at_nfe, key=lambda r: r["rmse"])
        lines.append(
            f"| {model} | {guidance} | {nfe} | {best_strong['rmse']:.3g} ({label(best_strong['method'])}) | "
            f"{best_any['rmse']:.3g} ({label(best_any['method'])}) | **{learned['rmse']:.3g}** | "
            f"{best_strong['rmse'] / learned['rmse']:.2f}x / {best_any['rmse'] / learned['rmse']:.2f}x | "
            f"{learned['fd']:.2f} ({truth['fd']:.2f}) | {learned['accuracy']:.1%} ({truth['accuracy']:.1%}) | "
            f"{starts_of(learned)}{label(learned['init'])}: {learned['val_start']:.3g} → {learned['val_best']:.3g} |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=".bench/animals")
    parser.add_argument("--test", type=int, default=128)
    args = parser.parse_args(argv)
    print("| model | w | NFE | best of DPM-Solver++ / UniPC / iPNDM | best free solver | **learned** | ratios | "
          "FD (ground truth) | accuracy (ground truth) | start: validation RMSE → best |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for directory in sorted(Path(args.out).glob("*-w*")):
        if (directory / f"baselines-test{args.test}.json").exists():
            for line in rows_of(directory, args.test):
                print(line)


if __name__ == "__main__":
    main()
