"""Plot the training-loss curves that ``scripts/train_animals.py`` logs (``DIR/loss.csv``).

    python scripts/plot_animals_losses.py .train/fm-ot .train/eps-vp -o docs/animals-training-loss.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="output directories of train_animals.py")
    parser.add_argument("-o", "--output", required=True, help="PNG to write")
    args = parser.parse_args(argv)
    figure, axes = plt.subplots(1, len(args.runs), figsize=(4.5 * len(args.runs), 3.2), squeeze=False)
    for axis, run in zip(axes[0], args.runs):
        with open(Path(run) / "loss.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        axis.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows])
        axis.set(title=Path(run).name, xlabel="step (batch 64)", ylabel="mean squared error", yscale="log")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(args.output, dpi=100)


if __name__ == "__main__":
    main()
