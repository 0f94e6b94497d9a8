"""One meaning per column, whatever the source: every cell mapped onto its column's
logical type.

Files give text, Parquet and Arrow tables give typed columns, PostgreSQL gives
booleans and decimals, SQLite 0/1 integers for booleans, pandas and numpy their own
dtypes. The same records must mean the same thing from each, so a feature
column's logical type is judged at fit from its values alone, never from how a
source stored them, and the model file records it:

- ``boolean``: true/false, t/f, yes/no in any case, and any column of numbers
  holding only 0 and 1 (SQLite stores booleans so; pandas writes 1.0 and 0.0);
- ``integer``: whole numbers (3 and 3.0 are one value);
- ``decimal``: numbers with at most MAX_DECIMAL_PLACES places (amounts, readings);
- ``floating``: other numbers;
- ``datetime``: typed dates and timestamps, and text such as 2024-06-01,
  2024-06-01 13:45:07.25 or 2024-06-01 01:00:00+00 (offsets +00, +05:30, Z);
- ``text``: anything else.

Integers, decimals and floats are numeric columns: float64 for the model
(``to_numbers``), text through an exact parser, decimals through their exact text
(Arrow's decimal-to-float cast can be an ulp off, and a value on a knot of the
quantile map would then get another slope). Booleans are categories, True and
False: a softmax over two levels is their likelihood, where a Gaussian on 0/1
lets the density run away (robust training then took 7 of sample_data's 3,000
clean rows for outliers; docs/benchmarks.md has the dev sets' figures), and the
network is sized counting each as one input, as it was as a number (Layout).
Categories are canonical text
(``to_levels``): True/False, whole numbers without a fraction, other numbers in
their shortest round-trip form, timestamps in one ISO form (in UTC where they had
an offset).
A cell that cannot be mapped onto its column's type is an InputError naming the
column, the value, the row and the fix; it never becomes a silent unseen category.

Columns of model files written before logical types (no ``logical`` key) keep the
conversion they were trained with (``parse_numbers``, ``cell_text``).
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .data import is_text, plain_array as _plain_array
from .errors import InputError

BOOLEAN, INTEGER, DECIMAL, FLOATING, DATETIME, TEXT = (
    "boolean", "integer", "decimal", "floating", "datetime", "text")
LOGICAL_TYPES = (BOOLEAN, INTEGER, DECIMAL, FLOATING, DATETIME, TEXT)
# The types that are numeric columns (unless --categorical); booleans are categories.
NUMBER_TYPES = (INTEGER, DECIMAL, FLOATING)
TRUE_WORDS = ("true", "t", "yes")
FALSE_WORDS = ("false", "f", "no")
# Places a decimal column's values may have; beyond them a number is "floating".
MAX_DECIMAL_PLACES = 6
# Whole numbers beyond 2**53 are not all exact in float64: they print as floats.
_EXACT_WHOLE = 2.0 ** 53

# Cell texts read as missing; the same set pandas treats as NA by default. Kept as a
# tuple: an Arrow array built at import would import pandas (pyarrow's pa.array
# does), which `info` must not wait for.
MISSING_TOKENS = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
                  "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a",
                  "nan", "null")
# A date, or a date and time, as CSV and database exports write them: 2024-06-01,
# 2024-06-01 13:45, 2024-06-01T13:45:07.123Z, 2024-06-01 13:45:07+02:00,
# 2024-06-01 01:00:00+00 (psql), 2024/06/01.
DATE_PATTERN = (r"^\s*\d{4}[-/]\d{1,2}[-/]\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?"
                r"\s*(Z|[+-]\d{2}(:?\d{2})?)?)?\s*$")
# A time of day followed by its offset (not the "-01" that ends a plain date).
_OFFSET_PATTERN = r"\d:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|[+-]\d{2}(:?\d{2})?)\s*$"


def plain_array(values) -> pa.Array:
    """One Arrow array of a column's cells: chunks combined, and a dictionary column
    (a pandas Categorical, a Parquet dictionary page) decoded to its values, so that
    its cells map as a plain column's do."""
    values = _plain_array(values)
    return values.dictionary_decode() if pa.types.is_dictionary(values.type) else values


@functools.cache
def _value_set(words: tuple[str, ...]) -> pa.Array:
    return pa.array(words, pa.string())


# ----- missing cells --------------------------------------------------------------------
def missing_mask(values) -> np.ndarray:
    """True where a cell is missing: null, NaN, or a missing-value token such as ''."""
    values = plain_array(values)
    missing = pc.is_null(values, nan_is_null=pa.types.is_floating(values.type))
    if is_text(values.type):
        token = pc.is_in(pc.utf8_trim_whitespace(values), value_set=_value_set(MISSING_TOKENS))
        missing = pc.or_(missing, pc.fill_null(token, True))
    return missing.to_numpy(zero_copy_only=False)


# ----- judging a column's type at fit ----------------------------------------------------
def logical_type(values, missing: np.ndarray | None = None) -> str:
    """The logical type of a column, from its present cells (see the module's list)."""
    values = plain_array(values)
    missing = missing_mask(values) if missing is None else missing
    kind = values.type
    if pa.types.is_boolean(kind):
        return BOOLEAN
    if pa.types.is_date(kind) or pa.types.is_timestamp(kind):
        return DATETIME
    if _is_number_type(kind):
        return _number_type(_typed_numbers(values)[~missing])
    if not is_text(kind) or missing.all():
        return TEXT
    words = _boolean_words(values)
    parsed = _try_text_numbers(values, missing | (words != 0))
    if parsed is None:
        return DATETIME if _all_dates(values, missing) else TEXT
    present = parsed[~missing & (words == 0)]
    if (words != 0).any():
        return BOOLEAN if np.isin(present, (0.0, 1.0)).all() else TEXT
    return _number_type(present)


def _number_type(present: np.ndarray) -> str:
    """boolean, integer, decimal or floating for a column's present numbers."""
    finite = present[np.isfinite(present)]
    if np.isin(present, (0.0, 1.0)).all():
        return BOOLEAN
    if (finite == np.round(finite)).all():
        return INTEGER
    return DECIMAL if decimal_places(finite) is not None else FLOATING


def decimal_places(numbers: np.ndarray) -> int | None:
    """The fewest decimal places (at most MAX_DECIMAL_PLACES) that hold every number
    exactly as its float64 value, or None."""
    for places in range(1, MAX_DECIMAL_PLACES + 1):
        if (np.round(numbers, places) == numbers).all():
            return places
    return None


def _all_dates(values: pa.Array, missing: np.ndarray) -> bool:
    dated = pc.fill_null(pc.match_substring_regex(values, DATE_PATTERN, ignore_case=True), False)
    return bool((dated.to_numpy(zero_copy_only=False) | missing).all())


def _is_number_type(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


# ----- numbers -------------------------------------------------------------------------
def to_numbers(values, logical: str, column: str, source: str, first_row: int = 0) -> np.ndarray:
    """A number column's cells as float64, NaN where missing: booleans (typed, or the
    words true/false, t/f, yes/no) as 1/0 in a boolean column, numbers as themselves.

    Raises InputError naming the first cell that is not a number (nor, in a boolean
    column, a boolean), or whose value is infinite.
    """
    values = plain_array(values)
    if logical != BOOLEAN or not (pa.types.is_boolean(values.type) or is_text(values.type)):
        return parse_numbers(values, column, source, first_row)
    missing = missing_mask(values)
    if pa.types.is_boolean(values.type):
        flags = pc.fill_null(values, False).to_numpy(zero_copy_only=False)
        return np.where(missing, np.nan, flags.astype(np.float64))
    return _finite(_boolean_text(values, missing, column, source, first_row), column, source,
                   first_row)


def _boolean_text(values: pa.Array, missing: np.ndarray, column: str, source: str,
                  first_row: int) -> np.ndarray:
    words = _boolean_words(values)
    parsed = _try_text_numbers(values, missing | (words != 0))
    if parsed is None:
        row = _first_unparsed(values, missing | (words != 0))
        raise InputError(f"column `{column}` in {source} has {values[row].as_py()!r} at row "
                         f"{first_row + row + 1}, which is not a boolean (the model was "
                         "trained with true/false values); use true/false, t/f, yes/no or "
                         "1/0, or leave the cell empty")
    parsed = np.where(words == 1, 1.0, np.where(words == -1, 0.0, parsed))
    return np.where(missing, np.nan, parsed)


def _boolean_words(values: pa.Array) -> np.ndarray:
    """+1 where a text cell is a true word, -1 where a false word, 0 elsewhere."""
    lower = pc.utf8_lower(pc.utf8_trim_whitespace(values))
    true = pc.fill_null(pc.is_in(lower, value_set=_value_set(TRUE_WORDS)), False)
    false = pc.fill_null(pc.is_in(lower, value_set=_value_set(FALSE_WORDS)), False)
    return (true.to_numpy(zero_copy_only=False).astype(np.int8)
            - false.to_numpy(zero_copy_only=False).astype(np.int8))


def parse_numbers(values, column: str, source: str, first_row: int = 0) -> np.ndarray:
    """Convert a column to float64 with NaN for missing cells (typed booleans refused).

    Raises InputError naming the first row whose text is not a number, or whose
    value is infinite.
    """
    values = plain_array(values)
    if pa.types.is_boolean(values.type):
        raise InputError(f"column `{column}` in {source} holds true/false values, not numbers; "
                         f"retrain with --categorical {column}")
    missing = missing_mask(values)
    if pa.types.is_null(values.type):  # Parquet's type for a column with no values at all
        parsed = np.full(len(values), np.nan)
    elif _is_number_type(values.type):
        parsed = np.where(missing, np.nan, _typed_numbers(values))
    elif is_text(values.type):
        parsed = _try_text_numbers(values, missing)
        if parsed is None:
            row = _first_unparsed(values, missing)
            raise InputError(f"column `{column}` in {source} has non-numeric value "
                             f"{values[row].as_py()!r} at row {first_row + row + 1}; "
                             "fix the value or mark it missing")
    else:
        raise InputError(f"column `{column}` in {source} has type {values.type}, not numbers; "
                         f"retrain with --categorical {column} or exclude it")
    return _finite(parsed, column, source, first_row)


def _finite(parsed: np.ndarray, column: str, source: str, first_row: int) -> np.ndarray:
    infinite = np.isinf(parsed)
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise InputError(f"column `{column}` in {source} has an infinite value at row "
                         f"{first_row + row + 1}; replace it with a finite number or leave "
                         "the cell empty")
    return parsed


def _typed_numbers(values: pa.Array) -> np.ndarray:
    """Typed numbers as float64; decimals through their exact text, which Arrow's
    parser rounds correctly (its decimal-to-float cast can be an ulp off), and
    single-precision floats through their shortest text, the number a CSV export
    of them holds (0.1, where a plain widening gives 0.10000000149)."""
    if pa.types.is_decimal(values.type) or pa.types.is_float32(values.type) \
            or pa.types.is_float16(values.type):
        values = pc.cast(values, pa.string())
    return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)


def _try_text_numbers(values: pa.Array, skip: np.ndarray) -> np.ndarray | None:
    """Text cells as float64 (NaN where ``skip``), or None if one of the others is
    not a number."""
    text = pc.if_else(pa.array(skip), pa.scalar(None, values.type),
                      pc.utf8_trim_whitespace(values))
    try:
        return pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        return None


def _first_unparsed(values: pa.Array, skip: np.ndarray) -> int:
    """The position of the first cell outside ``skip`` that is not a number."""
    import pandas as pd  # its number parser, only to name the bad cell

    trimmed = pc.utf8_trim_whitespace(values).to_pylist()
    parsed = pd.to_numeric(pd.Series(trimmed, dtype=object), errors="coerce")
    bad = np.flatnonzero(parsed.isna().to_numpy() & ~skip)
    return int(bad[0]) if len(bad) else 0


def looks_numeric(values) -> bool:
    """Whether every non-missing cell parses as a number (pandas' own inference rule)."""
    values = plain_array(values)
    if pa.types.is_boolean(values.type):
        return False
    if _is_number_type(values.type):
        return True
    if not is_text(values.type):
        return False
    missing = missing_mask(values)
    return not missing.all() and _try_text_numbers(values, missing) is not None


# ----- categories ------------------------------------------------------------------------
def to_levels(values, logical: str, column: str, source: str, first_row: int = 0) -> pa.Array:
    """A categorical column's cells as canonical text, null where missing: True/False
    for booleans (any spelling, or 1/0; another number is a level of its own, one
    training never saw), numbers in one form (3 for 3.0 and "3.0"), timestamps in
    one ISO form; text columns keep their text."""
    if logical == TEXT:
        return cell_text(values)
    if logical == DATETIME:
        return _datetime_text(plain_array(values), column, source, first_row)
    if logical == INTEGER:
        return _integer_text(plain_array(values), column, source, first_row)
    parsed = to_numbers(values, logical if logical == BOOLEAN else FLOATING, column, source,
                     first_row)
    text = number_text(parsed)
    if logical == BOOLEAN:
        text = pc.if_else(pc.equal(text, "1"), "True", pc.if_else(pc.equal(text, "0"), "False",
                                                                  text))
    return text


# Whole numbers as text: 7, +7, 007, 7.0, -0; their canonical text is the digits alone.
_WHOLE_TEXT = r"^[+-]?\d+(\.0*)?$"


def _integer_text(values: pa.Array, column: str, source: str, first_row: int) -> pa.Array:
    """An integer column's levels: typed integers and whole-number text exactly, digit
    for digit (ids beyond 2**53 stay apart, which float64 would merge); any other
    number in its shortest form, as a level training never saw."""
    if pa.types.is_integer(values.type):
        return pc.cast(values, pa.string())
    parsed = number_text(to_numbers(values, FLOATING, column, source, first_row))
    if not is_text(values.type):
        return parsed
    trimmed = pc.utf8_trim_whitespace(pc.cast(values, pa.string()))
    digits = pc.replace_substring_regex(trimmed, r"\.0*$", "")
    digits = pc.replace_substring_regex(digits, r"^\+", "")
    digits = pc.replace_substring_regex(digits, r"^(-?)0+(\d)", r"\1\2")
    digits = pc.replace_substring_regex(digits, r"^-0$", "0")
    whole = pc.fill_null(pc.match_substring_regex(trimmed, _WHOLE_TEXT), False)
    return pc.if_else(pc.and_(whole, pc.is_valid(parsed)), digits, parsed)


def number_text(parsed: np.ndarray) -> pa.Array:
    """Numbers as canonical text: whole ones without a fraction, others in their
    shortest round-trip form; null for NaN."""
    array = pa.array(parsed, pa.float64(), from_pandas=True)
    whole = pc.and_(pc.equal(array, pc.round(array)),
                    pc.less(pc.abs(array), _EXACT_WHOLE))
    as_int = pc.cast(pc.cast(array, pa.int64(), safe=False), pa.string())
    return pc.if_else(pc.fill_null(whole, False), as_int, pc.cast(array, pa.string()))


def cell_text(values) -> pa.Array:
    """Cells as the text a CSV would hold (True -> 'True', 3 -> '3'); null where missing."""
    values = plain_array(values)
    missing = missing_mask(values)
    if pa.types.is_boolean(values.type):
        text = pc.if_else(values, "True", "False")
    elif pa.types.is_floating(values.type):
        whole = pc.equal(values, pc.round(values))
        as_int = pc.cast(pc.cast(values, pa.int64(), safe=False), pa.string())
        text = pc.if_else(pc.fill_null(whole, False), as_int, pc.cast(values, pa.string()))
    else:
        text = pc.cast(values, pa.string())
    return pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), text)


def _datetime_text(values: pa.Array, column: str, source: str, first_row: int) -> pa.Array:
    """Dates and times as one ISO form: YYYY-MM-DD HH:MM:SS[.ffffff], then +00:00
    for a value that had an offset or a time zone (turned to UTC)."""
    import pandas as pd  # only for date/time categories, at fit or score

    missing = missing_mask(values)
    if is_text(values.type):
        trimmed = pc.replace_substring(pc.utf8_trim_whitespace(values), "/", "-")
        aware = pc.fill_null(pc.match_substring_regex(trimmed, _OFFSET_PATTERN), False)
        aware = aware.to_numpy(zero_copy_only=False)
        series = pd.Series(trimmed.to_pylist(), dtype=object).where(~missing, None)
        parsed = pd.to_datetime(series, format="ISO8601", utc=True, errors="coerce")
        bad = np.flatnonzero(parsed.isna().to_numpy() & ~missing)
        if len(bad):
            row = int(bad[0])
            raise InputError(f"column `{column}` in {source} has {values[row].as_py()!r} at "
                             f"row {first_row + row + 1}, which is not a date or time (the "
                             "model was trained with dates); write it as YYYY-MM-DD "
                             "[HH:MM[:SS]] or leave the cell empty")
    elif pa.types.is_date(values.type) or pa.types.is_timestamp(values.type):
        zone = getattr(values.type, "tz", None)
        aware = np.full(len(values), zone is not None)
        parsed = pd.to_datetime(pd.Series(values.to_pandas()), utc=True)
    else:
        return cell_text(values)
    text = parsed.dt.strftime("%Y-%m-%d %H:%M:%S.%f").str.removesuffix(".000000")
    text = np.where(aware, text + "+00:00", text).astype(object)
    return pa.array(np.where(missing, None, text), pa.string())


# ----- content keys ----------------------------------------------------------------------
_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)


def content_keys(columns: list[np.ndarray | pa.Array], n: int) -> np.ndarray:
    """One uint64 per row, a hash of its canonical cells (float64 numbers, NaN for
    missing; canonical text, null for missing): rows with the same values get the
    same key from every source, whatever the order of the rows."""
    import pandas as pd  # fit time only

    keys = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    for column in columns:
        if isinstance(column, np.ndarray):
            # One NaN and one zero: a NaN's payload and the sign of 0 differ by source.
            canonical = np.where(np.isnan(column), np.nan, column + 0.0)
            hashed = pd.util.hash_array(canonical.view(np.uint64))
        else:
            cells = np.asarray(column.to_pylist(), dtype=object)
            missing = pc.is_null(column).to_numpy(zero_copy_only=False)
            hashed = pd.util.hash_array(np.where(missing, "", cells).astype(object))
            hashed ^= missing.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        keys = (keys ^ hashed) * _FNV_PRIME  # uint64 products wrap
    return keys
