"""Reading tables, converting columns, and writing files atomically.

Tables are Apache Arrow tables. CSV cells are read as their raw text, so columns
the model does not use (ids, labels, timestamps) are written back with the same
values; Parquet columns keep their types. Typed conversion happens per column,
against the schema, in Arrow's compute kernels (no Python loop over rows), with
errors that name the column and the row. ``read_batches`` streams a file in
chunks, so memory does not grow with the file.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from .errors import InputError, OutputError

# Cell texts read as missing; the same set pandas treats as NA by default.
MISSING_TOKENS = pa.array(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
     "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
)
PARQUET_SUFFIXES = (".parquet", ".pq")
DEFAULT_CHUNK_ROWS = 100_000
# Bytes of CSV text parsed at a time. Arrow parses blocks ahead on its threads, so
# this (not the chunk size alone) sets the reader's share of peak memory: 8 MiB
# blocks peaked at 773 MiB RSS reading and writing 5M rows, 1 MiB at 423 MiB, at the
# same speed.
CSV_BLOCK_BYTES = 1 << 20
_MAX_CSV_BLOCK_BYTES = 1 << 30


def is_parquet(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(PARQUET_SUFFIXES)


# ----- reading ----------------------------------------------------------------------
def read_table(path: str | os.PathLike) -> pa.Table:
    """Read a whole CSV (every cell as text) or Parquet file into an Arrow table.

    Raises InputError with a one-line message for a missing file, a directory, an
    empty file, bytes that are not UTF-8, duplicate column names or a malformed CSV.
    """
    return pa.concat_tables(read_batches(path, chunk_rows=1 << 62))


def read_batches(path: str | os.PathLike, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[pa.Table]:
    """Yield the file as tables of exactly ``chunk_rows`` rows, the last one shorter
    (at least one table, perhaps empty). Slices share the reader's buffers."""
    path = Path(path)
    _check_readable_file(path)
    reader = _parquet_batches(path, chunk_rows) if is_parquet(path) else _csv_batches(path)
    pending, yielded = None, False
    with _arrow_errors(path):
        for batch in reader:
            table = pa.Table.from_batches([batch])
            pending = table if pending is None else pa.concat_tables([pending, table])
            while pending.num_rows >= chunk_rows:
                yield pending.slice(0, chunk_rows)
                pending, yielded = pending.slice(chunk_rows), True
    if pending is None:
        yield pa.Table.from_batches([], schema=_header_schema(path))
    elif pending.num_rows or not yielded:
        yield pending


def _csv_batches(path: Path) -> Iterator[pa.RecordBatch]:
    header = _read_header(path)
    _check_header(header, path)
    text = {name: pa.string() for name in header}
    options = pa_csv.ConvertOptions(column_types=text, strings_can_be_null=False,
                                    quoted_strings_can_be_null=False)
    block, delivered = CSV_BLOCK_BYTES, 0
    while True:
        try:
            # newlines_in_values: a quoted cell may hold a line break (e.g. a note).
            reader = pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=block),
                                     parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                                     convert_options=options)
            for batch in _skip_rows(reader, delivered):
                delivered += batch.num_rows
                yield batch
            return
        except pa.ArrowInvalid as exc:
            if delivered == 0 and "Empty CSV file" in str(exc):
                return  # a header with no line break after it: a file of no rows
            # A row longer than a block (a huge text cell): read again with bigger
            # blocks, past the rows already delivered.
            if "straddling" not in str(exc) or block >= _MAX_CSV_BLOCK_BYTES:
                raise
            block *= 8


def _skip_rows(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        if rows >= batch.num_rows:
            rows -= batch.num_rows
            continue
        yield batch.slice(rows) if rows else batch
        rows = 0


def _parquet_batches(path: Path, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path.name} is not a readable Parquet file ({_first_line(exc)}); "
                         "check the file") from None
    _check_header(parquet.schema_arrow.names, path)
    yield from parquet.iter_batches(batch_size=min(chunk_rows, 1 << 20))


def _header_schema(path: Path) -> pa.Schema:
    """The columns of a file with no rows: a Parquet file's own types (so that a quiet
    night's output has the usual schema), text for a CSV's."""
    if is_parquet(path):
        return pq.ParquetFile(path).schema_arrow
    return pa.schema([(name, pa.string()) for name in _read_header(path)])


@contextlib.contextmanager
def _arrow_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        detail = _first_line(exc)
        if "UTF8" in detail or "UTF-8" in detail:
            raise InputError(f"{path.name} is not UTF-8 text ({detail}); re-save it as UTF-8") from None
        raise InputError(f"{path.name} is not a well-formed CSV: {detail}; fix the file") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _check_readable_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"file not found: {path}; check the path")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a data file; pass a file path")
    if path.stat().st_size == 0:
        raise InputError(f"{path.name} is empty (0 bytes); expected a CSV file with a header row")


def _read_header(path: Path) -> list[str]:
    try:
        with open(path, "rb") as handle:
            compressed = handle.read(2) == b"\x1f\x8b"
        if compressed:
            raise InputError(f"{path.name} is gzip-compressed; decompress it first "
                             f"(gunzip -k {path.name}) and pass the .csv")
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return next(csv.reader(handle), [])
    except UnicodeDecodeError as exc:
        raise InputError(f"{path.name} is not UTF-8 text (bad byte at position {exc.start}); "
                         "re-save it as UTF-8") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


def _check_header(header: list[str], path: Path) -> None:
    if not any(name.strip() for name in header):
        raise InputError(f"{path.name} has no header row; the first line must name the columns")
    if len(header) == 1:
        for delimiter, label in ((";", "';'"), ("\t", "tabs"), ("|", "'|'")):
            if delimiter in header[0]:
                raise InputError(f"{path.name} seems to be separated by {label}, not commas; "
                                 "save it as a comma-separated CSV")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise InputError(f"column `{name}` appears twice in the header of {path.name}; "
                             "give every column a unique name")
        seen.add(name)


def to_arrow(frame: pd.DataFrame | pa.Table) -> pa.Table:
    """Accept a pandas DataFrame or an Arrow table; return an Arrow table."""
    if isinstance(frame, pa.Table):
        _refuse_repeated_names(frame.column_names, "Arrow table", "")
        return frame
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"expected a pandas DataFrame or pyarrow Table, got {type(frame).__name__}")
    # Names become text: 1 and "1" would be one column, and one of them would be lost.
    _refuse_repeated_names([str(name) for name in frame.columns], "DataFrame", " (as text)")
    columns = {}
    for position, name in enumerate(frame.columns):
        values = frame.iloc[:, position]
        try:
            columns[str(name)] = pa.array(values, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: keep them as text
            columns[str(name)] = pa.array(values.map(_as_text), type=pa.string(), from_pandas=True)
    return pa.table(columns) if columns else pa.table({})


def _refuse_repeated_names(names: list[str], what: str, how: str) -> None:
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise InputError(f"column `{repeated[0]}` appears twice in the {what}{how}; "
                         "give every column a unique name")


# ----- typed conversion ---------------------------------------------------------------
def plain_array(values) -> pa.Array:
    """One Arrow array from a column (a ChunkedArray of any number of chunks) or an array."""
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    return values


def is_text(arrow_type: pa.DataType) -> bool:
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def missing_mask(values) -> np.ndarray:
    """True where a cell is missing: null, NaN, or a missing-value token such as ''."""
    values = plain_array(values)
    missing = pc.is_null(values, nan_is_null=pa.types.is_floating(values.type))
    if is_text(values.type):
        token = pc.is_in(pc.utf8_trim_whitespace(values), value_set=MISSING_TOKENS)
        missing = pc.or_(missing, pc.fill_null(token, True))
    return missing.to_numpy(zero_copy_only=False)


def parse_numeric(values, column: str, source: str, first_row: int = 0) -> np.ndarray:
    """Convert a column to float64 with NaN for missing cells.

    Raises InputError naming the first row whose text is not a number, or whose
    value is infinite.
    """
    values = plain_array(values)
    if pa.types.is_boolean(values.type):
        raise InputError(f"column `{column}` in {source} holds true/false values, not numbers; "
                         f"retrain with --categorical {column}")
    missing = missing_mask(values)
    if pa.types.is_null(values.type):  # Parquet's type for a column with no values at all
        numbers = np.full(len(values), np.nan)
    elif pa.types.is_integer(values.type) or pa.types.is_floating(values.type) \
            or pa.types.is_decimal(values.type):
        numbers = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
        numbers = np.where(missing, np.nan, numbers)
    elif is_text(values.type):
        numbers = _parse_text_numbers(values, missing, column, source, first_row)
    else:
        raise InputError(f"column `{column}` in {source} has type {values.type}, not numbers; "
                         f"retrain with --categorical {column} or exclude it")
    infinite = np.isinf(numbers)
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise InputError(f"column `{column}` in {source} has an infinite value at row {first_row + row + 1}; "
                         "replace it with a finite number or leave the cell empty")
    return numbers


def _parse_text_numbers(values: pa.Array, missing: np.ndarray, column: str,
                        source: str, first_row: int = 0) -> np.ndarray:
    text = pc.if_else(pa.array(missing), pa.scalar(None, values.type),
                      pc.utf8_trim_whitespace(values))
    try:
        return pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        parsed = pd.to_numeric(pd.Series(text.to_pylist(), dtype=object), errors="coerce")
        bad = np.flatnonzero(parsed.isna().to_numpy() & ~missing)
        row = int(bad[0]) if len(bad) else 0
        raise InputError(f"column `{column}` in {source} has non-numeric value "
                         f"{values[row].as_py()!r} at row {first_row + row + 1}; "
                         "fix the value or mark it missing") from None


def looks_numeric(values) -> bool:
    """Whether every non-missing cell parses as a number (pandas' own inference rule)."""
    values = plain_array(values)
    if pa.types.is_boolean(values.type):
        return False
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type) \
            or pa.types.is_decimal(values.type):
        return True
    if not is_text(values.type):
        return False
    missing = missing_mask(values)
    if missing.all():
        return False
    try:
        _parse_text_numbers(values, missing, "", "")
    except InputError:
        return False
    return True


def category_text(values) -> pa.Array:
    """Cells as the text a CSV would hold (True -> 'True', 3 -> '3'); null where missing."""
    values = plain_array(values)
    missing = missing_mask(values)
    if pa.types.is_boolean(values.type):
        text = pc.if_else(values, "True", "False")
    elif pa.types.is_floating(values.type):
        whole = pc.equal(values, pc.round(values))
        as_int = pc.cast(pc.cast(values, pa.int64(), safe=False), pa.string())
        text = pc.if_else(pc.fill_null(whole, False), as_int, pc.cast(values, pa.string()))
    elif is_text(values.type):
        text = pc.cast(values, pa.string())
    else:
        text = pc.cast(values, pa.string())
    return pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), text)


def _as_text(value: object) -> object:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# ----- writing ------------------------------------------------------------------------
def refuse_same_file(data: Path, destination: Path, option: str, what: str = "input") -> None:
    """OutputError if writing ``destination`` would overwrite ``data``. Compared whether
    or not they exist yet: an output the run is about to write counts."""
    try:
        same = Path(destination).resolve() == Path(data).resolve()
    except (OSError, RuntimeError):  # a symlink loop, a name too long: not the same file
        same = False
    if same:
        raise OutputError(f"{option} {destination} is the {what} file itself; "
                          f"choose another path so the {what} is not overwritten")


def check_writable_destination(path: Path) -> Path:
    """Fail early, before any work, if ``path`` cannot be written; return its folder."""
    if path.is_dir():
        raise OutputError(f"{path} is a directory; pass a file path to write")
    return check_output_folder(path.parent)


def check_output_folder(directory: Path) -> Path:
    """Fail early if outputs cannot be created in ``directory``; return it."""
    if not directory.is_dir():
        raise OutputError(f"output folder {directory} does not exist; create it first")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {directory} is not writable; choose another location")
    return directory


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success.

    A failure or interruption inside the block removes the temporary file and
    leaves any previous ``path`` untouched.
    """
    path = Path(path)
    directory = check_writable_destination(path)
    try:
        handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial",
                                            dir=directory)
    except OSError as exc:
        raise OutputError(f"cannot write in folder {directory} ({exc.strerror}); "
                          "choose another location") from None
    # mkstemp creates 0600 files; give the result the permissions a plain open() would.
    os.chmod(tmp_name, 0o666 & ~_current_umask())
    try:
        with os.fdopen(handle, mode, **({"newline": ""} if "b" not in mode else {})) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp_name, path)
        _fsync_folder(directory)  # make the rename itself durable
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


class TableWriter:
    """Writes tables one after another to CSV or Parquet (by extension), or CSV to a stream."""

    def __init__(self, stream, parquet: bool):
        self.stream, self.parquet, self.writer = stream, parquet, None

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.writer = (pq.ParquetWriter(self.stream, table.schema) if self.parquet
                           else self._csv_writer(table.schema))
        self.writer.write_table(table)

    def _csv_writer(self, schema: pa.Schema) -> pa_csv.CSVWriter:
        # A Parquet input may carry lists or structs through to the output; a CSV
        # cell cannot hold them (checked before a byte is written).
        for field in schema:
            if pa.types.is_nested(field.type):
                raise OutputError(f"column `{field.name}` holds {field.type} values, which a CSV "
                                  "output cannot hold; write a .parquet output or drop the column")
        # Arrow quotes every header name; write the header the way csv.writer does,
        # quoting only names that need it, so it matches the input's header.
        header = io.StringIO()
        csv.writer(header, lineterminator="\n").writerow(schema.names)
        self.stream.write(header.getvalue().encode())
        return pa_csv.CSVWriter(self.stream, schema,
                                write_options=pa_csv.WriteOptions(include_header=False))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@contextlib.contextmanager
def table_output(path: Path | None, stdout=None) -> Iterator[TableWriter]:
    """A TableWriter onto ``path`` (atomically) or, when ``path`` is None, onto ``stdout``."""
    if path is None:
        writer = TableWriter(stdout, parquet=False)
        yield writer
        writer.close()
        return
    with atomic_output(path, "wb") as stream:
        writer = TableWriter(stream, parquet=is_parquet(path))
        yield writer
        writer.close()


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for writing ``path``, so two runs never write it at once.

    The lock is an advisory flock on a hidden sidecar file; a second run that finds
    it held fails at once with OutputError instead of waiting behind a stuck job.
    """
    lock_path = path.with_name(f".{path.name}.lock")
    try:
        handle = open(lock_path, "a")
    except OSError as exc:
        raise OutputError(f"cannot write in folder {path.parent} ({exc.strerror}); "
                          "choose another location") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"another vae-anomaly run is writing {path}; wait for it to "
                              "finish or choose another output") from None
        try:
            yield
        finally:
            # Removed while still held, so folders are not littered with lock files.
            # (A run that opened it just before may then lock an orphan; the atomic
            # rename still keeps every output whole.)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fsync_folder(directory: Path) -> None:
    with contextlib.suppress(OSError):
        handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
