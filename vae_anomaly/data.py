"""Reading tables and writing files atomically.

Tables are Apache Arrow tables. CSV cells are read as their raw text, so columns
the model does not use (ids, labels, timestamps) are written back with the same
values; Parquet columns keep their types. What each cell means (a number, a
boolean, a category) is logical_types.py's step. ``read_batches`` streams a file
in chunks, so memory does not grow with the file.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from .defaults import DEFAULT_CHUNK_ROWS
from .errors import InputError, OutputError

if TYPE_CHECKING:
    import pandas as pd

PARQUET_SUFFIXES = (".parquet", ".pq")
# A CSV name's last extension picks its codec; pyarrow's streams do the work.
CSV_CODECS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}
STDIN = "-"
# Bytes of CSV text parsed at a time. Arrow parses blocks ahead on its threads, so
# this (not the chunk size alone) sets the reader's share of peak memory: 8 MiB
# blocks peaked at 773 MiB RSS reading and writing 5M rows, 1 MiB at 423 MiB, at the
# same speed.
CSV_BLOCK_BYTES = 1 << 20
_MAX_CSV_BLOCK_BYTES = 1 << 30


def is_parquet(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(PARQUET_SUFFIXES)


def is_stdin(path: str | os.PathLike) -> bool:
    """``-`` names standard input (CSV), as in most Unix tools."""
    return str(path) == STDIN


def source_name(path: str | os.PathLike) -> str:
    """How messages name an input: its file name, "standard input" for ``-``, or a
    database URL without its password."""
    if is_database_url(path):
        return redact_url(path)
    return "standard input" if is_stdin(path) else Path(path).name


# Database URLs (sql.py reads and writes them; these helpers import no driver).
DATABASE_SCHEMES = ("postgresql://", "postgres://", "sqlite://")


def is_database_url(data: object) -> bool:
    """Whether ``data`` is a database URL (a str: a Path would have folded its //)."""
    return isinstance(data, str) and data.lower().startswith(DATABASE_SCHEMES)


def url_passwords(url: str) -> list[str]:
    """The passwords a URL carries, in its user part or as ?password=, as written."""
    netloc = url.partition("://")[2].partition("/")[0]
    userinfo, at, _ = netloc.rpartition("@")
    found = [userinfo.split(":", 1)[1]] if at and ":" in userinfo else []
    return found + re.findall(r"[?&]password=([^&#]*)", url)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, for messages, summaries and logs:
    postgresql://me:secret@db/prod -> postgresql://me:***@db/prod."""
    scheme, _, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    tail = re.sub(r"([?&]password=)[^&#]*", r"\1***", tail)
    return f"{scheme}://{netloc}{slash}{tail}"


def compression_of(path: str | os.PathLike) -> str | None:
    """The codec a CSV name asks for by its last extension (.gz, .bz2, .zst), or None."""
    return CSV_CODECS.get(Path(path).suffix.lower())


def plain_name(path: str | os.PathLike) -> str:
    """The name without a compression extension: today.csv.gz -> today.csv."""
    name = Path(path).name
    return name[:-len(Path(name).suffix)] if compression_of(name) else name


# ----- reading ----------------------------------------------------------------------
def read_table(path: str | os.PathLike) -> pa.Table:
    """Read a whole CSV (every cell as text) or Parquet file into an Arrow table.

    Raises InputError with a one-line message for a missing file, a directory, an
    empty file, bytes that are not UTF-8, duplicate column names or a malformed CSV.
    """
    return pa.concat_tables(read_batches(path, chunk_rows=1 << 62))


def read_batches(path: str | os.PathLike, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[pa.Table]:
    """Yield the file as tables of exactly ``chunk_rows`` rows, the last one shorter
    (at least one table, perhaps empty). Slices share the reader's buffers.

    ``path`` is a CSV file (plain or compressed, by extension), a Parquet file, or
    ``-`` for CSV on standard input; all are streamed in bounded memory.
    """
    path = Path(path)
    if is_stdin(path):
        schema, reader = _csv_batches(_StdinSource())
    else:
        _check_readable_file(path)
        schema, reader = (_parquet_batches(path, chunk_rows) if is_parquet(path)
                          else _csv_batches(_FileSource(path)))
    with _arrow_errors(source_name(path), compression_of(path)):
        yield from rechunk(schema, reader, chunk_rows)


def rechunk(schema: pa.Schema, batches, chunk_rows: int) -> Iterator[pa.Table]:
    """Record batches as tables of exactly ``chunk_rows`` rows, the last one shorter
    (at least one table, perhaps empty, of ``schema``)."""
    pending, yielded = None, False
    for batch in batches:
        table = pa.Table.from_batches([batch])
        pending = table if pending is None else pa.concat_tables([pending, table])
        while pending.num_rows >= chunk_rows:
            yield pending.slice(0, chunk_rows)
            pending, yielded = pending.slice(chunk_rows), True
    if pending is None:
        yield schema.empty_table()
    elif pending.num_rows or not yielded:
        yield pending


class _FileSource:
    """A CSV file's bytes, decompressed by the codec its name asks for. It can be
    opened again (to re-read with larger blocks past a very long row)."""

    def __init__(self, path: Path):
        self.path, self.name, self.codec = path, path.name, compression_of(path)

    def open(self):
        raw = pa.OSFile(str(self.path))
        return raw if self.codec is None else pa.CompressedInputStream(raw, self.codec)

    def check_start(self, head: bytes) -> None:
        """A compressed file whose name does not say so: name the extension that
        would read it, rather than fail on its bytes as text."""
        codec = _compressed_content(head) if self.codec is None else None
        if codec:
            codec_name, suffix, _ = codec
            raise InputError(f"{self.name} is {codec_name}-compressed but its name does not end "
                             f"in {suffix}; rename it to {self.name}{suffix} (or decompress it)")

    reopenable = True


class _StdinSource:
    """CSV on standard input: read once, as it arrives."""

    name, codec, reopenable = "standard input", None, False

    def open(self):
        if sys.stdin is None or sys.stdin.isatty():
            raise InputError("- reads CSV from standard input, but none is piped in; "
                             "pipe a file in (e.g. zcat today.csv.gz | vae-anomaly score - -o -) "
                             "or pass a file path")
        return sys.stdin.buffer

    def check_start(self, head: bytes) -> None:
        if head.startswith(b"PAR1"):
            raise InputError("standard input holds a Parquet file, which cannot be read from a "
                             "pipe; pass its path instead of -")
        codec = _compressed_content(head)
        if codec:
            codec_name, suffix, command = codec
            raise InputError(f"standard input is {codec_name}-compressed; decompress it in the "
                             f"pipe, e.g. {command} today.csv{suffix} | vae-anomaly score - -o -")


def _csv_batches(source) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The header's schema (every column text) and the record batches after it."""
    with _arrow_errors(source.name, source.codec):
        stream = source.open()
        head = _read_header_bytes(stream, source.name)
    source.check_start(head)
    header = _parse_header(head, source.name)
    _check_header(header, source.name)
    schema = pa.schema([(name, pa.string()) for name in header])
    return schema, _csv_record_batches(source, _Replay(head, stream), schema)


def _csv_record_batches(source, stream, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    options = pa_csv.ConvertOptions(column_types=schema, strings_can_be_null=False,
                                    quoted_strings_can_be_null=False)
    block, delivered = CSV_BLOCK_BYTES, 0
    while True:
        try:
            # newlines_in_values: a quoted cell may hold a line break (e.g. a note).
            reader = pa_csv.open_csv(stream, read_options=pa_csv.ReadOptions(block_size=block),
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
            # blocks, past the rows already delivered. A pipe cannot be read again.
            if "straddling" not in str(exc) or block >= _MAX_CSV_BLOCK_BYTES:
                raise
            if not source.reopenable:
                raise InputError(f"a row of {source.name} is longer than {block >> 20} MiB, "
                                 "more than a pipe can be re-read for; pass the file by its "
                                 "path instead of -") from None
            block *= 8
            stream = source.open()


def _skip_rows(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        if rows >= batch.num_rows:
            rows -= batch.num_rows
            continue
        yield batch.slice(rows) if rows else batch
        rows = 0


_HEADER_READ_BYTES = 1 << 16
_MAX_HEADER_BYTES = 64 << 20


def _read_header_bytes(stream, name: str) -> bytes:
    """The bytes read from ``stream`` up to the end of its first CSV record (perhaps a
    little past it). The CSV reader parses them again, so a pipe loses nothing."""
    head = b""
    while True:
        block = stream.read(_HEADER_READ_BYTES)
        head += block
        if not block or _first_record_end(head) is not None:
            break
        if len(head) > _MAX_HEADER_BYTES:
            raise InputError(f"the first line of {name} is longer than 64 MiB; "
                             "expected a CSV header row")
    if not head:
        raise InputError(f"{name} is empty; expected a CSV file with a header row")
    return head


def _parse_header(head: bytes, name: str) -> list[str]:
    try:
        text = head[:_first_record_end(head)].decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name} is not UTF-8 text (bad byte at position {exc.start}); "
                         "re-save it as UTF-8") from None
    return next(csv.reader(io.StringIO(text, newline="")), [])


def _first_record_end(data: bytes) -> int | None:
    """Where the first CSV record ends: its first line break outside quotes."""
    position = data.find(b"\n")
    while position >= 0:
        if data.count(b'"', 0, position) % 2 == 0:
            return position + 1
        position = data.find(b"\n", position + 1)
    return None


class _Replay(io.RawIOBase):
    """``head`` (bytes already read from ``stream``), then the rest of ``stream``."""

    def __init__(self, head: bytes, stream):
        self.head, self.stream = memoryview(head), stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.head:
            size = min(len(buffer), len(self.head))
            buffer[:size], self.head = self.head[:size], self.head[size:]
            return size
        data = self.stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if self.stream is not sys.stdin.buffer:  # the process's stdin stays open
            self.stream.close()
        super().close()


# How compressed files start (bzip2's magic includes its first block's, so that a CSV
# header that happens to begin "BZh" is not mistaken for one).
_MAGIC = ((re.compile(re.escape(b"\x1f\x8b")), ("gzip", ".gz", "zcat")),
          (re.compile(b"BZh[1-9]1AY&SY"), ("bzip2", ".bz2", "bzcat")),
          (re.compile(re.escape(b"\x28\xb5\x2f\xfd")), ("zstd", ".zst", "zstdcat")))


def _compressed_content(head: bytes) -> tuple[str, str, str] | None:
    """(codec, extension, the command that decompresses it to stdout) when ``head``
    starts as a compressed file does."""
    return next((codec for magic, codec in _MAGIC if magic.match(head)), None)


def _parquet_batches(path: Path, chunk_rows: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path.name} is not a readable Parquet file ({_first_line(exc)}); "
                         "check the file") from None
    _check_header(parquet.schema_arrow.names, path.name)
    # Empty outputs keep a Parquet file's own types, so a quiet night's output has the
    # usual schema.
    return parquet.schema_arrow, parquet.iter_batches(batch_size=min(chunk_rows, 1 << 20))


@contextlib.contextmanager
def _arrow_errors(name: str, codec: str | None = None) -> Iterator[None]:
    try:
        yield
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as exc:
        detail = _first_line(exc)
        if isinstance(exc, OSError):
            # Arrow's own I/O errors (a damaged compressed stream) carry no errno.
            if exc.errno is not None:
                raise InputError(f"cannot read {name}: {os.strerror(exc.errno)}") from None
            if codec is not None:
                raise InputError(f"{name} is not valid {codec} data ({detail}); check the file "
                                 "or export it again") from None
            raise InputError(f"cannot read {name}: {detail}") from None
        if "UTF8" in detail or "UTF-8" in detail:
            raise InputError(f"{name} is not UTF-8 text ({detail}); re-save it as UTF-8") from None
        raise InputError(f"{name} is not a well-formed CSV: {detail}; fix the file") from None


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


def _check_header(header: list[str], source: str) -> None:
    if not any(name.strip() for name in header):
        raise InputError(f"{source} has no header row; the first line must name the columns")
    if len(header) == 1:
        for delimiter, label in ((";", "';'"), ("\t", "tabs"), ("|", "'|'")):
            if delimiter in header[0]:
                raise InputError(f"{source} seems to be separated by {label}, not commas; "
                                 "save it as a comma-separated CSV")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise InputError(f"column `{name}` appears twice in the header of {source}; "
                             "give every column a unique name")
        seen.add(name)


def to_arrow(frame: pd.DataFrame | pa.Table) -> pa.Table:
    """Accept a pandas DataFrame or an Arrow table; return an Arrow table."""
    if isinstance(frame, pa.Table):
        _refuse_repeated_names(frame.column_names, "Arrow table", "")
        return frame
    # pandas is imported only when it may be in use: a DataFrame implies it already is.
    pd = sys.modules.get("pandas")
    if pd is None or not isinstance(frame, pd.DataFrame):
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


# ----- Arrow helpers (logical_types.py maps cells onto the model's types) ------------
def plain_array(values) -> pa.Array:
    """One Arrow array from a column (a ChunkedArray of any number of chunks) or an array."""
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    return values


def is_text(arrow_type: pa.DataType) -> bool:
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


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
    or not they exist yet: an output the run is about to write counts. Standard input
    (``-``) and a database URL are no file to overwrite."""
    if is_stdin(data) or is_database_url(data) or is_database_url(destination):
        return
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
        # By name, after closing: a compressed stream written inside the block closes
        # the file itself when it ends.
        _fsync(tmp_name)
        os.replace(tmp_name, path)
        _fsync_folder(directory)  # make the rename itself durable
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


class TableWriter:
    """Writes tables one after another to a stream: Parquet, or CSV whose cells are
    quoted only where CSV needs it, so that input text comes back as it was."""

    def __init__(self, stream, parquet: bool):
        self.stream, self.parquet = stream, parquet
        self.parquet_writer: pq.ParquetWriter | None = None
        self.started = False

    def write(self, table: pa.Table) -> None:
        if self.parquet:
            if self.parquet_writer is None:
                self.parquet_writer = pq.ParquetWriter(self.stream, table.schema)
            self.parquet_writer.write_table(table)
            return
        if not self.started:
            self.stream.write(csv_header(table.schema))
            self.started = True
        if table.num_rows:
            self.stream.write(csv_rows(table))

    def close(self) -> None:
        if self.parquet_writer is not None:
            self.parquet_writer.close()


def csv_header(schema: pa.Schema) -> bytes:
    """The header line, names quoted as csv.writer quotes them (only where needed).
    Refuses lists and structs, which a CSV cell cannot hold (a Parquet input may
    carry them through), before a byte is written."""
    for field in schema:
        if pa.types.is_nested(field.type):
            raise OutputError(f"column `{field.name}` holds {field.type} values, which a CSV "
                              "output cannot hold; write a .parquet output or drop the column")
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(schema.names)
    return header.getvalue().encode()


# Cells holding one of these need quotes in CSV (RFC 4180); no other cell gets them.
_CSV_SPECIAL = '[",\r\n]'


def csv_rows(table: pa.Table) -> bytes:
    """The rows of ``table`` as CSV text, one line each, in Arrow's compute kernels.

    Arrow's own writer quotes every text cell (``T1`` becomes ``"T1"``), which
    breaks cut and awk and every diff against the input; here a cell is quoted only
    when it holds a comma, a quote or a line break. Other values print as Arrow's
    writer prints them (it casts to text the same way); missing cells stay empty.
    """
    cells = [_csv_cells(column) for column in table.columns]
    lines = plain_array(pc.binary_join_element_wise(*cells, _text(","), null_handling="replace",
                                                    null_replacement=""))
    rows = pa.LargeListArray.from_arrays(pa.array([0, len(lines)], pa.int64()), lines)
    text = pc.binary_join(rows, _text("\n"))
    return text[0].as_buffer().to_pybytes() + b"\n"


def _csv_cells(column: pa.ChunkedArray) -> pa.ChunkedArray:
    text = _decimal_text(column) if pa.types.is_decimal(column.type) else \
        pc.cast(column, pa.large_string())
    if not _may_hold_special(column):
        return text
    special = pc.match_substring_regex(text, _CSV_SPECIAL)
    quote = _text('"')
    quoted = pc.binary_join_element_wise(quote, pc.replace_substring(text, '"', '""'), quote,
                                         _text(""))
    return pc.if_else(special, quoted, text)


def _decimal_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Decimals in plain notation, as a database prints them: Arrow's cast writes a
    small value of a scale above 6 as 0E-9 or 1E-9."""
    text = pc.cast(column, pa.large_string())
    if not pc.any(pc.match_substring(text, "E")).as_py():
        return text
    return pa.chunked_array([pa.array([None if value is None else format(value, "f")
                                       for value in column.to_pylist()], pa.large_string())])


_SPECIAL_BYTES = np.frombuffer(b'",\r\n', dtype=np.uint8)


def _may_hold_special(column: pa.ChunkedArray) -> bool:
    """Whether any cell might need quotes. Numbers, dates and flags never do; text is
    screened by scanning its bytes at once, far faster than a per-cell pattern (a
    false alarm only costs the exact per-cell test)."""
    kind = column.type
    if not (is_text(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
            or pa.types.is_dictionary(kind)):
        return False
    if pa.types.is_dictionary(kind):
        return True
    for chunk in column.chunks:
        data = chunk.buffers()[2]
        if data is not None and np.isin(np.frombuffer(data, dtype=np.uint8), _SPECIAL_BYTES).any():
            return True
    return False


def _text(value: str) -> pa.Scalar:
    return pa.scalar(value, pa.large_string())


@contextlib.contextmanager
def table_output(path: Path | None, stdout=None) -> Iterator[TableWriter]:
    """A TableWriter onto ``path`` (atomically; compressed when its name ends in
    .gz, .bz2 or .zst) or, when ``path`` is None, onto ``stdout``."""
    if path is None:
        writer = TableWriter(stdout, parquet=False)
        yield writer
        writer.close()
        return
    with atomic_output(path, "wb") as stream:
        codec = None if is_parquet(path) else compression_of(path)
        sink = pa.CompressedOutputStream(stream, codec) if codec else stream
        writer = TableWriter(sink, parquet=is_parquet(path))
        yield writer
        writer.close()
        sink.close()  # ends the compressed stream (and closes the file under it)


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


def _fsync(path: str | Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _fsync_folder(directory: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot sync a folder
        _fsync(directory)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
