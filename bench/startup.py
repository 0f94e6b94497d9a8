"""Start-up: wall time of the commands a newcomer and a cron job run most, per code
version, as ratios to `python -c 'import torch'` in the same run.

    nice -n 10 python bench/startup.py --rev REV --rev tree [--runs 7] [--json PATH]

For each version (a git revision, extracted with ``git archive`` as in
fit_under_load.py, or ``tree``, this working tree) it times `--version`, `--help`,
`info MODEL` and `score sample_data/new.csv` (1,000 rows) with its own model fitted
on sample_data/train.csv, each as a whole process, round-robin over ``--runs`` rounds
so that every version sees the same stretch of a shared machine. It also reports
whether the versions agree: each fits sample_data/train.csv with the same seed
(are the weights equal?), and each scores with one model (are the outputs
byte-identical? Not across a change of the Monte Carlo draws).
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

from fit_under_load import ROOT, TREE, package_dir

SAMPLE = ROOT / "sample_data"
BASELINES = {"python -c pass": ["-c", "pass"], "import torch": ["-c", "import torch"]}


def commands(model: Path, output: Path) -> dict[str, list[str]]:
    return {
        "--version": ["--version"],
        "--help": ["--help"],
        "info MODEL": ["info", str(model)],
        "score new.csv": ["score", str(SAMPLE / "new.csv"), "--model", str(model),
                          "-o", str(output), "-q"],
    }


def run(code: Path | None, args: list[str], cwd: Path) -> float:
    """Wall seconds of one process (``code``: run vae_anomaly from there)."""
    env = dict(os.environ)
    argv = [sys.executable, *args]
    if code is not None:
        env["PYTHONPATH"] = str(code)
        argv = [sys.executable, "-m", "vae_anomaly", *args]
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): "
                         f"{done.stderr.decode()[-2000:]}")
    return seconds


def weights(model: Path) -> dict[str, bytes]:
    from safetensors.numpy import load_file

    return {name: array.tobytes() for name, array in load_file(model).items()}


def check_agreement(codes: dict[str, Path], scratch: Path) -> dict[str, bool]:
    """Against the first version: the same weights for the same seed, and
    byte-identical scores from one model."""
    fitted = {}
    for rev, code in codes.items():
        model = scratch / f"fit-{rev.replace('/', '_')}.vae"
        run(code, ["fit", str(SAMPLE / "train.csv"), "--model", str(model), "--seed", "0",
                   "-q"], scratch)
        fitted[rev] = weights(model)
    scored = {}
    shared = scratch / f"fit-{next(iter(codes)).replace('/', '_')}.vae"
    for rev, code in codes.items():
        output = scratch / f"scored-{rev.replace('/', '_')}.csv"
        run(code, commands(shared, output)["score new.csv"], scratch)
        scored[rev] = output.read_bytes()
    first = next(iter(codes))
    return {rev: {"same_weights": fitted[rev] == fitted[first],
                  "same_scores": scored[rev] == scored[first]} for rev in codes}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", action="append", dest="revs", metavar="REV",
                        help=f"git revision to time; repeat for several ({TREE!r}, the "
                             "default, is this working tree)")
    parser.add_argument("--runs", type=int, default=7, help="rounds; the median is reported")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    revs = args.revs or [TREE]
    with tempfile.TemporaryDirectory(prefix="startup-") as scratch_name:
        scratch = Path(scratch_name)
        codes = {rev: package_dir(rev, scratch / "code") for rev in revs}
        agreement = check_agreement(codes, scratch)
        # Each version scores with its own fit: a model file records how it is scored
        # (an older version's file keeps its K and its draws).
        models = {rev: scratch / f"fit-{rev.replace('/', '_')}.vae" for rev in revs}
        times: dict[str, list[float]] = {}
        for round_ in range(args.runs):
            for name, baseline in BASELINES.items():
                times.setdefault(name, []).append(run(None, baseline, scratch))
            for rev, code in codes.items():
                for name, command in commands(models[rev], scratch / "out.csv").items():
                    times.setdefault(f"{rev}: {name}", []).append(run(code, command, scratch))
            print(f"round {round_ + 1} of {args.runs} done", file=sys.stderr, flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    torch_s = medians["import torch"]
    print(f"| command | {' | '.join(revs)} |")
    print(f"|---|{'---:|' * len(revs)}")
    for name in BASELINES:
        print(f"| `{name}` | {medians[name]:.2f} s ({medians[name] / torch_s:.2f}x) "
              f"{'| ' * (len(revs) - 1)}|")
    for name in commands(Path("MODEL"), Path("OUT")):
        cells = [f"{medians[f'{rev}: {name}']:.2f} s ({medians[f'{rev}: {name}'] / torch_s:.2f}x)"
                 for rev in revs]
        print(f"| `{name}` | {' | '.join(cells)} |")
    print(f"\nmedians of {args.runs} runs; ratios to `import torch`. Against {revs[0]}: "
          f"{agreement}")
    if args.json:
        args.json.write_text(json.dumps({"medians": medians, "times": times,
                                         "agreement": agreement}, indent=1))


if __name__ == "__main__":
    main()
