"""The command line: a thin shell over the library. The only module that talks to
the terminal. Progress and notes go to stderr (progress only when it is a
terminal); data goes to stdout only with ``-o -`` and for ``info``.

Exit codes: 0 success; 1 anomalies found with --fail-on-anomaly; 2 bad input,
model file or usage; 3 input drift with --fail-on-drift; 4 an unexpected
internal error; 130 interrupted.
"""

# No `from __future__ import annotations`: typer reads each command's signature, and
# string annotations would be evaluated on every run (0.1 s of `score`'s start-up).
import contextlib
import json
import os
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

from ._version import __version__
from .defaults import DEFAULT_BETA, DEFAULT_CHUNK_ROWS, DEFAULT_FPR
from .errors import VAEAnomalyError

if TYPE_CHECKING:
    from rich.progress import Progress

    from .fit_summary import FitSummary
    from .training import EpochStats

# Each command imports the library modules it runs inside its own body: torch, pandas,
# pyarrow and scikit-learn take seconds to import, and `--help`, `--version` and
# `info` need none of them (tests/test_startup.py; docs/benchmarks.md, "Start-up").

EXIT_OK, EXIT_ANOMALIES, EXIT_BAD_INPUT, EXIT_DRIFT, EXIT_INTERNAL, EXIT_INTERRUPTED = \
    0, 1, 2, 3, 4, 130

class _OneLineErrors(typer.core.TyperGroup):
    """Usage errors as one `Error: ...` line (exit 2), like every other error,
    instead of click's multi-line usage box: cron logs stay greppable."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except Exception as exc:  # typer vendors click: match its errors by shape
            if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
                raise
            message = exc.format_message().rstrip(".")
            if type(exc).__name__ == "NoArgsIsHelpError":  # no arguments: the help is the answer
                typer.echo(exc.format_message())
            elif message:
                _stderr().print(f"Error: {message}; see --help", markup=False)
            sys.exit(exc.exit_code)
        sys.exit(result if isinstance(result, int) else EXIT_OK)


# Help is click's plain layout (rich_markup_mode=None), not typer's rich panels, which
# typer picks by default when rich is installed. The rich layout keeps a docstring's
# single line breaks (so source-wrapped paragraphs came out broken mid-sentence), shows
# a `<bool>` type after every flag, and reads `[...]` in help text as markup (so
# `pip install 'vae-anomaly[dask]'` lost its `[dask]`). The plain layout rewraps
# paragraphs to the terminal (up to 200 columns; click stops at 80 by default), keeps a
# paragraph that starts with a \b line as written (the examples), shows no type for
# flags, prints text literally, and is what docs/cli.md is generated from.
app = typer.Typer(
    cls=_OneLineErrors,
    name="vae-anomaly",
    help="Flag anomalous records in CSV files with a Variational Autoencoder.\n\n"
         "Train on normal records with `fit`, then `score` new files (e.g. nightly from cron). "
         "Exit codes: 0 success, 1 anomalies found (with --fail-on-anomaly), "
         "2 bad input or usage, 3 input drift (with --fail-on-drift), 4 internal error, "
         "130 interrupted.",
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    rich_markup_mode=None, context_settings={"max_content_width": 200},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"vae-anomaly {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _options(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False,
) -> None:
    # Options before the command name; the help text is the Typer(help=...) above.
    pass


class ScoreKind(str, Enum):
    elbo = "elbo"
    iwae = "iwae"


class Engine(str, Enum):
    local = "local"
    dask = "dask"


class IfExists(str, Enum):
    fail = "fail"
    replace = "replace"
    append = "append"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


ModelOption = Annotated[Path, typer.Option("--model", "-m", metavar="PATH",
                                           help="Model file path.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")]
DrawSeedOption = Annotated[Optional[int], typer.Option(
    "--seed", help="Seed for the Monte Carlo draws. Default: the model's training seed.")]
SamplesOption = Annotated[Optional[int], typer.Option(
    "--samples", help="Monte Carlo draws K per row: decoder passes, in randomizations of "
                      "Sobol points (K, or the largest power of two or three times one "
                      "below it). Default: the model's (8).")]
DeviceOption = Annotated[Device, typer.Option(
    help="Where to run: auto uses a CUDA GPU when present.")]
QueryOption = Annotated[Optional[str], typer.Option(
    "--query", metavar="SQL",
    help="With a database URL as DATA: the SQL that selects the rows (required there), "
         "or @file.sql to read it from a file. Needs pip install 'vae-anomaly[sql]'.")]


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


class _EpochProgress:
    """A rich progress bar fed by the training loop's on_epoch_end callback."""

    def __init__(self, progress: "Progress"):
        self.progress, self.task = progress, None

    def on_epoch_end(self, stats: "EpochStats") -> None:
        if self.task is None:
            self.task = self.progress.add_task("training", total=stats.epochs)
        stage = (f"calibration fit {stats.fit} of {stats.calibration_fits} · " if stats.fit
                 else "")
        self.progress.update(self.task, completed=stats.epoch, total=stats.epochs,
                             description=f"{stage}epoch {stats.epoch} · "
                                         f"val loss {stats.val_loss:.3f}")


def _threshold_origin(s: "FitSummary") -> str:
    """Where the fit line says the threshold came from: the share of the training rows
    that --contamination SHARE flags, or the held-out scores."""
    from .calibration import share_source

    if s.share_threshold:
        return share_source(s.share_threshold)
    return f"from {s.calibration_rows} held-out scores{_calibration_text(s)}"


def _calibration_text(s: "FitSummary") -> str:
    """The fit line's brackets after its held-out scores: the extra fits, then the
    held-out rows left out of the threshold and its exponential tail
    (calibration.calibration_notes)."""
    from .calibration import calibration_notes

    fits = s.calibration_fits
    parts = ([f"{fits} calibration fit{'' if fits == 1 else 's'}"] if fits else []) + (
        calibration_notes(vars(s)))
    return f" ({'; '.join(parts)})" if parts else ""


def _progress(quiet: bool) -> "Progress | None":
    console = _stderr()
    if quiet or not console.is_terminal:
        return None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def _fail(message: str, code: int) -> typer.Exit:
    _stderr().print(f"Error: {message}", markup=False)
    return typer.Exit(code)


def _run(action):
    """Run ``action`` and turn library errors into a one-line message and exit code."""
    try:
        return action()
    except VAEAnomalyError as exc:
        raise _fail(str(exc), exc.exit_code) from None
    except KeyboardInterrupt:
        raise _fail("interrupted; the file being written was discarded and any earlier "
                    "version kept", EXIT_INTERRUPTED) from None
    except BrokenPipeError:
        # `-o - | head`: the reader left early. Point stdout at /dev/null so that
        # Python's own flush at exit cannot add a second message.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise _fail("standard output was closed before every row was written (the command "
                    "reading it stopped early); write to a file with -o to keep every row",
                    EXIT_BAD_INPUT) from None
    except MemoryError:
        raise _fail("out of memory; use a smaller --batch-size or score a smaller file",
                    EXIT_INTERNAL) from None
    except Exception as exc:  # a bug: still no traceback for cron, but say so
        raise _fail(f"internal error ({type(exc).__name__}: {exc}); please report it",
                    EXIT_INTERNAL) from None


@app.command(short_help="Learn from normal records in DATA and save the model.")
def fit(
    data: Annotated[str, typer.Argument(
        metavar="DATA",
        help="CSV or Parquet file of normal records to learn from. CSV may be compressed as "
             ".csv.gz, .csv.bz2 or .csv.zst (codec from the extension); - reads CSV from "
             "standard input; a database URL (postgresql://[user@][host][:port]/db or "
             "sqlite:///file.db) reads the rows --query selects.")],
    model: ModelOption = Path("model.vae"),
    query: QueryOption = None,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same model.")] = 0,
    exclude: Annotated[Optional[list[str]], typer.Option(
        metavar="COLUMN", help="Column to ignore (ids, labels, timestamps). Repeat for several.")] = None,
    categorical: Annotated[Optional[list[str]], typer.Option(
        metavar="COLUMN", help="Treat this column as categorical even if it holds numbers. Repeatable.")] = None,
    epochs: Annotated[Optional[int], typer.Option(
        help="Most epochs to train; early stopping usually ends sooner. Default: from data size.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        help="Rows per mini-batch. Default: from data size.")] = None,
    latent_dim: Annotated[Optional[int], typer.Option(
        help="Size of the latent code z. Default: from the number of inputs.")] = None,
    beta: Annotated[float, typer.Option(help="Weight of the KL term in the training loss.")] = DEFAULT_BETA,
    fpr: Annotated[float, typer.Option(
        help="Target false-positive rate that sets the threshold on held-out normal rows "
             "(with --contamination auto or 0).")] = DEFAULT_FPR,
    calibration_fits: Annotated[int, typer.Option(
        help="Extra fits on files under 6,000 rows, each holding out other rows, so that "
             "about 600 held-out scores set the threshold. 0: only the validation rows "
             "(faster, noisier threshold).")] = 2,
    contamination: Annotated[str, typer.Option(
        metavar="auto|0|SHARE",
        help="The share of anomalies expected in DATA. SHARE (above 0, up to 0.5): the "
             "threshold flags that share of DATA's rows (confirmed anomalies aside), as "
             "scikit-learn's outlier detectors do, and that share of the rows, at most 0.2, "
             "leaves the gradient. auto: --fpr on held-out rows sets the threshold, and "
             "only rows whose loss stands far beyond the rest leave the gradient; 0: that "
             "threshold, training on every row. Rows left out, re-decided each epoch, are "
             "reported as training outliers.")] = "auto",
    training_outliers: Annotated[Optional[Path], typer.Option(
        metavar="PATH",
        help="Also write the training rows judged anomalous, most anomalous first, with "
             "their data row number (row) and anomaly_score, to this CSV or Parquet file "
             "(replaced atomically).")] = None,
    known_anomalies: Annotated[Optional[Path], typer.Option(
        metavar="FILE",
        help="Rows confirmed as anomalous (CSV or Parquet, compressed CSV, or - for "
             "standard input), with the model's feature columns; other columns are "
             "ignored, so a scored output or a --training-outliers file filtered to the "
             "confirmed rows feeds straight back in. Training pushes their scores up, and "
             "rows of DATA with the same values never train as normal (a confirmed row "
             "whose values over 20% of DATA share is a kind of normal: it is left out, "
             "with a note).")] = None,
    known_normals: Annotated[Optional[Path], typer.Option(
        metavar="FILE",
        help="Rows dismissed as normal (false alarms), in the same form as "
             "--known-anomalies. They train as normal, never left out as outliers, and "
             "training pulls their scores below the threshold's quantile, so that their "
             "look-alikes stop being flagged; held out, they stay in the threshold's rows. "
             "Dismissed rows that are not rows of DATA (from a scored batch) join the "
             "training rows.")] = None,
    verdicts: Annotated[Optional[list[Path]], typer.Option(
        metavar="FILE",
        help="A filled review file (vae-anomaly review writes one; any CSV or Parquet "
             "with the feature columns will do): its verdict column holds anomaly, normal "
             "(any case) or an empty cell, which is skipped; other columns (row, "
             "anomaly_score, top_columns) are ignored. Repeat for every review so far: "
             "verdicts accumulate, and the union of these files, --known-anomalies and "
             "--known-normals counts.")] = None,
    label_column: Annotated[Optional[str], typer.Option(
        metavar="COL",
        help="The same knowledge inside DATA: a column that is 1, true, yes or anomaly "
             "for a confirmed anomaly, normal for a dismissed row, and 0, false, no or "
             "empty otherwise. It is never a feature.")] = None,
    device: DeviceOption = Device.auto,
    quiet: QuietOption = False,
) -> None:
    """Learn what normal records look like from DATA and save the model.

    Column kinds come from the data, the same from every source: numbers are
    numeric; text and booleans (true/false, t/f, yes/no, or only 0 and 1) are
    categorical; ids, dates and empty columns are left out with a Note. The rows are
    sorted by their content first, so the same rows in any order give the same
    model. 10% of the rows (at least 200, up to 30%) are held out to stop training
    early and to set the anomaly threshold. On files under 6,000 rows, up to --calibration-fits extra
    fits each hold out other rows, so that about 600 held-out scores set the
    threshold; with --contamination SHARE, the threshold flags that share of DATA
    instead. Rows whose loss stands far out (broken records) leave the training
    and are counted, or listed with --training-outliers. Rows confirmed as
    anomalous (--known-anomalies or --label-column) are trained against, so that
    their unconfirmed look-alikes in DATA score high too; rows dismissed as normal
    (--known-normals, or a filled review file with --verdicts) train as normal and are
    pulled below the threshold, so that their look-alikes stop being flagged. The
    model file is replaced atomically, only on success.

    \b
    Example: vae-anomaly fit normal.csv --model model.vae --exclude id --seed 1
    \b
    With the rows the morning's review confirmed:
    vae-anomaly fit normal.csv --known-anomalies confirmed.csv --exclude id
    \b
    The weekly refit, with every review so far:
    vae-anomaly fit normal.csv --verdicts review-1.csv --verdicts review-2.csv --exclude id
    """
    from .api import fit_file

    progress = _progress(quiet)
    callbacks = [_EpochProgress(progress)] if progress else []
    options = dict(seed=seed, exclude=exclude or [], categorical=categorical or [],
                   epochs=epochs, batch_size=batch_size, latent_dim=latent_dim, beta=beta,
                   fpr=fpr, calibration_fits=calibration_fits, device=device.value,
                   contamination=contamination)
    with progress or _nothing():
        result = _run(lambda: fit_file(data, model, callbacks=callbacks, query=query,
                                       training_outliers=training_outliers,
                                       known_anomalies=known_anomalies,
                                       known_normals=known_normals, verdicts=verdicts,
                                       label_column=label_column, **options))
    if not quiet:
        console = _stderr()
        for note in result.notes:
            console.print(f"Note: {note}", markup=False)
        s = result.summary
        console.print(
            f"Trained on {s.train_rows} rows ({s.validation_rows} held out) for {s.epochs_run} "
            f"epochs in {s.seconds:.1f}s on {s.device}; threshold {result.threshold:.4g} "
            f"{_threshold_origin(s)}; saved {model}", markup=False)
        console.print(_training_outliers_text(s.training_outliers, s.rows, training_outliers),
                      markup=False)
        if s.known_anomalies:
            from .fit_summary import known_anomalies_text

            console.print(f"Known anomalies: {known_anomalies_text(vars(s))}", markup=False)
        if s.known_normals or s.verdicts_reviewed:
            from .fit_summary import verdicts_text

            console.print(f"Verdicts: {verdicts_text(vars(s))}", markup=False)


def _training_outliers_text(count: int, rows: int, path: Path | None) -> str:
    written = f"; written to {path}" if path is not None else ""
    return (f"Training rows judged anomalous: {count} of {rows} "
            f"({100 * count / max(rows, 1):.1f}%){written}")


@app.command()
def score(
    data: Annotated[str, typer.Argument(
        metavar="DATA",
        help="CSV or Parquet file to score (CSV may be compressed as .csv.gz, .csv.bz2 or "
             ".csv.zst; codec from the extension), - for CSV on standard input, a quoted "
             "glob such as 'incoming/*.csv' (with --output-dir), or a database URL "
             "(postgresql://[user@][host][:port]/db or sqlite:///file.db) with --query.")],
    model: ModelOption = Path("model.vae"),
    query: QueryOption = None,
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", metavar="PATH|-|URL",
        help="Output file (.csv or .parquet; a name ending in .csv.gz, .csv.bz2 or .csv.zst "
             "is written compressed), - for CSV on stdout, or a database URL with "
             "--output-table. "
             "Default: DATA's name with .scored.csv (.scored.parquet for Parquet; compressed "
             "as DATA is); required when DATA is - or a database.")] = None,
    output_table: Annotated[Optional[str], typer.Option(
        metavar="NAME",
        help="With -o URL: the table to write (NAME or SCHEMA.NAME), in one transaction "
             "committed after the last row; a failed or killed run leaves it as it was.")] = None,
    if_exists: Annotated[IfExists, typer.Option(
        metavar="MODE", help="When --output-table exists: fail (exit 2, table untouched), replace (swapped "
             "for the new rows at the commit) or append.")] = IfExists.fail,
    output_dir: Annotated[Optional[Path], typer.Option(
        metavar="DIR", help="Write one output per input, with the input's name, in DIR.")] = None,
    seed: DrawSeedOption = None,
    samples: SamplesOption = None,
    threshold: Annotated[Optional[float], typer.Option(
        help="Flag rows whose anomaly_score is above this. Default: the model's.")] = None,
    score_kind: Annotated[Optional[ScoreKind], typer.Option(
        "--score", help="elbo: Monte Carlo negative ELBO; iwae: importance-weighted "
                        "estimate of -log p(x), a tighter bound. Default: the model's.")] = None,
    explain: Annotated[int, typer.Option(
        metavar="N", help="Add top_columns: the N columns that contribute most to each "
                          "row's score, with their shares, e.g. amount:0.62;country:0.21.")] = 0,
    chunk_size: Annotated[int, typer.Option(
        help="Rows read, scored and written at a time; bounds memory.")] = DEFAULT_CHUNK_ROWS,
    device: DeviceOption = Device.auto,
    fail_on_anomaly: Annotated[bool, typer.Option(
        "--fail-on-anomaly", help="Exit with code 1 when any row is flagged.")] = False,
    fail_on_drift: Annotated[bool, typer.Option(
        "--fail-on-drift", help="Exit with code 3 when the input-health check finds drift "
                                "(missing rates, unseen categories, out-of-range values).")] = False,
    summary: Annotated[Optional[Path], typer.Option(
        metavar="PATH", help="Write a JSON run summary: rows, flagged, threshold, model hash, "
                             "duration and health findings.")] = None,
    engine: Annotated[Engine, typer.Option(
        help="local: score the files one after another in this process. dask: score each "
             "file as a task on a Dask cluster (needs --output-dir and Dask: "
             "pip install 'vae-anomaly[dask]'); each row gets the same Monte Carlo draws "
             "wherever it is scored (docs/scale.md).")] = Engine.local,
    scheduler: Annotated[Optional[str], typer.Option(
        metavar="ADDRESS", help="With --engine dask: a running Dask scheduler, e.g. "
                                "tcp://host:8786; every worker must see DATA and DIR at the "
                                "same paths. Default: a local cluster sized to this "
                                "machine.")] = None,
    quiet: QuietOption = False,
) -> None:
    """Score every record in DATA and flag anomalies.

    The output holds every input column unchanged, then anomaly_score (higher is more
    anomalous), is_anomaly (0/1 at the threshold), p_value (conformal, against held-out
    normal rows), reconstruction_nll, kl_divergence and score_std_error. Files are read
    and written in chunks, and each output is written atomically: a failed run leaves
    no partial file and keeps any earlier output.

    \b
    Example: vae-anomaly score new.csv --model model.vae -o scored.csv --fail-on-anomaly

    \b
    In a pipeline:
    zcat today.csv.gz | vae-anomaly score - -o - --model model.vae | head

    \b
    Partitioned data on a Dask cluster:
    vae-anomaly score 'data/part-*.parquet' --engine dask --scheduler tcp://host:8786 --output-dir scored/

    \b
    From a PostgreSQL table to another (the password from PGPASSWORD or ~/.pgpass):
    vae-anomaly score postgresql://scorer@db/shop --query @yesterday.sql -o postgresql://scorer@db/shop --output-table flags --if-exists append
    """
    from .engines import score_files

    results = _run(lambda: score_files(data, model, output=output, output_dir=output_dir,
                                       query=query, output_table=output_table,
                                       if_exists=if_exists.value,
                                       summary=summary, engine=engine.value, scheduler=scheduler,
                                       seed=seed, samples=samples, threshold=threshold,
                                       device=device.value, chunk_size=chunk_size,
                                       kind=score_kind.value if score_kind else None,
                                       explain=explain))
    if not quiet:
        console = _stderr()
        for result in results:
            _report_scored(console, result)
    if fail_on_drift and not all(result.health["ok"] for result in results):
        raise typer.Exit(EXIT_DRIFT)
    if fail_on_anomaly and any(result.flagged for result in results):
        raise typer.Exit(EXIT_ANOMALIES)


def _report_scored(console: Console, result) -> None:
    from .data import source_name

    for finding in result.health["findings"]:
        console.print(f"Warning: {source_name(result.input)}: {finding}", markup=False)
    if result.rows == 0:
        wrote = ("wrote the table with its columns and no rows"
                 if isinstance(result.output, str) else "wrote a header-only output")
        console.print(f"Note: {source_name(result.input)} has no rows; {wrote}", markup=False)
    share = result.flagged / result.rows if result.rows else 0.0
    destination = "stdout" if result.output is None else str(result.output)
    console.print(
        f"Scored {result.rows} rows in {result.seconds:.1f}s: {result.flagged} anomalies "
        f"({share:.1%}) above threshold {result.threshold:.4g}; wrote {destination}",
        markup=False)


@app.command(short_help="Measure how well anomalies are found in a labelled file.")
def evaluate(
    data: Annotated[str, typer.Argument(
        metavar="LABELED", help="CSV or Parquet file with a label column (CSV may be compressed "
                                "as .csv.gz, .csv.bz2 or .csv.zst), or a database URL with "
                                "--query.")],
    label_column: Annotated[str, typer.Option(
        metavar="COL", help="Column holding the truth: 1 (or true) = anomaly, 0 = normal.")],
    model: ModelOption = Path("model.vae"),
    query: QueryOption = None,
    seed: DrawSeedOption = None,
    samples: SamplesOption = None,
    threshold: Annotated[Optional[float], typer.Option(
        help="Threshold to evaluate at. Default: the model's.")] = None,
    score_kind: Annotated[Optional[ScoreKind], typer.Option(
        "--score", help="elbo or iwae. Default: the model's.")] = None,
    device: DeviceOption = Device.auto,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Score a labelled file as `score` would and report how well anomalies are found.

    Reports ROC-AUC and average precision; precision, recall, F1 and the confusion
    matrix at the threshold; and the threshold that would give the best F1. A metric
    with nothing to count (recall on a file without anomalies, precision when nothing
    is flagged) is n/a, null in --json.

    \b
    Example: vae-anomaly evaluate labeled.csv --label-column label --json
    """
    from .api import evaluate_file

    metrics = _run(lambda: evaluate_file(data, model, label_column=label_column, seed=seed,
                                         query=query,
                                         samples=samples, threshold=threshold,
                                         device=device.value,
                                         kind=score_kind.value if score_kind else None))
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
        return
    _render_metrics(metrics)


def _render_metrics(m: dict) -> None:
    from rich.table import Table

    def number(value, why="one class only"):
        return f"n/a ({why})" if value is None else f"{value:.4f}"

    table = Table(title=f"Evaluation of {m['input']} ({m['rows']} rows, {m['anomalies']} anomalies)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    cm = m["confusion_matrix"]
    for name, value in [
        ("ROC-AUC", number(m["roc_auc"])), ("average precision", number(m["average_precision"])),
        (f"threshold ({m['score']})", f"{m['threshold']:.6g}"),
        ("precision", number(m["precision"], "nothing flagged")),
        ("recall", number(m["recall"], "no anomalies in the file")),
        ("F1", number(m["f1"], "needs precision and recall")),
        ("false-positive rate", number(m["false_positive_rate"], "no normal rows")),
        ("confusion (tn fp / fn tp)", f"{cm['tn']} {cm['fp']} / {cm['fn']} {cm['tp']}"),
        ("best F1", number(m["best_f1"])),
        ("best-F1 threshold", "n/a" if m["best_f1_threshold"] is None
         else f"{m['best_f1_threshold']:.6g}"),
    ]:
        table.add_row(name, value)
    Console(highlight=False).print(table)


@app.command(short_help="Propose the rows of DATA most worth a verdict, for the next fit.")
def review(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="Model file written by fit.")],
    data: Annotated[str, typer.Argument(
        metavar="DATA",
        help="The training file the model was fitted on, or a scored batch: CSV or Parquet "
             "(CSV may be compressed), - for CSV on standard input, or a database URL with "
             "--query.")],
    budget: Annotated[int, typer.Option(
        metavar="B", help="How many rows to propose (at least 1, at most the rows of DATA).")],
    output: Annotated[str, typer.Option(
        "--output", "-o", metavar="PATH|-",
        help="The review file to write (.csv or .parquet; .csv.gz, .csv.bz2 or .csv.zst "
             "compressed), or - for CSV on stdout.")],
    verdicts: Annotated[Optional[list[Path]], typer.Option(
        "--verdicts", metavar="FILE",
        help="A file of rows already judged (an earlier review file, filled in), never "
             "proposed again; repeat for several.")] = None,
    query: QueryOption = None,
    seed: Annotated[Optional[int], typer.Option(
        "--seed", help="Seed for the picking's random parts. Default: the model's training "
                       "seed.")] = None,
    quiet: QuietOption = False,
) -> None:
    """Write the B rows of DATA most worth a person's verdict to a review file.

    The review file holds the rows as given, then row (the 1-based data row number),
    anomaly_score, top_columns (as score --explain 3 writes them) and an empty verdict
    column: fill it with anomaly or normal, leave it empty to skip a row, and pass the
    file to the next fit with --verdicts. The rows are those an IsolationForest on the
    encoded rows finds easiest to isolate, one per group of similar rows: odd single
    rows, and the groups of anomalies the model has learned as normal, which its own
    score ranks low. Rows already judged in a --verdicts file (matched by their
    values) are never proposed again.

    \b
    Example: vae-anomaly review model.vae train.csv --budget 20 -o review.csv --verdicts last-week.csv
    """
    from .api import review_file

    result = _run(lambda: review_file(model, data, budget=budget, output=output,
                                      verdicts=verdicts or (), query=query, seed=seed))
    if not quiet:
        judged = f" ({result.reviewed} already had a verdict)" if result.reviewed else ""
        destination = "stdout" if result.output is None else str(result.output)
        _stderr().print(
            f"Proposed {result.proposed} of {result.rows} rows for review{judged} in "
            f"{result.seconds:.1f}s; wrote {destination}: fill its verdict column with "
            "anomaly or normal, then fit --verdicts it", markup=False)


@app.command(short_help="Write an HTML report on a model and a scored file.")
def report(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="Model file written by fit.")],
    scored: Annotated[Optional[Path], typer.Argument(
        metavar="[SCORED]", help="Output of `score` to include (histogram, top anomalies).",
        show_default=False)] = None,
    output: Annotated[Path, typer.Option(
        "--output", "-o", metavar="PATH", help="HTML file to write.")] = Path("report.html"),
    top: Annotated[int, typer.Option(help="How many top anomalies to list.")] = 20,
    quiet: QuietOption = False,
) -> None:
    """Write one self-contained HTML report: training curves, the calibration scores'
    histogram beside the scored batch's with the threshold, and the top anomalies
    with their explanations.

    \b
    Example: vae-anomaly report model.vae scored.csv --output report.html
    """
    from .report import write_report

    path = _run(lambda: write_report(model, output, scored_path=scored, top=top))
    if not quiet:
        _stderr().print(f"Wrote {path}", markup=False)


@app.command(short_help="Show a model's columns, threshold, training and versions.")
def info(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="Model file written by fit.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Show a model's columns and kinds, threshold, training summary and versions.

    \b
    Example: vae-anomaly info model.vae --json
    """
    from .model_info import describe_model

    description = _run(lambda: describe_model(model))
    if as_json:
        typer.echo(json.dumps(description, indent=2))
        return
    _render_info(description)


def _render_info(d: dict) -> None:
    from rich.table import Table

    console = Console(highlight=False)
    columns = Table(title=f"Columns of {d['path']}")
    for heading in ("column", "kind", "details"):
        columns.add_column(heading)
    for column in d["columns"]:
        logical = f" ({column['logical']})" if column["logical"] else ""
        columns.add_row(column["name"], column["kind"] + logical, column["details"])
    for name, reason in d["ignored_columns"].items():
        columns.add_row(name, "ignored", reason)
    console.print(columns)
    t = d["training"]
    summary = Table(show_header=False, title="Model")
    for key, value in [
        ("threshold", f"{d['threshold']:.6g} ({d['threshold_source']})"),
        ("score", f"Monte Carlo negative ELBO, K = {d['samples']} ({d['draws_summary']}), "
                  f"seed {d['seed']}"),
        ("architecture", d["architecture_summary"]),
        ("training rows", f"{t['train_rows']} (+{t['validation_rows']} held out)"),
        ("judged anomalous", d["training_outliers"]),
        ("known anomalies", d["known_anomalies"]),
        ("verdicts", d["verdicts"]),
        ("epochs", f"{t['epochs_run']} run, best {t['best_epoch']}"
                   f"{' (stopped early)' if t['stopped_early'] else ''}"),
        ("final losses", t["final_losses"]),
        ("training time", f"{t['seconds']:.1f}s on {t['device']}"),
        ("versions", ", ".join(f"{k} {v}" for k, v in d["versions"].items())),
        ("format", f"{d['format']} v{d['format_version']}, created {d['created']}"),
    ]:
        summary.add_row(key, str(value))
    console.print(summary)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> None:
    """Entry point: SIGTERM (e.g. from cron's timeout) unwinds like Ctrl-C, so
    temporary files are removed and earlier outputs stay intact."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        app()
    except SystemExit as exc:
        _exit_now(exc.code)
    _exit_now(EXIT_OK)


def _exit_now(code) -> None:
    """End the process once the command is done, skipping the interpreter's teardown.

    Every output is written (atomically, files closed) by the time a command
    returns; what is left is unloading torch, pandas and pyarrow, which took 0.5 s
    on 2 cores, a sixth of a small `score` (docs/benchmarks.md, "Start-up"). The
    standard streams are flushed first; a reader that has gone away gets nothing."""
    if isinstance(code, str):  # SystemExit("message"): Python prints it, exit status 1
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(EXIT_OK if code is None else code)


if __name__ == "__main__":
    main()
