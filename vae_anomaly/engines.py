"""Which engine scores a run: ``score_files`` checks the run's options, hands the
inputs to the local engine (``api.score_each``) or to the Dask engine
(``distributed.score_partitions``), and writes the run summary.

Both engines build on api.py's ``score_file``; this module sits above them, so
imports go one way: api.py <- distributed.py <- engines.py <- cli.py.

Example:
    >>> score_files("incoming/*.csv", "model.vae", output_dir="scored",
    ...             summary="run.json")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from .api import ScoreResult, expand_inputs, planned_outputs, score_each, score_file
from .data import (
    atomic_output,
    check_writable_destination,
    is_database_url,
    is_stdin,
    refuse_same_file,
)
from .distributed import check_engine_options, score_partitions
from .errors import InputError
from .sql import check_sink_options, check_source_options, read_query


def file_sha256(path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""  # a missing model is reported by load(), with its own message


def write_summary(path, results: list[ScoreResult], model_path, model_sha256: str,
                  started: float) -> None:
    """Write the JSON run summary atomically: per file rows, flags and health, plus
    the threshold, a SHA-256 of the model file and the run's duration."""
    summary = {
        "model": str(model_path),
        "model_sha256": model_sha256,
        "rows": sum(r.rows for r in results),
        "flagged": sum(r.flagged for r in results),
        "threshold": results[0].threshold if results else None,
        "healthy": all(r.health.get("ok", True) for r in results),
        "seconds": round(time.perf_counter() - started, 3),
        "files": [r.to_dict() for r in results],
    }
    with atomic_output(Path(path)) as stream:
        json.dump(summary, stream, indent=2)
        stream.write("\n")


def score_files(pattern: str | Path, model_path, *, output: str | Path | None = None,
                output_dir: str | Path | None = None, summary: str | Path | None = None,
                engine: str = "local", scheduler: str | None = None,
                **options) -> list[ScoreResult]:
    """Score one file, or every file a glob such as 'incoming/*.csv' matches.

    With ``output_dir`` each input gets an output of the same name there;
    without it the pattern must name one file, written to ``output``.
    ``summary`` is a path for the JSON run summary (see ``write_summary``).
    ``engine`` "dask" scores each file as a task on a Dask cluster, at the
    ``scheduler`` address or on a LocalCluster when None (see distributed.py);
    the outputs are identical to the local engine's.
    """
    started = time.perf_counter()
    database = {key: options.pop(key) for key in ("query", "output_table", "if_exists")
                if key in options}
    if is_database_url(pattern) or is_database_url(output):
        return _score_database(pattern, model_path, output=output, output_dir=output_dir,
                               summary=summary, engine=engine, started=started,
                               **database, **options)
    check_source_options(pattern, read_query(database.get("query")))
    check_sink_options(output, database.get("output_table"), database.get("if_exists", "fail"))
    check_engine_options(engine, scheduler=scheduler, output=output, output_dir=output_dir)
    if is_stdin(pattern) and output_dir is not None:
        raise InputError("standard input (-) has no file name to write into --output-dir; "
                         "pass -o PATH, or -o - to write CSV to standard output")
    inputs = expand_inputs(pattern)
    outputs = planned_outputs(inputs, output, output_dir)
    summary = _checked_summary(summary, model_path, inputs, outputs)
    model_sha256 = file_sha256(model_path)  # the model actually used, before any refit
    if engine == "dask":
        results = score_partitions(inputs, model_path, output_dir, scheduler=scheduler,
                                   **options)
    else:
        results = score_each(pattern, inputs, model_path, output, output_dir, options)
    if summary is not None:
        write_summary(summary, results, model_path, model_sha256, started)
    return results


def _checked_summary(summary, model_path, inputs: list, outputs: list) -> Path | None:
    """The --summary path, refused before any work when it is - or would overwrite an
    input (a database URL is no file to overwrite), the model or an output."""
    if summary is None:
        return None
    if str(summary) == "-":
        raise InputError("--summary needs a file path, not - (standard output carries the "
                         "scored rows with -o -); pass e.g. --summary run.json")
    summary = Path(summary)
    for path in inputs:
        refuse_same_file(path, summary, "--summary")
    refuse_same_file(Path(model_path), summary, "--summary", "model")
    for path in outputs:
        refuse_same_file(path, summary, "--summary", "output")
    check_writable_destination(summary)
    return summary


def _score_database(data, model_path, *, output, output_dir, summary, engine: str,
                    started: float, **options) -> list[ScoreResult]:
    """One run with a database on either side: a query in, or a table out (or both).
    The local engine only: a query is one stream, not partitions."""
    if engine != "local":
        raise InputError("--engine dask scores files; read a database with the local engine "
                         "(drop --engine)")
    if output_dir is not None:
        raise InputError("--output-dir writes one file per input file; with a database, pass "
                         "-o FILE, or -o URL --output-table NAME")
    if not is_database_url(data):
        matched = expand_inputs(data)
        if len(matched) > 1:
            raise InputError(f"{str(data)!r} matches {len(matched)} files; a table output takes "
                             "one input per run")
        data = matched[0]
    file_output = output is not None and output != "-" and not is_database_url(output)
    summary = _checked_summary(summary, model_path, [data],
                               [Path(output)] if file_output else [])
    model_sha256 = file_sha256(model_path)
    result = score_file(data, model_path, output=output, **options)
    if summary is not None:
        write_summary(summary, [result], model_path, model_sha256, started)
    return [result]
