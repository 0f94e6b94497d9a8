"""File-level operations, one per CLI command: ``fit_file``, ``score_file``,
``evaluate_file``, ``review_file`` (``describe_model``, for `info`, is in model_info.py). Each
validates its paths, calls the detector and returns a plain result; none prints.
A scoring run over many files, on the local or the Dask engine, is
``engines.score_files``, which builds on this module.

Example:
    >>> result = fit_file("sample_data/train.csv", "model.vae", seed=0)   # doctest: +SKIP
    >>> score_file("sample_data/new.csv", "model.vae", output="scored.csv").flagged  # doctest: +SKIP
    57
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import glob
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from .data import (
    DEFAULT_CHUNK_ROWS,
    check_output_folder,
    check_writable_destination,
    exclusive_lock,
    is_database_url,
    is_parquet,
    is_stdin,
    plain_name,
    read_table,
    refuse_same_file,
    source_name,
    table_output,
)
from .detector import EXPLANATION_COLUMN, SCORE_COLUMNS, Detector
from .errors import InputError, VAEAnomalyError
from .fit_summary import FitSummary, TrainingOutliers
from .health import HealthMonitor
from .loading import load
from .known import (KnownRows, keys_learned_once, known_from_file, known_from_mask, merged,
                    normals_from_file, normals_from_mask, parse_label_column, verdict_masks)
from .params import check_score_options, names
from .preprocessing import EncodedBatch
from .review import DEFAULT_PICKING, VERDICT_COLUMN, check_budget, propose
from .sql import (
    check_sink_options,
    check_source_options,
    read_query,
    read_source,
    read_source_table,
    sink_name,
    table_sink,
)
from .training import TrainingCallback


@dataclass
class FitResult:
    summary: FitSummary
    threshold: float
    notes: list[str]


@dataclass
class ScoreResult:
    rows: int
    flagged: int
    threshold: float
    output: Path | str | None  # None: written to stdout; str: "table NAME in URL"
    seconds: float
    input: Path | str | None = None  # str: a database URL, without its password
    health: dict = field(default_factory=dict)
    query: str | None = None  # the SQL that selected the rows of a database input

    def to_dict(self) -> dict:
        found = {"input": str(self.input), "output": str(self.output or "-"), "rows": self.rows,
                 "flagged": self.flagged, "threshold": self.threshold,
                 "seconds": round(self.seconds, 3), "health": self.health}
        if self.query is not None:
            found = {"input": found["input"], "query": self.query, **found}
        return found


def fit_file(data, model_path, *, callbacks: Sequence[TrainingCallback] = (),
             training_outliers: str | Path | None = None,
             known_anomalies: str | Path | None = None,
             known_normals: str | Path | None = None, verdicts=None,
             label_column: str | None = None,
             query: str | None = None, **detector_options) -> FitResult:
    """Train on ``data`` (a CSV or Parquet file, ``-`` for CSV on standard input, or a
    database URL with ``query``, the SQL selecting the rows) and
    write the model file atomically to ``model_path``; with ``training_outliers``, also
    the training rows judged anomalous, to that CSV or Parquet file.

    Confirmed anomalies, if any, come from ``known_anomalies`` (a CSV or Parquet file
    of such rows, with the feature columns; others are ignored) or from
    ``label_column`` in ``data`` (1/true/yes/anomaly: confirmed; normal: dismissed;
    0/false/no or empty: not labelled). Training pushes their scores up and never
    learns them as normal.

    Dismissed rows (confirmed normals) come from ``known_normals`` (a file of them,
    like ``known_anomalies``) or the word ``normal`` in ``label_column``; ``verdicts``
    (a path, or several: every review so far) are filled review files whose
    ``verdict`` column holds anomaly, normal or nothing. The union of all the files
    counts; a row both confirmed and dismissed is an InputError."""
    query = read_query(query)
    check_source_options(data, query)
    data, model_path = _data_path(data), Path(model_path)
    refuse_same_file(data, model_path, "--model")
    check_writable_destination(model_path)
    outliers_path = None if training_outliers is None else Path(training_outliers)
    if outliers_path is not None:
        refuse_same_file(data, outliers_path, "--training-outliers")
        check_writable_destination(outliers_path)
        if outliers_path.resolve() == model_path.resolve():
            raise InputError("--training-outliers and --model name the same file; "
                             "give the outliers a name of their own")
    files = _verdict_files(known_anomalies, known_normals, verdicts)
    _check_known_options(data, files, label_column, model_path, outliers_path,
                         detector_options)
    with exclusive_lock(model_path):
        frame = read_source_table(data, query)
        if outliers_path is not None:
            _refuse_outlier_column_clash(frame)
        detector = Detector(**detector_options)
        features, known, normals, notes = _known_rows(frame, data, files, label_column,
                                                      detector)
        detector.fit(features, source=source_name(data), callbacks=callbacks,
                     known_anomalies=known, known_normals=normals)
        if outliers_path is not None:
            write_training_outliers(frame, detector.training_outliers_, outliers_path)
        detector.save(model_path)
    return FitResult(detector.summary_, detector.threshold_,
                     notes + detector.preprocessor_.notes)


def _data_path(data) -> Path | str:
    """A file's Path; a database URL stays a str (a Path would fold its //)."""
    return data if is_database_url(data) else Path(data)


def _verdict_files(known_anomalies, known_normals, verdicts) -> list[tuple[str, Path]]:
    """The files of verdicts, each with its option: --known-anomalies, --known-normals
    and every --verdicts file."""
    if verdicts is None or isinstance(verdicts, (str, Path)):
        verdicts = [] if verdicts is None else [verdicts]
    given = [("--known-anomalies", known_anomalies), ("--known-normals", known_normals),
             *(("--verdicts", path) for path in verdicts)]
    return [(option, Path(path)) for option, path in given if path is not None]


def _check_known_options(data: Path, files: list[tuple[str, Path]], label_column: str | None,
                         model_path: Path, outliers_path: Path | None,
                         detector_options: dict) -> None:
    """Refuse, before any work, options for verdicts that cannot work."""
    if files and label_column is not None:
        option = files[0][0]
        what = "confirmed rows" if option == "--known-anomalies" else "verdicts"
        raise InputError(f"pass either {option} or --label-column, not both; put the "
                         f"{what} in one place")
    piped = [option for option, path in files if is_stdin(path)]
    if piped and (is_stdin(data) or len(piped) > 1):
        other = "DATA" if is_stdin(data) else piped[0]
        raise InputError(f"{other} and {piped[-1]} cannot both be - (standard input); give "
                         "one of them as a file")
    for option, path in files:
        for other, other_option in ((model_path, "--model"),
                                    (outliers_path, "--training-outliers")):
            if other is not None and not is_stdin(path) and path.resolve() == other.resolve():
                what = "confirmed rows" if option == "--known-anomalies" else "verdicts"
                raise InputError(f"{option} and {other_option} name the same file "
                                 f"({path}); the {what} need a file of their own")
    if label_column is not None:
        for option in ("exclude", "categorical"):
            if label_column in names(detector_options.get(option) or ()):
                raise InputError(f"--label-column {label_column} is also given to --{option}; "
                                 f"the label column is never a feature, so drop it from "
                                 f"--{option}")


def _known_rows(frame: pa.Table, data: Path, files: list[tuple[str, Path]],
                label_column: str | None, detector: Detector
                ) -> tuple[pa.Table, KnownRows | None, KnownRows | None, list[str]]:
    """The training rows' features, their confirmed anomalies and confirmed normals
    (the union over every file), and notes for the user."""
    with keys_learned_once():
        return _rows_of_verdicts(frame, data, files, label_column, detector)


def _rows_of_verdicts(frame: pa.Table, data: Path, files: list[tuple[str, Path]],
                      label_column: str | None, detector: Detector
                      ) -> tuple[pa.Table, KnownRows | None, KnownRows | None, list[str]]:
    source, options = source_name(data), _feature_options(detector)
    if label_column is not None:
        return _labelled_rows(frame, label_column, source, options)
    anomalies, normals, notes = [], [], []
    for option, path in files:
        table, name = read_table(path), source_name(path)
        if option == "--verdicts":
            found = _review_verdicts(frame, table, name, source, options)
            anomalies.append(found[0])
            normals.append(found[1])
            notes += found[2]
        elif table.num_rows == 0:
            kind = "confirmed anomalies" if option == "--known-anomalies" else "dismissed rows"
            notes.append(f"{name} has no rows; fitting without {kind}")
        elif option == "--known-anomalies":
            anomalies.append(known_from_file(frame, table, name, source, **options))
        else:
            normals.append(normals_from_file(frame, table, name, source, **options))
    known, dismissed = merged(anomalies, source, frame), merged(normals, source, frame)
    notes += [note for rows in anomalies + normals if rows is not None for note in rows.notes]
    if known is not None and not len(known):
        known = None
    return frame, known, dismissed, notes


def _labelled_rows(frame: pa.Table, label_column: str, source: str, options: dict
                   ) -> tuple[pa.Table, KnownRows | None, KnownRows | None, list[str]]:
    """--label-column: its confirmed anomalies and dismissed rows, and DATA without it."""
    if label_column not in frame.column_names:
        raise InputError(f"label column `{label_column}` is not in {source}; its columns "
                         f"are: {', '.join(frame.column_names)}")
    anomalous, normal = parse_label_column(frame.column(label_column), label_column, source)
    features = frame.drop_columns([label_column])
    known = known_from_mask(features, anomalous,
                            f"the rows labelled anomalous in `{label_column}`", source,
                            **options)
    dismissed = normals_from_mask(features, normal,
                                  f"the rows labelled normal in `{label_column}`", source,
                                  **options)
    return (features, known if len(known) else None, dismissed if len(dismissed) else None,
            known.notes)


def _review_verdicts(frame: pa.Table, table: pa.Table, name: str, source: str,
                     options: dict) -> tuple[KnownRows | None, KnownRows | None, list[str]]:
    """A filled review file's confirmed anomalies and dismissed rows (each named by its
    row in the file), and a note when it holds no verdict yet."""
    anomalous, normal = verdict_masks(table, name)
    reviewed = int(anomalous.sum() + normal.sum())
    if not reviewed:
        return None, None, [f"{name} has no verdicts yet (every `verdict` cell is empty); "
                            "fitting without it"]
    found = []
    for mask, read in ((anomalous, known_from_file), (normal, normals_from_file)):
        rows = np.flatnonzero(mask)
        found.append(read(frame, table.filter(pa.array(mask)), name, source,
                          row_numbers=rows + 1, kind="the verdicts", **options)
                     if len(rows) else None)
    anomalies, normals = found
    # The count of rows reviewed goes with whichever kind the file had.
    holder = normals if normals is not None else anomalies
    holder.reviewed = reviewed
    return anomalies, normals, []


def _feature_options(detector: Detector) -> dict[str, list[str]]:
    return dict(categorical=names(detector.categorical), exclude=names(detector.exclude))


OUTLIER_COLUMNS = ("row", "anomaly_score")


def _refuse_outlier_column_clash(frame: pa.Table) -> None:
    taken = [name for name in OUTLIER_COLUMNS if name in frame.column_names]
    if taken:
        raise InputError(f"the training data has a column `{taken[0]}`, which the "
                         "--training-outliers file adds; rename that column")


def write_training_outliers(frame: pa.Table, outliers: TrainingOutliers, path: Path) -> None:
    """The training rows judged anomalous, most anomalous first: their 1-based data row
    number in the training file and anomaly score, then the row as it was read."""
    order = np.argsort(-outliers.scores, kind="stable")
    rows = outliers.rows[order]
    table = frame.take(pa.array(rows, pa.int64()))
    table = table.add_column(0, "anomaly_score", pa.array(outliers.scores[order], pa.float64()))
    table = table.add_column(0, "row", pa.array(rows + 1, pa.int64()))
    with table_output(path) as writer:
        writer.write(table)


def default_output_path(data: Path) -> Path:
    """new.csv -> new.scored.csv; nightly.2024-06-01.csv -> nightly.2024-06-01.scored.csv;
    a compressed input gives an output compressed the same way (today.csv.gz ->
    today.scored.csv.gz)."""
    if is_stdin(data):
        raise InputError("scoring standard input (-) needs an output: pass -o PATH, or -o - "
                         "to write CSV to standard output")
    if is_parquet(data):
        return data.with_name(f"{data.stem}.scored.parquet")
    plain = Path(plain_name(data))
    compressed = data.name[len(plain.name):]
    return data.with_name(f"{plain.stem}.scored.csv{compressed}")


def score_file(data, model_path, *, output: str | Path | None = None, seed: int | None = None,
               samples: int | None = None, threshold: float | None = None,
               device: str = "cpu", chunk_size: int = DEFAULT_CHUNK_ROWS,
               kind: str | None = None, explain: int = 0,
               detector: Detector | None = None, query: str | None = None,
               output_table: str | None = None, if_exists: str = "fail") -> ScoreResult:
    """Score the file ``data`` in chunks; write every input column plus the score columns.

    ``data`` is a CSV file (plain, or compressed as .gz, .bz2 or .zst), a Parquet
    file, ``"-"`` for CSV on standard input, or a database URL (postgresql://...,
    sqlite:///file.db) with ``query``, the SQL selecting the rows (or @file.sql).
    ``output`` is a path (CSV, compressed
    CSV or Parquet by extension), ``"-"`` for CSV on stdout, None for
    DATA.scored.csv beside DATA, or a database URL with ``output_table`` (written in
    one transaction; ``if_exists``: fail, replace or append). Memory stays bounded by
    ``chunk_size`` rows, and the scores equal those of scoring the file in one piece.
    """
    started = time.perf_counter()
    check_score_options(seed=seed, samples=samples, threshold=threshold, explain=explain,
                        chunk_size=chunk_size)
    query = read_query(query)
    check_source_options(data, query)
    check_sink_options(output, output_table, if_exists)
    data = _data_path(data)
    if is_database_url(data) and output is None:
        raise InputError(f"scoring {source_name(data)} needs an output: -o FILE, or -o URL "
                         "--output-table NAME to write a table")
    if is_database_url(output):
        destination = sink_name(output, output_table)
    else:
        destination = None if output == "-" else Path(output or default_output_path(data))
    if isinstance(destination, Path):
        refuse_same_file(data, destination, "--output")
        refuse_same_file(Path(model_path), destination, "--output", "model")
        check_writable_destination(destination)
    detector = detector or load(model_path, estimator=False)
    health = HealthMonitor(detector.preprocessor_)
    rows = flagged = 0
    # sys.stdout.buffer only when writing there: a notebook's stdout has no buffer.
    stdout = sys.stdout.buffer if destination is None else None
    sink = (table_sink(output, output_table, if_exists) if isinstance(destination, str)
            else _file_sink(destination, stdout))
    source = source_name(data)

    def encode(table: pa.Table, first_row: int) -> EncodedBatch:
        _refuse_clashing_columns(table, data)
        return detector.encode(table, source=source, first_row=first_row)

    # A database sink writes on this thread, as it reads: its transaction and the
    # source's reads keep to one order (SQLite's locks).
    behind = (_behind if isinstance(destination, Path) or destination is None
              else contextlib.nullcontext)
    with sink as writer, behind(writer.write) as write:
        for table, encoded in _encoded_ahead(read_source(data, query, chunk_size), encode):
            scores = detector.score_columns(table, samples=samples, seed=seed,
                                            threshold=threshold, first_row=rows,
                                            source=source, device=device,
                                            health=health, kind=kind, explain=explain,
                                            encoded=encoded)
            write(_with_scores(table, scores))
            rows += table.num_rows
            flagged += int(scores["is_anomaly"].sum())
    if threshold is None:
        threshold = detector.threshold_for(kind or detector.score_kind)
    return ScoreResult(rows=rows, flagged=flagged, threshold=threshold,
                       output=destination, seconds=time.perf_counter() - started,
                       input=source_name(data) if is_database_url(data) else data,
                       health=health.report(), query=query)


# Encoding a chunk and writing one take a fifth of `score`'s work at the default K,
# each on one thread, while the model passes run on every thread: overlapped with the
# passes of the chunk between them, they share the cores (docs/benchmarks.md, "Where
# score spends its time"). One chunk ahead and one behind: memory grows by two chunks,
# not with the file.
def _encoded_ahead(tables: Iterable[pa.Table],
                   encode: Callable[[pa.Table, int], EncodedBatch]
                   ) -> Iterator[tuple[pa.Table, EncodedBatch]]:
    """Each table with encode(table, its first row's place in the file), the next
    one encoded on a worker thread meanwhile. Tables are read here, on the caller's
    thread (a database connection belongs to the thread that opened it); a failure
    to encode surfaces at its own chunk."""
    first_row = 0
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="encode") as pool:
        waiting = None
        for table in tables:
            job = table, pool.submit(encode, table, first_row)
            first_row += table.num_rows
            if waiting is not None:
                yield waiting[0], waiting[1].result()
            waiting = job
        if waiting is not None:
            yield waiting[0], waiting[1].result()


@contextlib.contextmanager
def _behind(write: Callable[[pa.Table], None]) -> Iterator[Callable[[pa.Table], None]]:
    """``write`` on a worker thread, one table at a time and in order: each call
    waits for the one before it to finish (and raises its failure), and so does the
    end of the block."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="write") as pool:
        pending: list[concurrent.futures.Future] = []

        def submit(table: pa.Table) -> None:
            if pending:
                pending.pop().result()
            pending.append(pool.submit(write, table))

        yield submit
        if pending:
            pending.pop().result()


@contextlib.contextmanager
def _file_sink(destination: Path | None, stdout):
    with _locked(destination), table_output(destination, stdout=stdout) as writer:
        yield writer


def evaluate_file(data, model_path, *, label_column: str, seed: int | None = None,
                  samples: int | None = None, threshold: float | None = None,
                  device: str = "cpu", chunk_size: int = DEFAULT_CHUNK_ROWS,
                  kind: str | None = None, query: str | None = None) -> dict:
    """Score the labelled file ``data`` (or the rows ``query`` selects from a database
    URL) as ``score`` would and return its metrics."""
    # Here, not above: scikit-learn's metrics take a second to import, and `score` needs none.
    from .evaluation import classification_metrics, parse_labels

    query = read_query(query)
    check_source_options(data, query)
    data, name = _data_path(data), source_name(data)
    check_score_options(seed=seed, samples=samples, threshold=threshold)
    detector = load(model_path, estimator=False)
    labels, scores, flagged, rows = [], [], [], 0
    for table in read_source(data, query, chunk_size):
        if label_column not in table.column_names:
            raise InputError(f"label column `{label_column}` is not in {name}; its columns "
                             f"are: {', '.join(table.column_names)}")
        if label_column in detector.preprocessor_.feature_names:
            raise InputError(f"`{label_column}` is one of the model's input columns; refit with "
                             f"--exclude {label_column} so the model never sees the label")
        labels.append(parse_labels(table.column(label_column), label_column, name,
                                   first_row=rows))
        columns = detector.score_columns(table, samples=samples, seed=seed, threshold=threshold,
                                         first_row=rows, source=name, device=device,
                                         kind=kind)
        scores.append(columns["anomaly_score"])
        flagged.append(columns["is_anomaly"])
        rows += table.num_rows
    if rows == 0:
        raise InputError(f"{name} has no rows to evaluate")
    cut = detector.threshold_for(kind or detector.score_kind) if threshold is None else threshold
    metrics = classification_metrics(np.concatenate(labels), np.concatenate(scores),
                                     np.concatenate(flagged), cut)
    return {"input": name if is_database_url(data) else str(data), "model": str(model_path),
            **({"query": query} if query is not None else {}),
            "score": kind or detector.score_kind, **metrics}


def _locked(destination: Path | None):
    return contextlib.nullcontext() if destination is None else exclusive_lock(destination)


def score_each(pattern, inputs: list[Path], model_path, output, output_dir,
               options) -> list[ScoreResult]:
    """The local engine: score each input in turn, to ``output`` (one input) or to
    ``output_dir / input.name``; ``options`` are those of ``score_file``."""
    if output_dir is None:
        if len(inputs) > 1:
            raise InputError(f"{str(pattern)!r} matches {len(inputs)} files; pass --output-dir "
                             "to write one output per input")
        return [score_file(inputs[0], model_path, output=output, **options)]
    if output is not None:
        raise InputError("pass either --output or --output-dir, not both")
    output_dir = check_output_folder(Path(output_dir))
    detector = load(model_path, estimator=False)
    results: list[ScoreResult] = []
    for path in inputs:
        try:
            results.append(score_file(path, model_path, output=output_dir / path.name,
                                      detector=detector, **options))
        except VAEAnomalyError as exc:
            raise _with_completed(exc, results) from None
    return results


def _with_completed(exc: VAEAnomalyError, done: list[ScoreResult]) -> VAEAnomalyError:
    """The same error, saying which outputs of the run were already written and kept,
    so that a cron log shows what is complete (there is no summary for a failed run)."""
    if not done:
        return exc
    names = ", ".join(str(r.output) for r in done[:3]) + (", ..." if len(done) > 3 else "")
    return type(exc)(f"{exc} ({len(done)} earlier file(s) of this run were scored and kept: "
                     f"{names})")


def planned_outputs(inputs: list[Path], output, output_dir) -> list[Path]:
    """The files a run will write (none for stdout); refuses two inputs that would
    write the same output, which would silently keep only the last one."""
    if output_dir is None:
        return [] if output == "-" else [Path(output or default_output_path(inputs[0]))]
    by_name: dict[str, Path] = {}
    for path in inputs:
        if path.name in by_name:
            raise InputError(f"{by_name[path.name]} and {path} would both be written to "
                             f"{Path(output_dir) / path.name}; score them in separate runs "
                             "or give them different names")
        by_name[path.name] = path
    return [Path(output_dir) / name for name in by_name]


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except OSError:  # e.g. a name too long to be a file: then it is only a pattern
        return False


def expand_inputs(pattern: str | Path) -> list[Path]:
    """A plain path, or the sorted files a glob pattern matches (an error if none)."""
    text = str(pattern)
    # A file that exists is itself, even when its name has glob characters (data[1].csv).
    if not glob.has_magic(text) or _is_file(text):
        return [Path(text)]
    matches = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
    if not matches:
        raise InputError(f"no files match {text!r}; check the pattern (quote it so the shell "
                         "does not expand it)")
    return matches


def _refuse_clashing_columns(table: pa.Table, data: Path) -> None:
    clashes = [name for name in (*SCORE_COLUMNS, EXPLANATION_COLUMN)
               if name in table.column_names]
    if clashes:
        raise InputError(f"{source_name(data)} already has a column `{clashes[0]}` (is it an output of "
                         "score?); rename or drop that column")


def _with_scores(table: pa.Table, scores: dict) -> pa.Table:
    for name, values in scores.items():
        table = table.append_column(name, pa.array(values))
    return table


# ----- review ------------------------------------------------------------------------
REVIEW_EXPLAIN = 3  # top_columns as `score --explain 3` writes them
REVIEW_COLUMNS = ("row", "anomaly_score", EXPLANATION_COLUMN, VERDICT_COLUMN)


@dataclass
class ReviewResult:
    rows: int  # rows of DATA
    proposed: int  # rows written for review
    reviewed: int  # rows of DATA that already had a verdict, never proposed again
    output: Path | None  # None: written to stdout
    seconds: float


def review_file(model_path, data, *, budget: int, output, verdicts: Sequence = (),
                query: str | None = None, seed: int | None = None,
                picking: str = DEFAULT_PICKING) -> ReviewResult:
    """Write the ``budget`` rows of ``data`` most worth a person's verdict (review.py)
    to ``output`` (CSV or Parquet by extension, atomically; ``-`` for CSV on stdout):
    the rows as given, then ``row`` (1-based data row number), ``anomaly_score``,
    ``top_columns`` and an empty ``verdict`` column to fill with anomaly or normal.

    ``data`` is the training file or a scored batch (its score columns are written
    afresh), a database URL with ``query``; ``verdicts``: files of rows already
    judged (earlier review files, filled in), never proposed again. ``seed`` drives
    the picking's random parts (default: the model's seed); ``picking`` names one of
    review.PICKINGS (the others are the benchmark's baselines)."""
    started = time.perf_counter()
    check_budget(budget, budget, "DATA")  # a budget below 1, before any work
    query = read_query(query)
    check_source_options(data, query)
    data, verdict_paths = _data_path(data), [Path(path) for path in verdicts]
    destination = None if output == "-" else Path(output)
    if destination is not None:
        for source, what in ((data, "input"), (Path(model_path), "model"),
                             *((path, "verdicts") for path in verdict_paths)):
            refuse_same_file(source, destination, "--output", what)
        check_writable_destination(destination)
    if any(is_stdin(path) for path in verdict_paths):
        raise InputError("--verdicts cannot be - (standard input); give the filled review "
                         "files by name")
    detector = load(model_path, estimator=False)
    table = read_source_table(data, query)
    table = _without_review_columns(table, source_name(data))
    judged = [(source_name(path), read_table(path)) for path in verdict_paths]
    proposal = propose(detector, table, budget, verdicts=judged, seed=seed,
                       source=source_name(data), picking=picking)
    queue = _review_table(detector, table, proposal.rows, source_name(data))
    stdout = sys.stdout.buffer if destination is None else None
    with _file_sink(destination, stdout) as writer:
        writer.write(queue)
    return ReviewResult(rows=table.num_rows, proposed=len(proposal.rows),
                        reviewed=proposal.reviewed, output=destination,
                        seconds=time.perf_counter() - started)


def _without_review_columns(table: pa.Table, source: str) -> pa.Table:
    """DATA without the columns `score` writes (a scored batch's are written afresh);
    an InputError for a `row` or `verdict` column, which the review file adds."""
    taken = [name for name in ("row", VERDICT_COLUMN) if name in table.column_names]
    if taken:
        raise InputError(f"{source} has a column `{taken[0]}`, which the review file adds; "
                         "rename or drop that column (a filled review file goes to "
                         "--verdicts, not DATA)")
    scored = [name for name in (*SCORE_COLUMNS, EXPLANATION_COLUMN) if name in table.column_names]
    return table.drop_columns(scored)


def _review_table(detector: Detector, table: pa.Table, rows: np.ndarray,
                  source: str) -> pa.Table:
    """The proposed rows as given, then their row number, score, top columns and an
    empty verdict."""
    chosen = table.take(pa.array(rows, pa.int64()))
    # The same scores as `score` writes: the draws follow each row's content.
    scores = detector.score_columns(chosen, source=source, explain=REVIEW_EXPLAIN)
    added = {"row": pa.array(rows + 1, pa.int64()),
             "anomaly_score": pa.array(scores["anomaly_score"], pa.float64()),
             EXPLANATION_COLUMN: pa.array(scores[EXPLANATION_COLUMN], pa.string()),
             VERDICT_COLUMN: pa.array([""] * len(rows), pa.string())}
    for name, values in added.items():
        chosen = chosen.append_column(name, values)
    return chosen
