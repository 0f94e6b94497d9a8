"""Speed benchmark: vae-anomaly's score and fit on generated mixed-type CSVs.

Run (about 30-40 min on 2 CPU cores; writes the "## Speed" section of --out):

    python bench/speed.py --rows 1000000 5000000 --fit-rows 200000 --out docs/benchmarks.md

On a machine with a CUDA GPU, bench/gpu.sh runs it with --device cuda (and the
train-on-GPU, score-on-CPU comparison) for the "## Speed on a GPU" section.

What it measures, each as a separate process so its peak RSS can be read
(``/usr/bin/time -f %M``, else the kernel's VmHWM polled while it runs):

1. the I/O floor: read the CSV and write it back with the reader and writer the
   product uses (``vae_anomaly.data.read_batches`` / ``table_output``);
2. ``vae-anomaly score --samples K`` on the same file, and its ratio to the floor;
3. ``vae-anomaly fit`` with default settings on the training file (epochs run,
   best validation loss from ``vae-anomaly info --json``), and a slower reference
   fit (``--batch-size 256 --epochs 150``) for the validation-loss comparison; when
   the reference would take more than --reference-budget seconds, both fits run on
   a 50,000-row subsample instead;
4. PyOD's VAE (``pyod.models.vae.VAE``, its default settings, as in
   bench/quality.py) fit plus decision_function on the same training rows, one-hot
   encoded and standardised, for as many epochs as the default fit ran; when that
   would exceed --pyod-budget seconds it trains only as many epochs as fit in the
   budget and the per-epoch time is extrapolated (the report says so).

5. with ``--database auto|URL``: ``vae-anomaly score`` of each --rows file loaded into
   a PostgreSQL table (``auto``: a throwaway server started with ``initdb`` in the
   work folder; a URL: a server of yours, where the tables ``bench_N`` and
   ``bench_scored`` are replaced), read through ``--query`` and written to a table
   (``--if-exists replace``), against the same rows CSV to CSV (item 2). Its peak
   RSS is the CLI process's; the server's own memory is not in it. The full run:

       python bench/speed.py --rows 1000000 --database auto --skip-pyod --skip-reference

The load average is recorded before each measurement, with whether
bench/quality.py (or another busy process) was running.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SECTION = "## Speed"
GEN_CHUNK_ROWS = 250_000
SUBSAMPLE_ROWS = 50_000
# The slower reference: 8x smaller batches than the default on 200,000 rows and up
# to 150 epochs, i.e. about 20x the default's optimiser steps.
REFERENCE_ARGS = ["--batch-size", "256", "--epochs", "150"]
TIME_BIN = "/usr/bin/time"

COUNTRIES = ["US", "DE", "FR", "GB", "IN", "BR", "JP", "CN", "CA", "AU", "ES", "IT", "MX",
             "NL", "SE", "PL", "KR", "ZA", "AR", "TR"]
CHANNELS = ["web", "mobile", "store"]
DEVICES = ["ios", "android", "windows", "mac", "linux"]
PLANS = ["free", "basic", "plus", "pro", "team", "business", "enterprise", "legacy"]


# ----- data --------------------------------------------------------------------------
def _chunk_table(rng: np.random.Generator, first_row: int, n: int):
    """``n`` rows of the mixed-type table: 13 numeric, 4 categorical, an id column."""
    import pyarrow as pa

    age = np.clip(np.round(rng.normal(41, 13, n)), 18, 95).astype(np.int64)
    tenure = np.maximum(0, np.round((age - 18) * 365 * rng.beta(2, 5, n))).astype(np.int64)
    amount = np.round(rng.lognormal(3.5, 1.1, n), 2)                       # heavy-tailed
    balance = np.round(amount * rng.lognormal(1.0, 0.4, n) + rng.normal(0, 20, n), 2)
    n_items = rng.poisson(1 + amount / 40, n).astype(np.int64)            # depends on amount
    discount = np.round(rng.beta(1.2, 8, n), 3)
    z = rng.standard_normal((n, 2))
    score_a = np.round(50 + 10 * z[:, 0], 3)
    score_b = np.round(20 + 4 * (0.8 * z[:, 0] + 0.6 * z[:, 1]), 3)      # corr 0.8 with a
    latency = np.round(5 * (rng.pareto(2.5, n) + 1), 2)                   # heavy-tailed
    temperature = np.round(rng.normal(21, 3, n), 2)
    clicks = rng.negative_binomial(3, 0.2, n).astype(np.int64)
    hour = rng.integers(0, 24, n).astype(np.int64)
    ratio = np.round(balance / (amount + 1), 4)

    country = rng.choice(len(COUNTRIES), n, p=_zipf(len(COUNTRIES)))
    channel = rng.choice(len(CHANNELS), n, p=[0.6, 0.3, 0.1])
    device = np.where(channel == 1, rng.choice(2, n), rng.choice(len(DEVICES), n))
    plan = rng.choice(len(PLANS), n, p=_zipf(len(PLANS)))

    # About 0.5% of the rows are anomalous: scrambled amounts or unusual combinations.
    odd = rng.random(n) < 0.005
    amount = np.where(odd, np.round(amount * rng.choice([0.01, 50.0], n), 2), amount)
    hour = np.where(odd & (rng.random(n) < 0.5), 3, hour)

    def numeric(values, missing_rate=0.0):
        mask = rng.random(n) < missing_rate if missing_rate else None
        return pa.array(values, mask=mask)

    def category(levels, codes):
        return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()),
                                              pa.array(levels)).cast(pa.string())

    ids = np.char.add("r", np.char.zfill(np.arange(first_row, first_row + n).astype(str), 9))
    return pa.table({
        "id": pa.array(ids, pa.string()),
        "amount": numeric(amount, 0.02),
        "balance": numeric(balance),
        "age": numeric(age, 0.02),
        "tenure_days": numeric(tenure),
        "n_items": numeric(n_items),
        "discount": numeric(discount),
        "score_a": numeric(score_a),
        "score_b": numeric(score_b, 0.02),
        "latency_ms": numeric(latency, 0.02),
        "temperature": numeric(temperature),
        "clicks": numeric(clicks),
        "hour": numeric(hour),
        "ratio": numeric(ratio),
        "country": category(COUNTRIES, country),
        "channel": category(CHANNELS, channel),
        "device": category(DEVICES, device),
        "plan": category(PLANS, plan),
    })


def _zipf(k: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, k + 1)
    return weights / weights.sum()


def generate_csv(path: Path, rows: int, seed: int) -> None:
    """Write ``rows`` rows in chunks (memory stays at one chunk), atomically."""
    import pyarrow.csv as pa_csv

    if path.exists():
        return
    tmp = path.with_name(path.name + ".partial")
    writer = None
    with open(tmp, "wb") as sink:
        for index, first in enumerate(range(0, rows, GEN_CHUNK_ROWS)):
            n = min(GEN_CHUNK_ROWS, rows - first)
            table = _chunk_table(np.random.default_rng([seed, index]), first, n)
            if writer is None:
                sink.write((",".join(table.column_names) + "\n").encode())
                writer = pa_csv.CSVWriter(sink, table.schema, write_options=pa_csv.WriteOptions(
                    include_header=False, quoting_style="none"))
            writer.write_table(table)
        writer.close()
    os.replace(tmp, path)


def head_csv(source: Path, path: Path, rows: int) -> None:
    """The header and first ``rows`` data rows of ``source``."""
    if path.exists():
        return
    with open(source, "rb") as src, open(path, "wb") as dst:
        for i, line in enumerate(src):
            if i > rows:
                break
            dst.write(line)


# ----- PostgreSQL ----------------------------------------------------------------------
# The generated columns' types in PostgreSQL: the CSV's integers as bigint, its other
# numbers as double precision, text as text; the same values as the CSV's cells.
INTEGER_COLUMNS = {"age", "tenure_days", "n_items", "clicks", "hour"}
TEXT_COLUMNS = {"id", "country", "channel", "device", "plan"}


def pg_tool(name: str) -> str:
    found = shutil.which(name)
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if found is None and (folder / name).exists():
            found = str(folder / name)
    if found is None:
        raise SystemExit(f"--database needs PostgreSQL's {name} (apt-get install postgresql)")
    return found


class Postgres:
    """A PostgreSQL server at ``url``: the given one, or (``auto``) a throwaway server on
    a Unix socket, run as the ``postgres`` user when this runs as root."""

    def __init__(self, url: str, work: Path):
        self.folder = None
        if url != "auto":
            self.url = url
            return
        self.folder = Path(tempfile.mkdtemp(prefix="vae-speed-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        port = 5432  # only names the socket file in our own folder
        data = self.folder / "data"
        self._as_owner([pg_tool("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"])
        self._as_owner([pg_tool("pg_ctl"), "-D", str(data), "-l", str(self.folder / "log"),
                        "-w", "-o", f"-k {self.folder} -p {port} -c listen_addresses=''",
                        "start"])
        self.url = f"postgresql://postgres@/postgres?host={self.folder}&port={port}"

    @staticmethod
    def _as_owner(cmd: list[str]) -> None:
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)

    def psql(self, sql: str) -> str:
        done = subprocess.run([pg_tool("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                               "-d", self.url, "-c", sql], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def load(self, table: str, csv: Path) -> float:
        """Load the generated CSV into ``table`` (replaced); the seconds it took."""
        header = csv.open().readline().strip().split(",")
        columns = ", ".join(
            f"{name} {'text' if name in TEXT_COLUMNS else 'bigint' if name in INTEGER_COLUMNS else 'double precision'}"
            for name in header)
        started = time.perf_counter()
        self.psql(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({columns})")
        self.psql(f"\\copy {table} FROM '{csv}' WITH (FORMAT csv, HEADER)")
        self.psql(f"VACUUM ANALYZE {table}")
        return time.perf_counter() - started

    def stop(self) -> None:
        if self.folder is not None:
            with contextlib.suppress(Exception):
                self._as_owner([pg_tool("pg_ctl"), "-D", str(self.folder / "data"), "-m",
                                "fast", "stop"])
            shutil.rmtree(self.folder, ignore_errors=True)


# ----- measuring ---------------------------------------------------------------------
@dataclass
class Run:
    wall_s: float
    peak_mib: float
    rc: int
    stderr: str
    stdout: str
    timed_out: bool = False
    partial_bytes: int = 0


@dataclass
class Measurement:
    name: str
    rows: int
    run: Run
    load_before: tuple[float, float, float]
    others: str
    extra: dict = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.run.wall_s if self.run.wall_s else math.nan


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _hwm_kib(pid: int) -> int:
    """Peak RSS (VmHWM) of ``pid`` and its descendants, in KiB (0 when unreadable)."""
    best = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    best = max(best, int(line.split()[1]))
        except OSError:
            pass
        if p != pid:
            best = max(best, _hwm_kib(p))
    return best


def run_measured(cmd: list[str], timeout: float | None = None, cwd: Path | None = None,
                 watch: Path | None = None) -> Run:
    """Run ``cmd``; wall time and peak RSS (``/usr/bin/time -f %M`` when present).

    ``watch``: a glob (as a Path) of the partial output file; its last size seen is
    kept in ``Run.partial_bytes``, to tell how far a run stopped at ``timeout`` got.
    """
    have_time = os.access(TIME_BIN, os.X_OK)
    with tempfile.NamedTemporaryFile("r", suffix=".time") as rss_file:
        full = [TIME_BIN, "-f", "%M", "-o", rss_file.name, *cmd] if have_time else cmd
        started = time.perf_counter()
        proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=cwd, start_new_session=True)
        polled, timed_out, partial = 0, False, 0
        out_parts: list[str] = []
        while True:
            try:
                out, err = proc.communicate(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                polled = max(polled, _hwm_kib(proc.pid))
                if watch is not None:
                    sizes = [p.stat().st_size for p in watch.parent.glob(watch.name)
                             if p.exists()]
                    partial = max(sizes, default=partial)
                if timeout is not None and time.perf_counter() - started > timeout:
                    timed_out = True
                    # SIGTERM unwinds the CLI like Ctrl-C (its partial output is removed).
                    for child in _children(proc.pid) or [proc.pid]:
                        os.kill(child, signal.SIGTERM)
                    out, err = proc.communicate()
                    break
        wall = time.perf_counter() - started
        out_parts.append(out)
        reported = 0
        if have_time:
            numbers = re.findall(r"^(\d+)\s*$", Path(rss_file.name).read_text(), re.M)
            reported = int(numbers[-1]) if numbers else 0
    peak_kib = max(reported, polled)
    return Run(wall, peak_kib / 1024, proc.returncode, err, "".join(out_parts), timed_out,
               partial)


def busy_others() -> str:
    """bench/quality.py or other processes using a lot of CPU right now (2 s sample)."""
    me = {os.getpid(), *_children(os.getpid())}

    def ticks() -> dict[int, tuple[int, str]]:
        result = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in me:
                continue
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            result[int(entry.name)] = (int(fields[11]) + int(fields[12]), cmd)
        return result

    first = ticks()
    time.sleep(2.0)
    second = ticks()
    hz = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, (total, cmd) in second.items():
        if pid in first:
            share = (total - first[pid][0]) / hz / 2.0
            if share >= 0.3:
                busy.append(f"{_short(cmd)} ({share:.0%} CPU)")
    if any("bench/quality.py" in cmd for _, cmd in second.values()) and \
            not any("bench/quality.py" in b for b in busy):
        busy.append("bench/quality.py (running, <30% CPU)")
    return "; ".join(busy) or "none"


def _short(cmd: str) -> str:
    """'python /x/bin/vae-anomaly fit ...' -> 'vae-anomaly fit'; '-m pytest ...' -> 'pytest'."""
    words = cmd.split()
    if words and os.path.basename(words[0]).startswith("python"):
        words = words[1:]
    if words[:1] == ["-m"]:
        words = words[1:]
    if not words:
        return "?"
    name = words[0] if words[0].startswith("bench/") else os.path.basename(words[0])
    rest = words[1] if len(words) > 1 and not words[1].startswith(("-", "/")) else ""
    return f"{name} {rest}".strip()[:40]


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(args.workdir)
        self.work.mkdir(parents=True, exist_ok=True)
        self.cli = args.cli or shutil.which("vae-anomaly") or "vae-anomaly"
        self.results: list[Measurement] = []
        self.notes: list[str] = []
        self.device_args = ["--device", args.device] if args.device else []

    def log(self, message: str) -> None:
        print(f"[{dt.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)

    def measure(self, name: str, rows: int, cmd: list[str], timeout: float | None = None,
                watch: Path | None = None, **extra) -> Measurement:
        load, others = os.getloadavg(), busy_others()
        shown = shlex.join(cmd) if "-c" not in cmd else f"{cmd[0]} -c <read_batches -> table_output> {shlex.join(cmd[3:])}"
        self.log(f"{name}: load {load[0]:.2f}, busy: {others}; running {shown}")
        run = run_measured(cmd, timeout=timeout, watch=watch)
        if run.rc != 0 and not run.timed_out:
            raise RuntimeError(f"{name} failed (exit {run.rc}):\n{run.stderr[-3000:]}")
        m = Measurement(name, rows, run, load, others, dict(extra))
        self.log(f"{name}: {run.wall_s:.1f}s, peak RSS {run.peak_mib:.0f} MiB"
                 + (" (stopped at the time limit)" if run.timed_out else ""))
        self.results.append(m)
        return m

    # --- the parts ---
    def floor(self, path: Path, rows: int) -> Measurement:
        code = ("import sys; from pathlib import Path; "
                "from vae_anomaly.data import read_batches, table_output, DEFAULT_CHUNK_ROWS; "
                "w_path = Path(sys.argv[2])\n"
                "with table_output(w_path) as w:\n"
                "    for t in read_batches(sys.argv[1], DEFAULT_CHUNK_ROWS): w.write(t)\n")
        out = self.work / "floor.out.csv"
        m = self.measure(f"I/O floor, {rows:,} rows", rows,
                         [sys.executable, "-c", code, str(path), str(out)])
        out.unlink(missing_ok=True)
        return m

    def score(self, path: Path, rows: int, model: Path, timeout: float | None = None) -> Measurement:
        out = self.work / "scored.csv"
        cmd = [self.cli, "score", str(path), "--model", str(model), "-o", str(out),
               "--samples", str(self.args.samples), *self.device_args]
        if self.args.chunk_size:
            cmd += ["--chunk-size", str(self.args.chunk_size)]
        m = self.measure(f"score K={self.args.samples}, {rows:,} rows", rows, cmd,
                         timeout=timeout, watch=self.work / ".scored.csv.*.partial")
        if out.exists():
            m.extra["out_bytes"] = out.stat().st_size
            out.unlink()
        return m

    def score_database(self, server: "Postgres", table: str, rows: int,
                       model: Path) -> Measurement:
        cmd = [self.cli, "score", server.url, "--query", f"SELECT * FROM {table}", "--model",
               str(model), "-o", server.url, "--output-table", "bench_scored", "--if-exists",
               "replace", "--samples", str(self.args.samples), *self.device_args]
        if self.args.chunk_size:
            cmd += ["--chunk-size", str(self.args.chunk_size)]
        m = self.measure(f"score K={self.args.samples}, {rows:,} rows, PostgreSQL table to "
                         "table", rows, cmd)
        written = int(server.psql("SELECT count(*) FROM bench_scored"))
        if written != rows:
            raise RuntimeError(f"bench_scored holds {written:,} rows, not {rows:,}")
        return m

    def fit(self, name: str, path: Path, rows: int, model: Path, extra_args=()) -> Measurement:
        extra_args = list(extra_args)
        if self.args.smoke:
            if "--epochs" in extra_args:
                extra_args[extra_args.index("--epochs") + 1] = "3"
            else:
                extra_args += ["--epochs", "3"]
        cmd = [self.cli, "fit", str(path), "--model", str(model), "--quiet", *extra_args,
               *self.device_args]
        m = self.measure(name, rows, cmd)
        info = json.loads(subprocess.run([self.cli, "info", str(model), "--json"], check=True,
                                         capture_output=True, text=True).stdout)
        t = info["training"]
        m.extra.update(
            epochs_run=t["epochs_run"], best_epoch=t["best_epoch"],
            stopped_early=t["stopped_early"], loop_s=sum(h["seconds"] for h in t["history"]),
            median_epoch_s=float(np.median([h["seconds"] for h in t["history"]])),
            best_val_loss=t["history"][t["best_epoch"] - 1]["val_loss"],
            batch_size=info["params"].get("batch_size") or _default_batch_size(t["train_rows"]),
            train_rows=t["train_rows"], device=t["device"])
        self.log(f"{name}: {t['epochs_run']} epochs (best {t['best_epoch']}), best val loss "
                 f"{m.extra['best_val_loss']:.4f}")
        return m

    def reference_estimate(self, path: Path, rows: int, expected_epochs: int) -> float:
        """Seconds the reference fit would take at most: 2 timed epochs x its epoch bound."""
        model = self.work / "calibrate.vae"
        batch = REFERENCE_ARGS[REFERENCE_ARGS.index("--batch-size") + 1]
        subprocess.run([self.cli, "fit", str(path), "--model", str(model), "--quiet",
                        "--batch-size", batch, "--epochs", "2", *self.device_args], check=True,
                       capture_output=True, text=True)
        info = json.loads(subprocess.run([self.cli, "info", str(model), "--json"], check=True,
                                         capture_output=True, text=True).stdout)
        per_epoch = float(np.mean([h["seconds"] for h in info["training"]["history"]]))
        model.unlink(missing_ok=True)
        return per_epoch * max(expected_epochs,
                               int(REFERENCE_ARGS[REFERENCE_ARGS.index("--epochs") + 1]))

    def pyod(self, path: Path, rows: int, epochs: int) -> Measurement:
        out = self.work / "pyod.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--pyod-worker", str(path),
               "--pyod-epochs", str(epochs), "--pyod-budget", str(self.args.pyod_budget),
               "--pyod-result", str(out)]
        m = self.measure(f"PyOD VAE fit + decision_function, {rows:,} rows", rows, cmd)
        m.extra.update(json.loads(out.read_text()))
        return m


def _default_batch_size(train_rows: int) -> str:
    try:
        from vae_anomaly.training import TrainingConfig
        return f"{TrainingConfig().resolved_batch_size(train_rows)} (default)"
    except Exception:  # the product's internals moved: say only that it is the default
        return "default"


# ----- PyOD worker (runs in its own process) -------------------------------------------
def pyod_worker(path: Path, epochs: int, budget: float, result_path: Path) -> None:
    import pandas as pd
    import torch
    from pyod.models.vae import VAE
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    class Stop(Exception):
        pass

    class TimedVAE(VAE):
        def train(self, train_loader):
            self.epoch_ends = [time.perf_counter()]
            return super().train(train_loader)

        def epoch_update(self):
            super().epoch_update()
            self.epoch_ends.append(time.perf_counter())
            done = len(self.epoch_ends) - 1
            if done < self.epoch_num and done >= 2 and \
                    self.epoch_ends[-1] - self.epoch_ends[0] + \
                    (self.epoch_ends[-1] - self.epoch_ends[-2]) > budget:
                raise Stop

    t0 = time.perf_counter()
    frame = pd.read_csv(path)
    frame = frame.drop(columns=["id"])
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    text = [c for c in frame.columns if c not in numeric]
    encoder = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"),
                              OneHotEncoder(handle_unknown="ignore", sparse_output=False)), text),
    ])
    x = encoder.fit_transform(frame).astype(np.float32)
    t_prep = time.perf_counter()
    detector = TimedVAE(epoch_num=epochs, random_state=0, verbose=0)
    stopped = False
    try:
        detector.fit(x)
    except Stop:
        stopped = True
        # The rest of PyOD's fit(): score the training rows and set the threshold.
        detector.decision_scores_ = detector.decision_function(x)
        detector._process_decision_scores()
    t_fit = time.perf_counter()
    scores = detector.decision_function(x)
    t_dec = time.perf_counter()
    ends = detector.epoch_ends
    epoch_times = np.diff(ends)
    trained = len(epoch_times)
    per_epoch = float(np.mean(epoch_times))
    setup = ends[0] - t_prep                     # build the model, standardise
    after = t_fit - ends[-1]                     # fit()'s own decision_function
    fit_full = setup + per_epoch * epochs + after
    result = dict(
        epochs_target=epochs, epochs_trained=trained, extrapolated=stopped,
        per_epoch_s=per_epoch, median_epoch_s=float(np.median(epoch_times)),
        prep_s=t_prep - t0, fit_measured_s=t_fit - t_prep,
        fit_s=fit_full, decision_s=t_dec - t_fit, total_s=(t_prep - t0) + fit_full + (t_dec - t_fit),
        batch_size=detector.batch_size, features=int(x.shape[1]), device=str(detector.device),
        torch=torch.__version__, threads=torch.get_num_threads(), n_scores=int(len(scores)))
    result_path.write_text(json.dumps(result))


# ----- report ------------------------------------------------------------------------
def git_commit() -> str:
    """The checked-out commit of the product, with "+changes" when the tree is dirty."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "vae_anomaly"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes in vae_anomaly/" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _f(value, digits=1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def render(bench: Bench, command: str, started: dt.datetime, context: dict) -> str:
    r = bench.results
    by_name = {m.name: m for m in r}
    args = bench.args
    lines = [args.section, ""]
    lines += [
        f"Measured {started:%Y-%m-%d %H:%M} UTC on commit {context['commit']} with `{command}`.",
        "",
        f"- Machine: {context['nproc']} CPU cores (`nproc`), {context['cpu']}, "
        f"{context['mem_gib']:.0f} GiB RAM, {_device_text(context, args)}; Python "
        f"{platform.python_version()}, torch {context['torch']}, pyarrow {context['pyarrow']}"
        + (f", PyOD {context['pyod']}" if context.get("pyod") else "") + ".",
        f"- Data: generated mixed-type CSVs (seeded numpy): an `id` text column, 13 numeric "
        f"columns (ints and floats, some heavy-tailed, some correlated, ~2% missing in 4 of "
        f"them), 4 text categorical columns (3-20 levels), ~0.5% odd rows. Scored files: "
        + ", ".join(f"{n:,} rows ({context['sizes'][n] / 2**20:,.0f} MiB)" for n in args.rows)
        + f"; training file: {args.fit_rows:,} rows.",
        f"- Each measurement is a separate process; wall time is measured around it and peak "
        f"RSS is `/usr/bin/time -f %M` (MiB). `score` runs with `--samples {args.samples}` and "
        f"the default `--chunk-size`" + (f" {args.chunk_size}" if args.chunk_size else "")
        + "; the I/O floor reads and writes the same file with the product's own reader and "
        "writer (`vae_anomaly.data.read_batches` -> `table_output`, same chunk size). rows/s is "
        "rows in the file / wall s (for fit: training-file rows / wall s).",
        "",
        "| Measurement | Rows | Wall s | Rows/s | Peak RSS MiB | Ratio | Load avg before (1/5/15 min) "
        "| Other busy processes |",
        "|---|---:|---:|---:|---:|---|---|---|",
    ]
    for m in r:
        ratio = m.extra.get("ratio_text", "")
        wall = _f(m.run.wall_s) + (" (stopped)" if m.run.timed_out else "")
        rows_s = _f(m.rows_per_s, 0) if not m.run.timed_out else "–"
        if "pyod" in m.name.lower() and m.extra.get("extrapolated"):
            wall = f"{_f(m.run.wall_s)} measured; ~{_f(m.extra['total_s'], 0)} extrapolated"
            rows_s = "–"
        load = "/".join(f"{x:.2f}" for x in m.load_before)
        lines.append(f"| {m.name} | {m.rows:,} | {wall} | {rows_s} | {_f(m.run.peak_mib, 0)} "
                     f"| {ratio} | {load} | {m.others} |")
    lines.append("")
    fits = [m for m in r if "epochs_run" in m.extra]
    if fits:
        lines += ["Fits (validation loss is the mean negative ELBO on the 10% held-out rows, "
                  "at the best epoch; lower is better; the two fits share the same split):", "",
                  "| Fit | Device | Rows | Batch size | Epochs run (best) | Wall s "
                  "| Training loop s | Wall s / epoch | Rows trained / s (loop) "
                  "| Best validation loss |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for m in fits:
            e = m.extra
            lines.append(
                f"| {m.name} | {e.get('device', '')} | {m.rows:,} "
                f"| {e.get('batch_size') or e.get('batch_label', 'default')} "
                f"| {e['epochs_run']} ({e['best_epoch']}{', stopped early' if e['stopped_early'] else ''}) "
                f"| {_f(m.run.wall_s)} | {_f(e['loop_s'])} | {_f(m.run.wall_s / e['epochs_run'], 2)} "
                f"| {_f(e['train_rows'] * e['epochs_run'] / e['loop_s'], 0)} "
                f"| {e['best_val_loss']:.4f} |")
        lines.append("")
    lines += [f"- {note}" for note in bench.notes]
    return "\n".join(lines).rstrip() + "\n"


def _device_text(context: dict, args: argparse.Namespace) -> str:
    if not context.get("gpu"):
        return "no GPU (all runs on the CPU)"
    return (f"one {context['gpu']} GPU (CUDA {context['cuda']}); `fit` and `score` ran with "
            f"`--device {args.device or 'auto'}`, PyOD on its default device")


def write_section(path: Path, section: str, heading: str = SECTION) -> None:
    if path.exists():
        text = path.read_text()
        lines = text.splitlines(keepends=True)
        start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
        if start is not None:
            end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                       len(lines))
            tail = "".join(lines[end:])
            new = "".join(lines[:start]) + section + ("\n" + tail if tail else "")
        else:
            new = text.rstrip("\n") + ("\n\n" if text.strip() else "") + section
    else:
        new = section
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(new)
    os.replace(tmp, path)


# ----- main --------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000],
                        help="Rows of each file to score (default: 1000000 5000000).")
    parser.add_argument("--fit-rows", type=int, default=200_000,
                        help="Rows of the training file (default: 200000).")
    parser.add_argument("--samples", type=int, default=16, help="score --samples K (default 16).")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="score --chunk-size (default: the CLI's default).")
    parser.add_argument("--workdir", default="/tmp/vae-speed",
                        help="Where the generated files go; reused when present.")
    parser.add_argument("--out", type=Path, default=None,
                        help="Markdown file whose --section section is replaced (or appended).")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                        help="--device for every fit and score (default: the CLI's default).")
    parser.add_argument("--cli", default=None,
                        help="The vae-anomaly command to measure (default: the one on PATH).")
    parser.add_argument("--section", default=SECTION,
                        help=f"Heading of the section written to --out (default {SECTION!r}).")
    parser.add_argument("--skip-pyod", action="store_true", help="Skip the PyOD VAE comparison.")
    parser.add_argument("--skip-reference", action="store_true",
                        help="Skip the slower reference fit.")
    parser.add_argument("--reference-budget", type=float, default=900,
                        help="Seconds the reference fit may take on the full training file "
                             "before both fits move to a 50,000-row subsample (default 900).")
    parser.add_argument("--pyod-budget", type=float, default=300,
                        help="Seconds of PyOD training before the per-epoch time is "
                             "extrapolated (default 300).")
    parser.add_argument("--score-budget", type=float, default=900,
                        help="When a larger file's score would take longer than this (seconds, "
                             "extrapolated from the smaller file), it is stopped after this long; "
                             "its peak RSS so far is kept (default 900).")
    parser.add_argument("--database", metavar="auto|URL", default=None,
                        help="Also score each --rows file from a PostgreSQL table to a table: "
                             "auto starts a throwaway server (initdb); a URL uses yours "
                             "(tables bench_N and bench_scored are replaced). Needs "
                             "pip install 'vae-anomaly[sql]'.")
    parser.add_argument("--smoke", action="store_true",
                        help="Quick check of the script: every fit (ours and PyOD) runs at most "
                             "3 epochs; the numbers are not a benchmark.")
    parser.add_argument("--pyod-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pyod-epochs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pyod-result", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.pyod_worker:
        pyod_worker(args.pyod_worker, args.pyod_epochs, args.pyod_budget, args.pyod_result)
        return 0
    command = "python bench/speed.py" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    started = dt.datetime.now(dt.timezone.utc)
    bench = Bench(args)
    import pyarrow
    import torch

    context = dict(nproc=os.cpu_count(), cpu=cpu_model(), torch=torch.__version__,
                   pyarrow=pyarrow.__version__,
                   mem_gib=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
                   gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                   cuda=torch.version.cuda)
    context["nproc"] = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout)
    context["commit"] = git_commit()
    if not os.access(TIME_BIN, os.X_OK):
        bench.notes.append(f"{TIME_BIN} was missing: peak RSS is the kernel's VmHWM polled "
                           "once a second.")

    # 1. data
    work = bench.work
    train_csv = work / f"train_{args.fit_rows}.csv"
    bench.log(f"generating {train_csv}")
    generate_csv(train_csv, args.fit_rows, seed=1)
    files = {}
    for n in args.rows:
        files[n] = work / f"data_{n}.csv"
        bench.log(f"generating {files[n]}")
        generate_csv(files[n], n, seed=0)
    context["sizes"] = {n: files[n].stat().st_size for n in args.rows}

    # 2c. default fit (its model is the one score uses)
    model = work / "default.vae"
    fit_default = bench.fit(f"fit (defaults), {args.fit_rows:,} rows", train_csv,
                            args.fit_rows, model)
    ours_per_epoch = fit_default.run.wall_s / fit_default.extra["epochs_run"]
    fit_default.extra["per_epoch_s"] = ours_per_epoch

    # 2a/2b. floor and score at each size
    score_rate = out_bytes_per_row = None
    for n in args.rows:
        floor = bench.floor(files[n], n)
        floor.extra["ratio_text"] = "1.0x (floor)"
        timeout = None
        if score_rate and n / score_rate > args.score_budget:
            timeout = args.score_budget
            bench.log(f"score on {n:,} rows would take ~{n / score_rate:.0f}s at the rate "
                      f"measured so far; it runs for at most {timeout:.0f}s")
        scored = bench.score(files[n], n, model, timeout=timeout)
        if scored.run.timed_out:
            done = (scored.run.partial_bytes / out_bytes_per_row if out_bytes_per_row else None)
            scored.extra["ratio_text"] = (
                f"stopped after {scored.run.wall_s:.0f}s"
                + (f" at ~{done:,.0f} rows" if done else ""))
            bench.notes.append(
                f"Scoring {n:,} rows was expected to take ~{n / score_rate / 60:.0f} min at the "
                f"rate of the smaller file ({score_rate:,.0f} rows/s), over the "
                f"{args.score_budget:.0f}-s --score-budget, so it was stopped (SIGTERM) "
                f"after {scored.run.wall_s:.0f} s"
                + (f", having written ~{done:,.0f} rows ({scored.run.partial_bytes / 2**20:,.0f} MiB "
                   f"of output)" if done else "")
                + f"; its peak RSS is the peak up to then (read from /proc while it ran), to "
                  f"show whether memory stays flat with the file size. Its floor ratio would "
                  f"be ~{n / score_rate / floor.run.wall_s:.1f}x by extrapolation.")
        else:
            scored.extra["ratio_text"] = f"score/floor = {scored.run.wall_s / floor.run.wall_s:.1f}x"
            score_rate = n / scored.run.wall_s
            if scored.extra.get("out_bytes"):
                out_bytes_per_row = scored.extra["out_bytes"] / n

    # 2e. the same rows from a PostgreSQL table to a table
    if args.database:
        server = Postgres(args.database, work)
        try:
            for n in args.rows:
                table = f"bench_{n}"
                bench.log(f"loading {files[n]} into {table}")
                load_s = server.load(table, files[n])
                db = bench.score_database(server, table, n, model)
                csv_run = next(m for m in bench.results
                               if m.rows == n and m.name.startswith("score K=")
                               and "PostgreSQL" not in m.name)
                db.extra["ratio_text"] = (f"table/CSV = {db.run.wall_s / csv_run.run.wall_s:.2f}x"
                                          if not csv_run.run.timed_out else "")
                bench.notes.append(
                    f"PostgreSQL ({server.psql('SHOW server_version')}, "
                    f"{'a throwaway local server on a Unix socket' if server.folder else 'the server given'}): "
                    f"the {n:,}-row file was loaded with psql's \\copy into `{table}` ({load_s:.0f} s, not "
                    f"measured; integer columns bigint, other numbers double precision, text "
                    f"text), then scored with `--query 'SELECT * FROM {table}' -o URL "
                    f"--output-table bench_scored --if-exists replace` (one transaction); its "
                    f"peak RSS is the CLI's, the server's memory is not in it.")
        finally:
            server.stop()

    # 2c'. reference fit
    if not args.skip_reference:
        expected = fit_default.extra["epochs_run"]
        estimate = bench.reference_estimate(train_csv, args.fit_rows, expected)
        bench.log(f"reference fit estimate on {args.fit_rows:,} rows: {estimate:.0f}s "
                  f"({expected} epochs expected)")
        ref_csv, ref_rows = train_csv, args.fit_rows
        if estimate > args.reference_budget and args.fit_rows > SUBSAMPLE_ROWS:
            ref_rows = SUBSAMPLE_ROWS
            ref_csv = work / f"train_{args.fit_rows}_head{ref_rows}.csv"
            head_csv(train_csv, ref_csv, ref_rows)
            bench.notes.append(
                f"The reference fit ({' '.join(REFERENCE_ARGS)}) on {args.fit_rows:,} rows was "
                f"estimated at {estimate / 60:.0f} min (2 timed epochs x the {expected} epochs the "
                f"default fit ran), over the {args.reference_budget:.0f}-s budget, so both the "
                f"default and the reference fit for the validation-loss comparison ran on a "
                f"{ref_rows:,}-row subsample (the first rows of the training file).")
            sub_default = bench.fit(f"fit (defaults), {ref_rows:,}-row subsample", ref_csv,
                                    ref_rows, work / "sub_default.vae")
            sub_default.extra["ratio_text"] = ""
        ref = bench.fit(f"fit reference ({' '.join(REFERENCE_ARGS)}), {ref_rows:,} rows",
                        ref_csv, ref_rows, work / "reference.vae", REFERENCE_ARGS)
        ref.extra["batch_size"] = ref.extra.get("batch_size") or 256
        base = next(m for m in bench.results
                    if m.rows == ref_rows and "defaults" in m.name and "epochs_run" in m.extra)
        ref.extra["ratio_text"] = (f"val loss {ref.extra['best_val_loss']:.4f} vs "
                                   f"{base.extra['best_val_loss']:.4f} default")

    # 2d. PyOD
    if not args.skip_pyod:
        try:
            import pyod
            context["pyod"] = pyod.__version__
        except ImportError:
            bench.notes.append("PyOD is not installed (`pip install pyod --no-deps`); the PyOD "
                               "comparison was skipped.")
        else:
            epochs = fit_default.extra["epochs_run"]
            p = bench.pyod(train_csv, args.fit_rows, epochs)
            e = p.extra
            ratio = e["per_epoch_s"] / ours_per_epoch
            loop_ratio = e["per_epoch_s"] / (fit_default.extra["loop_s"] / epochs)
            p.extra["ratio_text"] = (f"PyOD/ours per epoch = {ratio:.1f}x "
                                     f"({e['per_epoch_s']:.2f} s vs {ours_per_epoch:.2f} s)")
            fit_default.extra["ratio_text"] = f"{ours_per_epoch:.2f} s/epoch (wall / epochs)"
            how = (f"trained {e['epochs_trained']} of {epochs} epochs within the "
                   f"{args.pyod_budget:.0f}-s budget; the full-run time is extrapolated as set-up "
                   f"+ {epochs} x the mean measured epoch + its decision_function passes"
                   if e["extrapolated"] else f"trained all {epochs} epochs")
            bench.notes.append(
                f"PyOD VAE: `pyod.models.vae.VAE(epoch_num={epochs}, random_state=0, verbose=0)`, "
                f"otherwise PyOD's defaults (batch size {e['batch_size']}, encoder 128-64-32, "
                f"latent 2, dropout 0.2, device {e.get('device', 'default')}), on the "
                f"{args.fit_rows:,} training rows read with pandas, "
                f"`id` dropped, numeric columns median-imputed and standardised, text columns "
                f"one-hot encoded (`OneHotEncoder(handle_unknown='ignore')`): {e['features']} "
                f"features; {how}. Its wall time = pandas read + encoding ({e['prep_s']:.1f} s) + "
                f"fit ({e['fit_s']:.1f} s{' extrapolated' if e['extrapolated'] else ''}, which "
                f"includes PyOD's own decision_function on the training rows) + decision_function "
                f"({e['decision_s']:.1f} s). Per epoch: PyOD {e['per_epoch_s']:.2f} s (mean of its "
                f"training epochs) vs ours {ours_per_epoch:.2f} s (the whole `fit` wall time / "
                f"{epochs} epochs run, batch size {fit_default.extra.get('batch_size') or 'default'}); "
                f"against our training loop alone "
                f"({fit_default.extra['loop_s'] / epochs:.2f} s/epoch) the ratio is "
                f"{loop_ratio:.1f}x. Median epochs, which a slow stretch of this shared machine "
                f"moves less than means: PyOD {e['median_epoch_s']:.2f} s vs our loop's "
                f"{fit_default.extra['median_epoch_s']:.2f} s, "
                f"{e['median_epoch_s'] / fit_default.extra['median_epoch_s']:.1f}x. Its peak RSS "
                f"includes the pandas frame and the dense float32 matrix.")

    loads = [m.load_before[0] for m in bench.results]
    contention = [m for m in bench.results if m.others != "none"]
    bench.notes.append(
        f"Contention: 1-min load average before the measurements ranged {min(loads):.2f}-"
        f"{max(loads):.2f} on {context['nproc']} cores; "
        + (f"{len(contention)} of {len(bench.results)} measurements started while another busy "
           f"process was running (last column), so their times are upper bounds."
           if contention else "no other busy process was running at any measurement start."))
    end_commit = git_commit()
    if end_commit != context["commit"]:
        bench.notes.append(f"The working tree changed during the run (from {context['commit']} "
                           f"to {end_commit}); earlier measurements used the earlier code.")
    if args.smoke:
        bench.notes.insert(0, "SMOKE TEST (--smoke): every fit was capped at 3 epochs; these "
                              "numbers are not a benchmark.")
    section = render(bench, command, started, context)
    print(section)
    if args.out:
        write_section(args.out, section, args.section)
        bench.log(f"wrote the {args.section!r} section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
