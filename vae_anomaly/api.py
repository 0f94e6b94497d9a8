"""File-level operations, one per CLI command: ``fit_file``, ``score_file``,
``evaluate_file`` (``describe_model``, for `info`, is in model_info.py). Each
validates its paths, calls the detector and returns a plain result; none prints.
A scoring run over many files, on the local or the Dask engine, is
``engines.score_files``, which builds on this module.

Example:
    >>> result = fit_file("sample_data/train.csv", "model.vae", seed=0)   # doctest: +SKIP
    >>> score_file("sample_data/new.csv", "model.vae", output="scored.csv").flagged  # doctest: +SKIP
    57
"""

from __future__ import annotations

import contextlib
import glob
import sys
import time
from collections.abc import Sequence
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
from .known import KnownRows, known_from_file, known_from_mask, parse_label_column
from .params import check_score_options, names
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
             known_anomalies: str | Path | None = None, label_column: str | None = None,
             query: str | None = None, **detector_options) -> FitResult:
    """Train on ``data`` (a CSV or Parquet file, ``-`` for CSV on standard input, or a
    database URL with ``query``, the SQL selecting the rows) and
    write the model file atomically to ``model_path``; with ``training_outliers``, also
    the training rows judged anomalous, to that CSV or Parquet file.

    Confirmed anomalies, if any, come from ``known_anomalies`` (a CSV or Parquet file
    of such rows, with the feature columns; others are ignored) or from
    ``label_column`` in ``data`` (1/true/yes: confirmed; 0/false/no or empty: not
    labelled). Training pushes their scores up and never learns them as normal."""
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
    known_path = None if known_anomalies is None else Path(known_anomalies)
    _check_known_options(data, known_path, label_column, model_path, outliers_path,
                         detector_options)
    with exclusive_lock(model_path):
        frame = read_source_table(data, query)
        if outliers_path is not None:
            _refuse_outlier_column_clash(frame)
        detector = Detector(**detector_options)
        features, known, notes = _known_rows(frame, data, known_path, label_column, detector)
        detector.fit(features, source=source_name(data), callbacks=callbacks,
                     known_anomalies=known)
        if outliers_path is not None:
            write_training_outliers(frame, detector.training_outliers_, outliers_path)
        detector.save(model_path)
    return FitResult(detector.summary_, detector.threshold_,
                     notes + detector.preprocessor_.notes)


def _data_path(data) -> Path | str:
    """A file's Path; a database URL stays a str (a Path would fold its //)."""
    return data if is_database_url(data) else Path(data)


def _check_known_options(data: Path, known_path: Path | None, label_column: str | None,
                         model_path: Path, outliers_path: Path | None,
                         detector_options: dict) -> None:
    """Refuse, before any work, options for confirmed anomalies that cannot work."""
    if known_path is not None and label_column is not None:
        raise InputError("pass either --known-anomalies or --label-column, not both; put "
                         "the confirmed rows in one place")
    if known_path is not None:
        if is_stdin(data) and is_stdin(known_path):
            raise InputError("DATA and --known-anomalies cannot both be - (standard input); "
                             "give one of them as a file")
        for other, option in ((model_path, "--model"), (outliers_path, "--training-outliers")):
            if other is not None and not is_stdin(known_path) \
                    and known_path.resolve() == other.resolve():
                raise InputError(f"--known-anomalies and {option} name the same file "
                                 f"({known_path}); the confirmed rows need a file of their own")
    if label_column is not None:
        for option in ("exclude", "categorical"):
            if label_column in names(detector_options.get(option) or ()):
                raise InputError(f"--label-column {label_column} is also given to --{option}; "
                                 f"the label column is never a feature, so drop it from "
                                 f"--{option}")


def _known_rows(frame: pa.Table, data: Path, known_path: Path | None,
                label_column: str | None, detector: Detector
                ) -> tuple[pa.Table, KnownRows | None, list[str]]:
    """The training rows' features, their confirmed anomalies, and notes for the user."""
    source = source_name(data)
    if label_column is not None:
        if label_column not in frame.column_names:
            raise InputError(f"label column `{label_column}` is not in {source}; its columns "
                             f"are: {', '.join(frame.column_names)}")
        mask = parse_label_column(frame.column(label_column), label_column, source)
        features = frame.drop_columns([label_column])
        known = known_from_mask(features, mask,
                                f"the rows labelled anomalous in `{label_column}`", source,
                                **_feature_options(detector))
        return features, (known if len(known) else None), known.notes
    if known_path is None:
        return frame, None, []
    table = read_table(known_path)
    if table.num_rows == 0:
        return frame, None, [f"{source_name(known_path)} has no rows; fitting without "
                             "confirmed anomalies"]
    known = known_from_file(frame, table, source_name(known_path), source,
                            **_feature_options(detector))
    return frame, (known if len(known) else None), known.notes


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
    with sink as writer:
        for table in read_source(data, query, chunk_size):
            _refuse_clashing_columns(table, data)
            scores = detector.score_columns(table, samples=samples, seed=seed,
                                            threshold=threshold, first_row=rows,
                                            source=source_name(data), device=device,
                                            health=health,
                                            kind=kind, explain=explain)
            writer.write(_with_scores(table, scores))
            rows += table.num_rows
            flagged += int(scores["is_anomaly"].sum())
    if threshold is None:
        threshold = detector.threshold_for(kind or detector.score_kind)
    return ScoreResult(rows=rows, flagged=flagged, threshold=threshold,
                       output=destination, seconds=time.perf_counter() - started,
                       input=source_name(data) if is_database_url(data) else data,
                       health=health.report(), query=query)


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
