"""Databases as sources and sinks: PostgreSQL and SQLite, through Apache Arrow's ADBC
drivers (``pip install 'vae-anomaly[sql]'``; imported only when a URL is used).

A source is a URL and a query: ``postgresql://[user@][host][:port]/db[?host=/socket&port=N]``
(libpq's own form, handed to libpq as written, so ``PGPASSWORD``, ``~/.pgpass`` and
``PGSERVICE`` work) or ``sqlite:///relative.db`` / ``sqlite:////abs/path.db``. Rows
stream in Arrow record batches, re-cut to the chunk size, so memory stays bounded
as with files. Types arrive as Arrow types (numbers as numbers, booleans as
booleans, text as text), and types the model cannot use (arrays, bytea, json,
uuid, intervals) are refused by name.

PostgreSQL ``numeric`` arrives exact, as a decimal: ``numeric(p, s)`` as
decimal128(p, s) (decimal256 beyond 38 digits), the type the server reports for
the result column (no view needed, so a read-only user on a standby reads it too);
an unconstrained ``numeric`` (or one no decimal matches: over 76 digits, PostgreSQL
15's negative scales) as one decimal type for every batch, with the most places
and the most digits before the point its values have, from a first pass over the
query in the read's own snapshot (REPEATABLE READ). NaN, Infinity and values over
76 digits are one-line errors naming the column and the fix (NULLIF, round, a
cast in the query), never rounded or made null. A query that cannot be a subquery
(one that modifies data) reads ``numeric`` as float64, as before.

SQLite types cells, not columns, and the driver types a column by its first batch of
rows: the sqlite3 shell's ``.import`` leaves empty cells as '' text in REAL columns,
which would make the whole column text with 7-digit numbers. So a result column
read straight from a table whose declared type has INTEGER, REAL or NUMERIC
affinity (not DATE/TIME types: they hold text dates) is read by that type, after a
first pass over the query that finds what its cells hold: '' and whitespace become
null, the numbers arrive bit for bit (as themselves, or as 17 significant digits,
which read back as the same double) as int64 (INTEGER or NUMERIC affinity, every
number whole) or float64; a column holding other text ('abc', 'NA') arrives as the
text of every cell, numbers in round-trip digits, for the later checks to name.
Columns whose cells already are of one type are read as the driver reads them.

A sink is a URL and a table name. Everything a run writes happens in one
transaction on one connection, committed only after the last row: a failure,
Ctrl-C, SIGTERM or kill -9 leaves the table as it was. ``replace`` writes a staging
table inside that transaction and swaps it for the old one just before the commit.
Two runs writing one table: the second is refused at once (a PostgreSQL advisory
transaction lock; for SQLite, the same lock file as for output files).

A decimal column lands as ``numeric(p, s)``, or as ``numeric`` where it was read
from an unconstrained numeric. The driver would create ``numeric`` and its COPY
drops trailing zeros (7.50 becomes 7.5), so a new table is created with numeric(p, s)
columns before the rows go in, and those read from a bare numeric become numeric
just before the commit (no rewrite: the values keep their places). Appending, the
table's columns decide: numeric(p, s) takes the values at its scale (a value it
would round is refused), numeric takes them through a temporary table of numeric(p,
s) columns, double precision (what earlier versions wrote) takes their doubles.
SQLite has no decimal type: decimals are written as REAL, the doubles of their text.

Messages never carry a password: URLs are shown through ``redact_url``, and any
password a URL holds is blotted out of the drivers' messages too.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from .data import (
    check_output_folder,
    exclusive_lock,
    is_database_url,
    read_batches,
    rechunk,
    redact_url,
    url_passwords,
)
from .errors import InputError, OutputError

SQL_INSTALL = "pip install 'vae-anomaly[sql]'"
IF_EXISTS = ("fail", "replace", "append")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
CREDENTIALS_HINT = ("set the password with PGPASSWORD, ~/.pgpass or PGSERVICE rather "
                    "than on the command line")


# ----- options ----------------------------------------------------------------------
def read_query(query: str | None) -> str | None:
    """The SQL text of --query: as given, or read from the file named after an @."""
    if query is None or not query.startswith("@"):
        if query is not None and not query.strip():
            raise InputError("--query is empty; pass the SQL that selects the rows, "
                             "e.g. --query 'SELECT * FROM events'")
        return query
    path = Path(query[1:])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise InputError(f"cannot read the query file {path} ({why}); check the path after "
                         "--query @") from None
    if not text.strip():
        raise InputError(f"the query file {path} is empty; put the SELECT in it")
    return text


def check_source_options(data, query: str | None) -> None:
    """A URL needs --query, and --query needs a URL."""
    if is_database_url(data) and query is None:
        raise InputError(f"{redact_url(data)} is a database: pass --query with the SQL that "
                         "selects the rows (or --query @file.sql)")
    if query is not None and not is_database_url(data):
        raise InputError(f"--query selects rows from a database, but DATA {data} is a file; "
                         "pass a postgresql:// or sqlite:/// URL as DATA, or drop --query")


def check_sink_options(output, output_table: str | None, if_exists: str) -> None:
    if if_exists not in IF_EXISTS:
        raise InputError(f"--if-exists must be one of {', '.join(IF_EXISTS)}, not {if_exists!r}")
    if is_database_url(output):
        if output_table is None:
            raise InputError(f"-o {redact_url(output)} is a database: pass --output-table NAME "
                             "for the table to write")
        table_name(output_table)  # refuse a bad name before any work
    elif output_table is not None:
        raise InputError("--output-table names a table in a database: pass the database as "
                         "-o URL (postgresql://... or sqlite:///file.db)")
    elif if_exists != "fail":
        raise InputError(f"--if-exists {if_exists} applies to a table: pass -o URL and "
                         "--output-table NAME, or drop --if-exists (files are replaced "
                         "atomically)")


def table_name(name: str) -> tuple[str | None, str]:
    """(schema, table) from NAME or SCHEMA.NAME; letters, digits and _ only."""
    parts = name.split(".")
    if len(parts) > 2 or not all(_IDENTIFIER.fullmatch(part) for part in parts):
        raise InputError(f"--output-table {name!r} is not a table name; use letters, digits "
                         "and _ (starting with a letter), optionally as schema.table")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


# ----- connections --------------------------------------------------------------------
def _driver_error() -> type[Exception]:
    import adbc_driver_manager

    return adbc_driver_manager.Error


def _scrub(text: str, url: str) -> str:
    """One line of a driver's message, with every password the URL holds blotted out."""
    line = " ".join(str(text).split())
    for password in url_passwords(url):
        for form in {password, urllib.parse.unquote(password)}:
            if form:
                line = line.replace(form, "***")
    return line


def _detail(exc: BaseException, url: str) -> str:
    """The useful part of an ADBC error: the server's message, without the driver's
    prefixes, the echoed query or the SQLSTATE."""
    text = str(exc)
    text = re.sub(r"^[A-Z_]+: (\[libpq\] )?", "", text.strip())
    text = re.sub(r"^(Failed to connect|Failed to prepare query|Failed to execute query"
                  r"|Failed to bind|[A-Za-z ]*failed): ", "", text)
    text = text.split("\nLINE ")[0].split("\nQuery was:")[0]
    text = re.sub(r"\s*SQLSTATE: \w+\s*$", "", text)
    return _scrub(text.replace("ERROR:  ", "").replace("FATAL:  ", ""), url).rstrip(". ")


def sqlite_path(url: str) -> Path:
    """sqlite:///relative.db -> relative.db; sqlite:////abs/path.db -> /abs/path.db."""
    prefix = "sqlite:///"
    if not url.lower().startswith(prefix) or len(url) == len(prefix):
        raise InputError(f"{url} is not a SQLite URL this tool reads; write sqlite:///relative.db "
                         "or sqlite:////absolute/path.db")
    return Path(url[len(prefix):].split("?", 1)[0])


def is_sqlite(url: str) -> bool:
    return url.lower().startswith("sqlite:")


def connect(url: str, error: type[Exception] = InputError, *, create: bool = False):
    """An ADBC DB-API connection (autocommit off) to ``url``; one-line errors naming
    the server (without its password) and the fix."""
    name = redact_url(url)
    try:
        if is_sqlite(url):
            import adbc_driver_sqlite.dbapi as driver
        else:
            import adbc_driver_postgresql.dbapi as driver
    except ImportError:
        raise error(f"reading or writing {name} needs the database drivers; install them "
                    f"with {SQL_INSTALL}") from None
    if is_sqlite(url):
        path = sqlite_path(url)
        if create:
            check_output_folder(path.parent if str(path.parent) else Path("."))
        elif not path.is_file():
            raise error(f"SQLite database {path} not found (from {name}); check the path: "
                        "sqlite:///relative.db or sqlite:////absolute/path.db")
        target = str(path)
    else:
        target = url
    try:
        return driver.connect(target)
    except _driver_error() as exc:
        detail = _detail(exc, url)
        if re.search(r"password authentication failed|no password supplied|"
                     r"authentication failed|role .* does not exist", detail):
            raise error(f"cannot log in to {name}: {detail}; check the user in the URL and "
                        f"its password ({CREDENTIALS_HINT})") from None
        raise error(f"cannot connect to {name}: {detail}; check that the server is running "
                    "and the URL's host, port and database") from None


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _qualified(schema: str | None, table: str) -> str:
    return _quote(table) if schema is None else f"{_quote(schema)}.{_quote(table)}"


def _scalar(cursor, sql: str):
    cursor.execute(sql)
    row = cursor.fetchone()
    return None if row is None else row[0]


# ----- reading ------------------------------------------------------------------------
def read_source(data, query: str | None, chunk_rows: int) -> Iterator[pa.Table]:
    """``data.read_batches`` for files; for a database URL, the query's rows in
    tables of exactly ``chunk_rows`` rows (the last shorter; at least one)."""
    check_source_options(data, query)
    if not is_database_url(data):
        return read_batches(data, chunk_rows)
    return _query_batches(data, query, chunk_rows)


def read_source_table(data, query: str | None) -> pa.Table:
    """All the rows of a file or a query, in one table."""
    return pa.concat_tables(read_source(data, query, 1 << 62))


def _query_batches(url: str, query: str, chunk_rows: int) -> Iterator[pa.Table]:
    name = redact_url(url)
    connection = connect(url)
    try:
        cursor = connection.cursor()
        # SQLite: how to read each column by its declared type (None: as the driver does).
        plan = _sqlite_plan(cursor, query) if is_sqlite(url) else None
        try:
            # PostgreSQL: the decimal type each numeric column is read as, by position.
            numerics = {} if is_sqlite(url) else _pg_numerics(connection, cursor, query, name)
            cursor.execute(query)
            reader = cursor.fetch_record_batch()
            if plan is not None:  # the query's own column names, on the cells as declared
                names = reader.schema.names
                reader.close()
                cursor.execute(_sqlite_select(plan, names))
                reader = cursor.fetch_record_batch()
        except _driver_error() as exc:
            raise InputError(f"the query failed on {name}: {_detail(exc, url)}; fix --query "
                             "(or the table it reads)") from None
        schema = reader.schema if plan is None else _sqlite_decode(
            plan, pa.RecordBatch.from_pylist([], schema=reader.schema)).schema
        schema, convert = _usable_schema(schema, name, numerics)
        batches = (convert(_sqlite_decode(plan, batch)) for batch in reader)
        try:
            yield from rechunk(schema, batches, chunk_rows)
        except (_driver_error(), pa.ArrowException) as exc:
            raise InputError(f"reading the rows of the query from {name} failed: "
                             f"{_detail(exc, url)}; fix --query or the data") from None
    finally:
        with contextlib.suppress(Exception):
            connection.close()


# ----- SQLite: columns by their declared type ---------------------------------------------
_BLANK = "char(9, 10, 11, 12, 13, 32)"  # the whitespace a blank cell may hold
# What a cell holds, as a bit: OR-ed over a column (the sum of its distinct bits).
_GAP, _BAD, _INTEGER, _WHOLE, _FRACTION = 1, 2, 4, 8, 16
_END = re.compile(r"[\s;]+\Z")  # a view's SELECT may not end in ;


def _numeric_affinity(declared: str) -> str | None:
    """INTEGER, REAL or NUMERIC: the affinity SQLite gives a declared type
    (sqlite.org/datatype3.html, 3.1), where it is one of those; None for TEXT and
    BLOB affinity, and for date/time types (NUMERIC affinity, but they hold text)."""
    kind = declared.upper()
    if "INT" in kind:
        return "INTEGER"
    if not kind or any(word in kind for word in ("CHAR", "CLOB", "TEXT", "BLOB")):
        return None
    if any(word in kind for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return None if "DATE" in kind or "TIME" in kind else "NUMERIC"


def _sqlite_plan(cursor, query: str) -> tuple[str, list[tuple[str, str | None]]] | None:
    """(view, [(column, how)]): the query as a TEMP view, and how to read each of its
    columns (``_how``); None where every column reads right as the driver reads it,
    or where the query cannot be a view (then the driver reads it as it is)."""
    view = f"vae_anomaly_types_{uuid.uuid4().hex}"
    try:  # a view tells each result column's declared type (none for expressions)
        cursor.execute(f"CREATE TEMP VIEW {view} AS {_END.sub('', query)}")
        cursor.execute(f"PRAGMA table_info({_quote(view)})")
        columns = [(row[1], _numeric_affinity(row[2] or "")) for row in cursor.fetchall()]
        flags = _cell_flags(cursor, view, [(c, a) for c, a in columns if a is not None])
        plan = (view, [(column, _how(affinity, flags.get(column, 0)) if affinity else None)
                       for column, affinity in columns])
    except _driver_error():
        plan = None
    if plan is None or not any(how for _, how in plan[1]):
        with contextlib.suppress(Exception):
            cursor.execute(f"DROP VIEW IF EXISTS {view}")
        return None
    return plan  # the view lives until the connection closes, which drops it


def _cell_flags(cursor, view: str, columns: list[tuple[str, str]]) -> dict[str, int]:
    """For each numeric column, the OR of the flags of its cells: a first pass over
    the query, since one late cell may change the whole column's type."""
    if not columns:
        return {}
    parts = []
    for column, _ in columns:
        q = _quote(column)
        parts.append(f"coalesce(sum(DISTINCT CASE typeof({q}) WHEN 'null' THEN {_GAP} "
                     f"WHEN 'integer' THEN {_INTEGER} WHEN 'real' THEN CASE WHEN {q} = "
                     f"CAST({q} AS INTEGER) THEN {_WHOLE} ELSE {_FRACTION} END WHEN 'text' "
                     f"THEN CASE WHEN trim({q}, {_BLANK}) = '' THEN {_GAP} ELSE {_BAD} END "
                     f"ELSE {_BAD} END), 0)")
    cursor.execute(f"SELECT {', '.join(parts)} FROM {view}")
    return {column: int(flag) for (column, _), flag in zip(columns, cursor.fetchone())}


def _how(affinity: str, flags: int) -> str | None:
    """How to read a numeric column whose cells hold ``flags``: "text" (some cell is
    neither a number nor blank), "integer", "real" or "digits" (float64 sent as
    round-trip text, so that a null-only first batch cannot type the column), or
    None where the driver already reads every cell as that type."""
    if flags & _BAD:
        return "text"
    if affinity != "REAL" and not flags & _FRACTION:  # whole numbers that fit int64
        return None if flags & ~_INTEGER == 0 else "integer"
    if flags & ~(_WHOLE | _FRACTION) == 0:
        return None
    return "digits" if flags & _GAP else "real"


def _sqlite_select(plan, names: list[str]) -> str:
    """The SELECT over the plan's view that sends each column as ``_how`` says, under
    the name the query itself gives it (a view may spell names otherwise)."""
    view, columns = plan
    if len(names) != len(columns):  # not expected: the view is the query
        names = [column for column, _ in columns]
    number = "typeof({0}) IN ('integer', 'real')"
    digits = "printf('%!.17g', {0})"  # 17 digits: every double reads back as itself
    forms = {
        None: "{0}",
        "integer": f"CASE WHEN {number} THEN CAST({{0}} AS INTEGER) END",
        "real": "CAST({0} AS REAL)",
        # Never null, so that the driver's first batch types it as text: '' is a gap.
        "digits": f"CASE WHEN {number} THEN {digits} ELSE '' END",
        # '' for null, and '=' before every cell's text.
        "text": f"CASE WHEN {{0}} IS NULL THEN '' WHEN typeof({{0}}) = 'real' THEN '=' || "
                f"{digits} ELSE '=' || CAST({{0}} AS TEXT) END",
    }
    cells = [f"{forms[how].format(_quote(column))} AS {_quote(name)}"
             for (column, how), name in zip(columns, names)]
    return f"SELECT {', '.join(cells)} FROM {view}"


def _sqlite_decode(plan, batch: pa.RecordBatch) -> pa.RecordBatch:
    """A batch of ``_sqlite_select`` with its "digits" columns as float64 and its
    "text" columns as the cells' text ('' -> null, the '=' taken off); without a
    plan, the batch as it is."""
    if plan is None:
        return batch
    arrays = []
    for column, (_, how) in zip(batch.columns, plan[1]):
        if how in ("digits", "text"):
            gap = pc.equal(column, "")
            values = column if how == "digits" else pc.utf8_slice_codeunits(column, 1)
            column = pc.if_else(gap, pa.scalar(None, column.type), values)
            column = pc.cast(column, pa.float64()) if how == "digits" else column
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _usable_schema(schema: pa.Schema, name: str, numerics: dict[int, pa.Field] | None = None):
    """The schema the rows are handed on with, and a function converting each batch:
    PostgreSQL numeric (an opaque text type in Arrow) becomes the field ``numerics``
    gives for its position (a decimal, or float64 where none is given); the drivers'
    field metadata is dropped; a type the model cannot use is refused by name."""
    numerics = numerics or {}
    fields, casts = [], []
    for position, field in enumerate(schema):
        kind = field.type
        if _is_pg_numeric(kind):
            fields.append(numerics.get(position) or pa.field(field.name, pa.float64()))
            casts.append(True)
            continue
        if not _usable(kind):
            db_type = (field.metadata or {}).get(b"POSTGRESQL:type", b"").decode() or str(kind)
            raise InputError(f"column `{field.name}` of the query on {name} has type {db_type}, "
                             f"which vae-anomaly cannot read; cast it in --query (e.g. "
                             f"CAST({field.name} AS text)) or leave it out")
        fields.append(pa.field(field.name, kind))
        casts.append(False)
    target = pa.schema(fields)
    rows = 0  # read so far, for the row a message names

    def convert(batch: pa.RecordBatch) -> pa.RecordBatch:
        nonlocal rows
        arrays = [_read_numeric(column.storage, field, rows, name) if cast else column
                  for column, field, cast in zip(batch.columns, target, casts)]
        rows += batch.num_rows
        return pa.RecordBatch.from_arrays(arrays, schema=target)

    return target, convert


def _is_pg_numeric(kind: pa.DataType) -> bool:
    return (getattr(kind, "extension_name", None) == "arrow.opaque"
            and getattr(kind, "type_name", None) == "numeric")


# ----- PostgreSQL numeric as decimals -------------------------------------------------
_MAX_DIGITS = 76  # decimal256's precision
# Field metadata marking a decimal read from an unconstrained numeric: a table sink
# creates its column as numeric, not numeric(p, s).
_PG_TYPE = b"vae_anomaly:postgresql_type"
_UNCONSTRAINED = {_PG_TYPE: b"numeric"}
# How the driver spells the numeric values a decimal cannot hold.
_NOT_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _decimal(precision: int, scale: int) -> pa.DataType:
    return (pa.decimal128 if precision <= 38 else pa.decimal256)(precision, scale)


def _numeric_typmod(typmod: int) -> tuple[int, int] | None:
    """(precision, scale) of numeric(p, s) from its typmod, ((p << 16) | s) + 4 with
    the scale in 11 bits and its sign (PostgreSQL 15 allows -1000 to 1000); None
    for an unconstrained numeric (typmod -1)."""
    if typmod < 4:
        return None
    return (typmod - 4) >> 16, (((typmod - 4) & 0x7FF) ^ 0x400) - 0x400


def _pg_numerics(connection, cursor, query: str, name: str) -> dict[int, pa.Field]:
    """For each numeric column of the query, by position, the field it is read as:
    numeric(p, s) as decimal(p, s), the type the server reports for the result
    column (what a view's atttypmod would say, without creating one); an
    unconstrained numeric as the decimal its values need (``_probe_numerics``)."""
    schema = cursor.adbc_execute_schema(query)  # prepared, not run
    fields, open_ = {}, []
    for position, field in enumerate(schema):
        if not _is_pg_numeric(field.type):
            continue
        typmod = int((field.metadata or {}).get(b"POSTGRESQL:typmod", b"-1"))
        declared = _numeric_typmod(typmod)
        # A negative scale, or one above the precision, is no decimal(p, s) alike.
        if declared is not None and 0 <= declared[1] <= declared[0] <= _MAX_DIGITS:
            fields[position] = pa.field(field.name, _decimal(*declared))
        else:
            open_.append(position)
    if open_:
        fields.update(_probe_numerics(connection, cursor, query, schema, open_, name))
    return fields


def _probe_numerics(connection, cursor, query: str, schema: pa.Schema, positions: list[int],
                    name: str) -> dict[int, pa.Field]:
    """Unconstrained numeric columns: one decimal type for all the batches, the most
    places any value has and the most digits before its point, from a first pass
    over the query in the snapshot the read then uses (REPEATABLE READ), so both
    see the same rows. Where the query cannot be a subquery, float64 (as before)."""
    aliases = ", ".join(f"c{position}" for position in range(len(schema)))
    parts = ", ".join(f"max(scale(c{p})), max(length(trunc(abs(c{p}))::text))"
                      for p in positions)
    try:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        # The newline ends a -- comment the query may end with.
        cursor.execute(f"SELECT {parts} FROM ({_END.sub('', query)}\n) AS q({aliases})")
        found = cursor.fetchone()
    except _driver_error():
        connection.rollback()  # the failed pass aborted the transaction; the read starts anew
        return {p: pa.field(schema[p].name, pa.float64()) for p in positions}
    fields = {}
    for k, position in enumerate(positions):
        column = schema[position].name
        scale, whole = found[2 * k] or 0, found[2 * k + 1] or 1
        if scale + whole > _MAX_DIGITS:
            fix = (f"round({column}, {_MAX_DIGITS - whole})" if whole < _MAX_DIGITS
                   else f"CAST({column} AS double precision)")
            raise InputError(f"column `{column}` of the query on {name} holds numbers of "
                             f"{whole} digits before the point and {scale} after, more than "
                             f"the {_MAX_DIGITS} a decimal holds exactly; change it in --query "
                             f"(e.g. {fix})")
        fields[position] = pa.field(column, _decimal(scale + whole, scale),
                                    metadata=_UNCONSTRAINED)
    return fields


def _read_numeric(text: pa.Array, field: pa.Field, first_row: int, name: str) -> pa.Array:
    """Numeric cells (the driver sends their text) as ``field.type``, exactly: the
    cast refuses any digit lost, so a cell a decimal cannot hold (NaN, Infinity, or
    one beyond the type) is a one-line error naming it, never a rounded number."""
    try:
        return pc.cast(text, field.type)
    except pa.ArrowInvalid:
        row, value = _first_misfit(text, field.type)
    column, where = field.name, f"column `{field.name}` of the query on {name}"
    word = _NOT_FINITE.get(value.lower())
    if word is not None:
        raise InputError(f"{where} holds {word} at row {first_row + row + 1}, which is not a "
                         f"number vae-anomaly can read; make it NULL in --query (e.g. "
                         f"NULLIF({column}, '{word}')) or leave the row out") from None
    kind = field.type
    raise InputError(f"{where} has {value} at row {first_row + row + 1}, which does not fit "
                     f"numeric({kind.precision}, {kind.scale}), the type found for the column "
                     f"before reading (its values changed since); cast it in --query (e.g. "
                     f"CAST({column} AS numeric({kind.precision + 10}, {kind.scale + 10})))"
                     ) from None


def _first_misfit(text: pa.Array, kind: pa.DataType) -> tuple[int, str]:
    """The position and text of the first cell that ``kind`` cannot hold exactly."""
    for row, value in enumerate(text.to_pylist()):
        try:
            if value is not None:
                pc.cast(pa.array([value]), kind)
        except pa.ArrowInvalid:
            return row, value
    return 0, "?"  # not reached: the column's cast failed on some cell


def _usable(kind: pa.DataType) -> bool:
    t = pa.types
    return any(check(kind) for check in (
        t.is_null, t.is_boolean, t.is_integer, t.is_floating, t.is_decimal, t.is_string,
        t.is_large_string, t.is_date, t.is_timestamp, t.is_time))


# ----- writing ------------------------------------------------------------------------
def sink_name(url: str, table: str) -> str:
    """How messages and summaries name a table sink: table NAME in URL (no password)."""
    return f"table {table} in {redact_url(url)}"


class _TableSink:
    """Writes tables into one table inside the open transaction of ``connection``."""

    def __init__(self, connection, url: str, table: str, if_exists: str):
        self.connection, self.url, self.table, self.if_exists = (
            connection, url, table, if_exists)
        self.cursor = connection.cursor()
        self.schema, self.name = table_name(table)
        self.sqlite = is_sqlite(url)
        self.server = redact_url(url)
        self.started = False
        self.mode = {"fail": "create", "replace": "create", "append": "create_append"}[if_exists]
        digest = hashlib.sha256(table.encode()).hexdigest()[:12]
        # replace: the rows go to a staging table, swapped in just before the commit.
        self.staging = f"vae_anomaly_new_{digest}" if if_exists == "replace" else None
        self.fits = {}  # column -> how its decimals go into the table's column
        self.relax = []  # columns created as numeric(p, s), to be numeric at the end
        self.via = None  # a temporary table the rows pass through (``_through_temporary``)
        self.via_name = f"vae_anomaly_rows_{digest}"

    def exists(self) -> bool:
        literal = self.name.replace("'", "''")
        if self.sqlite:
            master = ("sqlite_master" if self.schema is None
                      else f"{_quote(self.schema)}.sqlite_master")
            return bool(_scalar(self.cursor, f"SELECT count(*) FROM {master} WHERE type IN "
                                             f"('table', 'view') AND name = '{literal}'"))
        qualified = _qualified(self.schema, self.name).replace("'", "''")
        return bool(_scalar(self.cursor, f"SELECT to_regclass('{qualified}') IS NOT NULL"))

    def lock(self) -> None:
        """PostgreSQL: an advisory lock held until the transaction ends (a kill -9
        ends it too); a second run writing the same table is refused at once."""
        if self.sqlite:
            return
        key = f"vae-anomaly output table {self.table}".replace("'", "''")
        if not _scalar(self.cursor, f"SELECT pg_try_advisory_xact_lock(hashtext('{key}'))"):
            raise OutputError(f"another vae-anomaly run is writing {sink_name(self.url, self.table)}; "
                              "wait for it to finish or choose another --output-table")

    def write(self, table: pa.Table) -> None:
        try:
            plain = table.replace_schema_metadata(None)
            plain = plain.cast(pa.schema([field.remove_metadata() for field in plain.schema]))
            if not self.started:  # the metadata marks decimals read from a numeric
                self._begin(table.schema, plain.schema)
            table = pa.table([self.fits.get(name, _same)(column, name) for name, column in
                              zip(plain.column_names, plain.columns)], names=plain.column_names)
            mode = "append" if self.started else self.mode
            if self.via is not None:
                self.cursor.adbc_ingest(self.via, table, mode="append", temporary=True)
                self._move(table.column_names)
            else:
                self.cursor.adbc_ingest(self.staging or self.name, table, mode=mode,
                                        db_schema_name=self.schema)
        except _driver_error() as exc:
            fix = ("make the table's columns match the output's (the input's columns, then "
                   "the score columns) or pass --if-exists replace"
                   if self.if_exists == "append" else "check the table and your rights on it")
            raise OutputError(f"cannot write {sink_name(self.url, self.table)}: "
                              f"{_detail(exc, self.url)}; {fix}") from None
        self.started = True

    def _begin(self, schema: pa.Schema, plain: pa.Schema) -> None:
        """Before the first rows: how each decimal column goes in. SQLite has no
        decimal type: as float64 (from its exact text). PostgreSQL: a new table gets
        numeric(p, s) columns (the driver would create numeric, and its COPY drops
        trailing zeros: 7.50 would be 7.5), those read from an unconstrained numeric
        made numeric again at the end, which keeps their places; an existing table
        takes them as its columns are (``_match``)."""
        decimals = [field for field in schema if pa.types.is_decimal(field.type)]
        if not decimals:
            return
        if self.sqlite:
            self.fits = {field.name: _as_float for field in decimals}
        elif self.if_exists == "append" and self.exists():
            self._match(decimals)
        else:
            target = _qualified(self.schema, self.staging or self.name)
            self.cursor.adbc_ingest(self.staging or self.name, plain.empty_table(),
                                    mode="create", db_schema_name=self.schema)
            self.cursor.execute(_numeric_columns(target, decimals))
            self.relax = [field.name for field in decimals if _unconstrained(field)]
            self.mode = "append"

    def _match(self, decimals: list[pa.Field]) -> None:
        """Appending: each decimal column as the table's column takes it. Into
        numeric(p, s), at the table's scale, checked (its COPY would round a value
        with more places); into double precision or real, as float64 (a table an
        earlier version wrote); into an unconstrained numeric, through a temporary
        table of numeric(p, s) columns, so that its cells keep their places."""
        qualified = _qualified(self.schema, self.name).replace("'", "''")
        self.cursor.execute("SELECT attname, atttypid::regtype::text, atttypmod FROM "
                            f"pg_attribute WHERE attrelid = to_regclass('{qualified}') AND "
                            "attnum > 0 AND NOT attisdropped")
        columns = {name: (kind, typmod) for name, kind, typmod in self.cursor.fetchall()}
        unconstrained = []
        for field in decimals:
            kind, typmod = columns.get(field.name, ("", -1))
            declared = _numeric_typmod(typmod) if kind == "numeric" else None
            if declared is not None:
                self.fits[field.name] = self._rescaler(*declared)
            elif kind == "numeric":
                unconstrained.append(field)
            elif kind in ("double precision", "real"):
                self.fits[field.name] = _as_float
        if unconstrained:
            self._through_temporary(unconstrained)

    def _rescaler(self, precision: int, scale: int):
        """The decimals of a column at ``scale`` places, or an error naming the column
        where a value has more places than the table's numeric(p, s) keeps."""
        def rescale(values: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
            kind = values.type
            digits = min(max(kind.precision - kind.scale + scale, 1), _MAX_DIGITS)
            try:
                return values.cast(_decimal(digits, scale))  # a safe cast: exact or refused
            except pa.ArrowInvalid:
                raise OutputError(f"cannot write {sink_name(self.url, self.table)}: its column "
                                  f"`{name}` is numeric({precision}, {scale}), which would round "
                                  f"the rows' values (up to {kind.scale} places); round them in "
                                  f"--query (round({name}, {scale})) or widen the column") from None
        return rescale

    def _through_temporary(self, columns: list[pa.Field]) -> None:
        """A temporary table like the table, but for ``columns`` as numeric(p, s): the
        driver's COPY drops trailing zeros, an INSERT from numeric(p, s) keeps them.
        It goes with the transaction (or the connection, after a kill -9)."""
        self.via = self.via_name
        self.cursor.execute(f"CREATE TEMP TABLE {_quote(self.via)} (LIKE "
                            f"{_qualified(self.schema, self.name)}) ON COMMIT DROP")
        self.cursor.execute(_numeric_columns(_quote(self.via), columns))

    def _move(self, names: list[str]) -> None:
        """The rows of the temporary table into the table, by column name."""
        columns = ", ".join(_quote(name) for name in names)
        self.cursor.execute(f"INSERT INTO {_qualified(self.schema, self.name)} ({columns}) "
                            f"SELECT {columns} FROM {_quote(self.via)}")
        self.cursor.execute(f"TRUNCATE {_quote(self.via)}")

    def finish(self) -> None:
        """Make numeric again the columns read from one (replace: in the staging
        table), swap the staging table in (replace), then commit."""
        try:
            if self.relax:  # numeric(p, s) to numeric: no rewrite, the values as they are
                self.cursor.execute(
                    f"ALTER TABLE {_qualified(self.schema, self.staging or self.name)} "
                    + ", ".join(f"ALTER COLUMN {_quote(name)} TYPE numeric" for name in self.relax))
            if self.staging is not None:
                self.cursor.execute(f"DROP TABLE IF EXISTS {_qualified(self.schema, self.name)}")
                self.cursor.execute(f"ALTER TABLE {_qualified(self.schema, self.staging)} "
                                    f"RENAME TO {_quote(self.name)}")
            self.connection.commit()
        except _driver_error() as exc:
            raise OutputError(f"cannot write {sink_name(self.url, self.table)}: "
                              f"{_detail(exc, self.url)}; check the table (views or other "
                              "objects that depend on it block --if-exists replace)") from None


def _same(values: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    return values


def _as_float(values: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    """Decimals as float64 through their exact text, which Arrow's parser rounds
    correctly (its decimal-to-float cast can be an ulp off)."""
    return pc.cast(pc.cast(values, pa.string()), pa.float64())


def _unconstrained(field: pa.Field) -> bool:
    return (field.metadata or {}).get(_PG_TYPE) == _UNCONSTRAINED[_PG_TYPE]


def _numeric_columns(table: str, columns: list[pa.Field]) -> str:
    """ALTER TABLE giving each decimal column numeric(p, s) (the table still empty)."""
    return f"ALTER TABLE {table} " + ", ".join(
        f"ALTER COLUMN {_quote(field.name)} TYPE numeric({field.type.precision}, "
        f"{field.type.scale})" for field in columns)


@contextlib.contextmanager
def table_sink(url: str, table: str, if_exists: str = "fail") -> Iterator[_TableSink]:
    """A writer with ``.write(pa.Table)`` into ``table`` of the database at ``url``,
    all in one transaction, committed when the block ends without an error. Refuses
    at once (before any work) a table that exists with ``fail``, and a table another
    run is writing."""
    connection = connect(url, OutputError, create=True)
    lock = (exclusive_lock(sqlite_path(url).with_name(f"{sqlite_path(url).name}.{table}"))
            if is_sqlite(url) else contextlib.nullcontext())
    try:
        with lock:
            sink = _TableSink(connection, url, table, if_exists)
            try:
                sink.lock()
                if if_exists == "fail" and sink.exists():
                    raise OutputError(f"{sink_name(url, table)} already exists; pass --if-exists "
                                      "replace to replace it or --if-exists append to add the "
                                      "rows, or choose another --output-table")
                if sink.staging is not None:
                    sink.cursor.execute("DROP TABLE IF EXISTS "
                                        f"{_qualified(sink.schema, sink.staging)}")
            except _driver_error() as exc:
                raise OutputError(f"cannot write {sink_name(url, table)}: {_detail(exc, url)}; "
                                  "check the table and your rights on it") from None
            yield sink
            sink.finish()
    finally:
        with contextlib.suppress(Exception):
            connection.rollback()  # nothing, after a commit; everything, after a failure
        with contextlib.suppress(Exception):
            connection.close()
