"""Fit time alone against fit time beside a second identical fit.

    nice -n 10 python bench/fit_under_load.py [--rev REV ...] [--data CSV] [--rounds N]

Each round times `vae-anomaly fit DATA` alone (one process), then two identical
fits started together, for every code version in turn, so that the versions see
the same stretch of a shared machine. A version is a git revision (its
``vae_anomaly`` package is extracted with ``git archive`` into a temporary
folder) or ``tree`` (the package in this working tree, uncommitted changes
included; the default). The report gives, per version, the median wall time
alone, every wall time under load and the ratio of the slower of the pair to
the median alone: on 2 cores a fair share is 2x, and a ratio far above that means
the two fits get in each other's way (torch's worker threads spinning on work too
small to split, for one).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREE = "tree"


def package_dir(rev: str, scratch: Path) -> Path:
    """A folder whose ``vae_anomaly`` is the package of ``rev``."""
    if rev == TREE:
        return ROOT
    target = scratch / rev.replace("/", "_")
    target.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "vae_anomaly"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def start_fit(code: Path, data: Path, model: Path, extra: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(code)}
    # Run from the model's folder: `python -m` puts the working directory first on the
    # path, so from a checkout's root its package would win over PYTHONPATH's.
    return subprocess.Popen([sys.executable, "-m", "vae_anomaly", "fit", str(data.resolve()),
                             "--model", str(model), *extra], cwd=model.parent,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def used_package(code: Path, scratch: Path) -> str:
    """Where a fit of ``code`` imports vae_anomaly from (to check the set-up)."""
    return subprocess.run([sys.executable, "-c", "import vae_anomaly; print(vae_anomaly.__file__)"],
                          env={**os.environ, "PYTHONPATH": str(code)}, cwd=scratch,
                          capture_output=True, text=True, check=True).stdout.strip()


def timed_fits(code: Path, data: Path, scratch: Path, extra: list[str], at_once: int) -> list[float]:
    """Wall seconds of ``at_once`` identical fits started together."""
    started = time.perf_counter()
    running = [start_fit(code, data, scratch / f"model{i}.vae", extra) for i in range(at_once)]
    seconds = []
    for process in running:
        _, stderr = process.communicate()
        seconds.append(time.perf_counter() - started)
        if process.returncode:
            raise SystemExit(f"fit failed ({process.returncode}): {stderr.decode()[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", action="append", dest="revs", metavar="REV",
                        help=f"git revision to time; repeat for several ({TREE!r}, the "
                             "default, is this working tree)")
    parser.add_argument("--data", type=Path, default=ROOT / "sample_data" / "train.csv")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fit-args", default="", help="extra options for fit, one string")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    revs = args.revs or [TREE]
    results: dict[str, dict[str, list[float]]] = {rev: {"alone": [], "together": []}
                                                  for rev in revs}
    with tempfile.TemporaryDirectory(prefix="fit-under-load-") as scratch_name:
        scratch = Path(scratch_name)
        codes = {rev: package_dir(rev, scratch / "code") for rev in revs}
        for rev, code in codes.items():
            print(f"{rev}: {used_package(code, scratch)}", file=sys.stderr, flush=True)
        for round_ in range(1, args.rounds + 1):
            for rev in revs:
                alone = timed_fits(codes[rev], args.data, scratch, args.fit_args.split(), 1)
                together = timed_fits(codes[rev], args.data, scratch, args.fit_args.split(), 2)
                results[rev]["alone"] += alone
                results[rev]["together"] += together
                print(f"round {round_} {rev}: alone {alone[0]:.1f} s, two at once "
                      f"{together[0]:.1f} s and {together[1]:.1f} s", file=sys.stderr, flush=True)
    report = {}
    for rev, times in results.items():
        alone = statistics.median(times["alone"])
        worst = max(times["together"])
        report[rev] = {**times, "median_alone_s": alone, "slowest_together_s": worst,
                       "ratio": worst / alone}
        print(f"{rev}: alone {alone:.1f} s (median of {len(times['alone'])}), beside a second "
              f"fit up to {worst:.1f} s: {worst / alone:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
