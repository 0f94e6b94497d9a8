"""Compare two scored files of the same input row by row, e.g. one model scored on a
GPU and on a CPU.

Run:

    python bench/compare_scores.py scored_on_gpu.csv scored_on_cpu.csv

Prints, for each numeric score column both files share, the largest absolute and
relative difference, and how many rows' ``is_anomaly`` flags differ. Exits 1 when a
score differs by more than --atol + --rtol x |score| (defaults 1e-3 nats and 1e-4,
far under any difference that matters and far over float32 rounding), or when any
flag differs (a score within rounding of the threshold could flip; that is rare
enough to look at). p-values are shown, not checked: they are ranks among the
calibration scores, so a rounding difference can move one by a rank.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from vae_anomaly.detector import SCORE_COLUMNS


def compare(first: pd.DataFrame, second: pd.DataFrame, rtol: float,
            atol: float) -> tuple[list[str], bool]:
    if len(first) != len(second):
        return [f"row counts differ: {len(first):,} vs {len(second):,}"], False
    lines, ok = [f"{len(first):,} rows"], True
    for column in [c for c in SCORE_COLUMNS if c != "is_anomaly" and c in first and c in second]:
        a, b = first[column].to_numpy(float), second[column].to_numpy(float)
        absolute = np.abs(a - b)
        relative = absolute / np.maximum(np.abs(b), 1e-12)
        lines.append(f"{column}: max |diff| {absolute.max():.3g}, max relative diff "
                     f"{relative.max():.3g}, median relative diff {np.median(relative):.3g}")
        ok &= column == "p_value" or bool((absolute <= atol + rtol * np.abs(b)).all())
    flips = int((first["is_anomaly"] != second["is_anomaly"]).sum())
    lines.append(f"is_anomaly: {flips} of {len(first):,} rows differ "
                 f"({int(first['is_anomaly'].sum()):,} vs {int(second['is_anomaly'].sum()):,} flagged)")
    return lines, ok and flips == 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("--atol", type=float, default=1e-3)
    args = parser.parse_args(argv)
    lines, ok = compare(pd.read_csv(args.first), pd.read_csv(args.second), args.rtol, args.atol)
    print("\n".join(lines))
    print(f"{'agree' if ok else 'DIFFER'} within {args.atol:g} + {args.rtol:g} x |score|")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
