"""Dask engine throughput: rows/s of `vae-anomaly score --engine dask` with 1 and 2
workers, against the local engine, on one machine.

Run (about 3 minutes on 2 idle CPU cores):

    python bench/dask_throughput.py none --partitions 8 --rows 25000 --out docs/scale.md
    python bench/dask_throughput.py DATA_DIR --model model.vae

The first argument is a folder of partitions (every *.csv and *.parquet in it is
scored, with --model), or `none`: then the script writes --partitions Parquet
files of --rows rows of the mixed-type table of bench/speed.py (an id, 13 numeric
and 4 text columns, ~0.5% odd rows) and fits a quick model (--fit-rows rows,
--epochs epochs; its quality does not matter here, its size does).

Every configuration runs the CLI as a separate process on the same files, and its
wall time is measured around that process:

- local: `--engine local` (one process; torch uses its default thread count),
  and again with OMP_NUM_THREADS=1 (one torch thread, as in each Dask worker);
- dask, N workers: a LocalCluster of N worker processes with one thread each,
  started beforehand (its start-up time is reported apart) and passed as
  `--scheduler`;
- dask, own cluster: no `--scheduler`, so the CLI starts and stops a LocalCluster
  sized to the machine; its wall time includes that.

Each dask run's outputs are compared byte for byte with the local run's. The
load average and any other busy process are recorded before each run. With
--out PATH the section "## Benchmark: Dask throughput" is written at the end of
PATH (replacing an earlier one).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the product from this checkout, here and in the workers

from speed import _chunk_table, busy_others, cpu_model, git_commit  # noqa: E402

SECTION = "## Benchmark: Dask throughput"


@dataclass
class Run:
    name: str
    workers: str
    seconds: float
    rows: int
    load: float
    others: str
    same_as_local: str = ""
    note: str = ""

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


# ----- data and model ----------------------------------------------------------------
def generate_partitions(folder: Path, partitions: int, rows: int) -> list[Path]:
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(partitions):
        path = folder / f"part-{index:03d}.parquet"
        if not path.exists():
            table = _chunk_table(np.random.default_rng([0, index]), index * rows, rows)
            pq.write_table(table, path)
        paths.append(path)
    return paths


def fit_quick_model(work: Path, rows: int, epochs: int) -> Path:
    import pyarrow.parquet as pq

    from vae_anomaly.api import fit_file

    train, model = work / "train.parquet", work / "model.vae"
    if not model.exists():
        pq.write_table(_chunk_table(np.random.default_rng([1]), 0, rows), train)
        fit_file(train, model, seed=0, epochs=epochs, exclude=["id"])
    return model


# ----- measuring ---------------------------------------------------------------------
def score_command(pattern: str, model: Path, out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "vae_anomaly", "score", pattern, "--model", str(model),
            "--output-dir", str(out), "--quiet", *extra]


def timed(command: list[str], env_extra: dict[str, str]) -> float:
    env = {**os.environ, **env_extra, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed (exit {done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    return seconds


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def compare_outputs(folder: Path, reference: Path) -> str:
    """'yes, byte for byte', or how far the scores are from the reference's."""
    if digests(folder) == digests(reference):
        return "yes, byte for byte"
    import pandas as pd

    rows = changed = flips = 0
    largest = 0.0
    for path in sorted(reference.iterdir()):
        read = pd.read_parquet if path.suffix == ".parquet" else pd.read_csv
        ours, theirs = read(folder / path.name), read(path)
        delta = (ours["anomaly_score"] - theirs["anomaly_score"]).abs()
        rows += len(delta)
        changed += int((delta > 0).sum())
        largest = max(largest, float(delta.max()))
        flips += int((ours["is_anomaly"] != theirs["is_anomaly"]).sum())
    return (f"no: {changed:,} of {rows:,} scores differ, by at most {largest:.1e}; "
            f"is_anomaly differs in {flips} rows")


def measure(name: str, workers: str, command: list[str], rows: int, out: Path,
            env_extra: dict[str, str] | None = None) -> Run:
    shutil.rmtree(out, ignore_errors=True)  # outputs of an earlier run would skew the check
    out.mkdir(parents=True)
    load, others = os.getloadavg()[0], busy_others()
    shown = " ".join([*(f"{k}={v}" for k, v in (env_extra or {}).items()), shlex.join(command)])
    log(f"{name}: load {load:.2f}, busy: {others}; running {shown}")
    seconds = timed(command, env_extra or {})
    log(f"{name}: {seconds:.1f}s, {rows / seconds:,.0f} rows/s")
    return Run(name, workers, seconds, rows, load, others)


def start_cluster(workers: int):
    from distributed import Client, LocalCluster

    started = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL)
    with Client(cluster) as client:
        client.run(_import_product)  # a ready cluster: torch imported in every worker
    return cluster, time.perf_counter() - started


def _import_product() -> bool:
    import vae_anomaly.distributed  # noqa: F401

    return True


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# ----- report ------------------------------------------------------------------------
def render(runs: list[Run], context: dict) -> str:
    local = runs[0]
    lines = [SECTION, "",
             f"Measured {context['started']:%Y-%m-%d %H:%M} UTC on commit {context['commit']} "
             f"with `{context['command']}`.", "",
             f"- Machine: {context['nproc']} CPU cores (`nproc`), {context['cpu']}, "
             f"{context['mem_gib']:.0f} GiB RAM; Python {platform.python_version()}, torch "
             f"{context['torch']}, dask/distributed {context['dask']}.",
             f"- Data: {context['data']}; {local.rows:,} rows in all. Model: {context['model']}.",
             "- Each row is one `vae-anomaly score` process (`--quiet`, default `--samples` and "
             "`--chunk-size`); wall time is measured around it and includes Python and torch "
             "start-up, reading, scoring and writing. rows/s = rows / wall s.", "",
             "| engine | workers | wall s | rows/s | vs local | outputs identical to local's | "
             "1-min load before | other busy processes |",
             "|---|---|---:|---:|---:|---|---:|---|"]
    for run in runs:
        lines.append(f"| {run.name}{run.note} | {run.workers} | {run.seconds:.1f} | "
                     f"{run.rows_per_s:,.0f} | {local.seconds / run.seconds:.2f}x | "
                     f"{run.same_as_local or '(reference)'} | {run.load:.2f} | {run.others} |")
    lines += ["", *context["notes"]]
    return "\n".join(lines).rstrip() + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace the section (kept last in the file) or append it."""
    text = path.read_text() if path.exists() else ""
    if SECTION in text:
        text = text[:text.index(SECTION)]
    path.write_text(text.rstrip("\n") + "\n\n" + section if text.strip() else section)


# ----- main --------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", metavar="DATA_DIR_OR_NONE",
                        help="folder of partitions to score, or `none` to generate them")
    parser.add_argument("--model", type=Path, help="model for DATA_DIR (needed with a folder)")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--rows", type=int, default=25_000, help="rows per generated partition")
    parser.add_argument("--fit-rows", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "vae_dask_bench")
    parser.add_argument("--out", type=Path, help="file to write the section into")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import dask
    import pyarrow.parquet as pq
    import torch

    started = dt.datetime.now(dt.timezone.utc)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    notes = []
    if args.data.lower() == "none":
        log(f"generating {args.partitions} partitions of {args.rows:,} rows in {work / 'data'}")
        inputs = generate_partitions(work / "data", args.partitions, args.rows)
        log(f"fitting a quick model ({args.fit_rows:,} rows, {args.epochs} epochs)")
        model = fit_quick_model(work, args.fit_rows, args.epochs)
        data_text = (f"{len(inputs)} generated Parquet partitions x {args.rows:,} rows of the "
                     "mixed-type table of bench/speed.py (an id, 13 numeric and 4 text "
                     "columns, ~0.5% odd rows)")
        model_text = (f"fitted on {args.fit_rows:,} other generated rows for {args.epochs} "
                      "epochs (throughput depends on the model's size, not its quality)")
    else:
        if args.model is None:
            raise SystemExit("pass --model with a DATA_DIR")
        folder, model = Path(args.data), args.model
        inputs = sorted(folder.glob("*.parquet")) or sorted(folder.glob("*.csv"))
        data_text, model_text = f"{len(inputs)} partitions from {folder}", str(model)
    rows = sum(_rows(path, pq) for path in inputs)
    # A glob over exactly these files; the CLI expands it itself.
    pattern = str(inputs[0].parent / ("*" + inputs[0].suffix))

    runs = [measure("local", f"1 process, {torch.get_num_threads()} torch threads",
                    score_command(pattern, model, work / "out-local", ["--engine", "local"]),
                    rows, work / "out-local"),
            # The local engine on one torch thread, as each Dask worker runs: separates
            # the effect of torch's threading from that of Dask's processes.
            measure("local, `OMP_NUM_THREADS=1`", "1 process, 1 torch thread",
                    score_command(pattern, model, work / "out-local-1", ["--engine", "local"]),
                    rows, work / "out-local-1", {"OMP_NUM_THREADS": "1"})]
    for workers in args.workers:
        cluster, startup = start_cluster(workers)
        try:
            out = work / f"out-dask-{workers}"
            run = measure("dask, `--scheduler`", str(workers),
                          score_command(pattern, model, out, [
                              "--engine", "dask", "--scheduler", cluster.scheduler_address]),
                          rows, out)
        finally:
            cluster.close()
        run.note = f" (cluster start-up {startup:.1f} s, not counted)"
        runs.append(run)
    out = work / "out-dask-own"
    runs.append(measure("dask, own cluster (start-up counted)",
                        f"{_auto_workers()} (sized to the machine)",
                        score_command(pattern, model, out, ["--engine", "dask"]), rows, out))
    folders = ["out-local-1", *(f"out-dask-{w}" for w in args.workers), "out-dask-own"]
    for run, folder in zip(runs[1:], folders):
        run.same_as_local = compare_outputs(work / folder, work / "out-local")
    notes.append("- The 2 cores are shared: other busy processes at the start of a run (last "
                 "column) make that run slower, so compare rows only at similar load.")
    context = dict(started=started, commit=git_commit(), command=shlex.join(
                       ["python", "bench/dask_throughput.py", *(argv or sys.argv[1:])]),
                   nproc=os.cpu_count(), cpu=cpu_model(), torch=torch.__version__,
                   dask=dask.__version__, data=data_text, model=model_text, notes=notes,
                   mem_gib=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    section = render(runs, context)
    print(section)
    if args.out:
        write_section(args.out, section)
        log(f"wrote the {SECTION!r} section of {args.out}")
    return 0


def _rows(path: Path, pq) -> int:
    if path.suffix == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as handle:
        return sum(1 for _ in handle) - 1


def _auto_workers() -> int:
    from distributed.deploy.utils import nprocesses_nthreads

    return nprocesses_nthreads()[0]


if __name__ == "__main__":
    sys.exit(main())
