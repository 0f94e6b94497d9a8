"""Reading tables, converting columns, and writing files atomically.

CSV files are read with every cell as its raw text, so that columns the model
does not use (ids, labels, timestamps) are written back exactly as they came.
Typed conversion happens per column, against the schema, with errors that name
the column and the row.
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError, OutputError

# Cell texts read as missing; the same set pandas treats as NA by default.
MISSING_TOKENS = frozenset(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
     "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV file with every cell as text (object dtype, no NA parsing).

    Raises InputError with a one-line message for a missing file, a directory,
    an empty file, bytes that are not UTF-8, duplicate column names or a
    malformed CSV.
    """
    path = Path(path)
    _check_readable_file(path)
    header = _read_header(path)
    _check_header(header, path)
    try:
        frame = pd.read_csv(
            path, dtype=object, keep_default_na=False, na_filter=False,
            encoding="utf-8-sig", engine="c", skip_blank_lines=True,
        )
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path.name} is not UTF-8 text (bad byte at position {exc.start}); "
            "re-save it as UTF-8"
        ) from None
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[-1]
        raise InputError(f"{path.name} is not a well-formed CSV: {detail}; fix the file") from None
    return frame


def _check_readable_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"file not found: {path}; check the path")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a CSV file; pass a file path")
    if path.stat().st_size == 0:
        raise InputError(
            f"{path.name} is empty (0 bytes); expected a CSV file with a header row"
        )


def _read_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return next(csv.reader(handle), [])
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path.name} is not UTF-8 text (bad byte at position {exc.start}); "
            "re-save it as UTF-8"
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


def _check_header(header: list[str], path: Path) -> None:
    if not any(name.strip() for name in header):
        raise InputError(f"{path.name} has no header row; the first line must name the columns")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise InputError(
                f"column `{name}` appears twice in the header of {path.name}; "
                "give every column a unique name"
            )
        seen.add(name)


def missing_mask(values: pd.Series) -> np.ndarray:
    """True where a cell is missing: NaN/None, or a missing-value token such as ''."""
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        text = values.astype(object)
        isnull = pd.isna(text).to_numpy()
        stripped = text.where(isnull, text.astype(str).str.strip())
        return isnull | stripped.isin(MISSING_TOKENS).to_numpy()
    return pd.isna(values).to_numpy()


def parse_numeric(values: pd.Series, column: str, source: str) -> np.ndarray:
    """Convert a column to float64 with NaN for missing cells.

    Raises InputError naming the first row whose text is not a number, or whose
    value is infinite.
    """
    if pd.api.types.is_bool_dtype(values.dtype):
        raise InputError(f"column `{column}` in {source} holds true/false values, not numbers; "
                         f"retrain with --categorical {column}")
    if pd.api.types.is_numeric_dtype(values.dtype):
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        missing = missing_mask(values)
        text = values.astype(object).where(~missing, None)
        numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.isnan(numbers) & ~missing
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"column `{column}` in {source} has non-numeric value {str(values.iloc[row])!r} "
                f"at row {row + 1}; fix the value or mark it missing"
            )
    infinite = np.isinf(numbers)
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise InputError(
            f"column `{column}` in {source} has an infinite value at row {row + 1}; "
            "replace it with a finite number or leave the cell empty"
        )
    return numbers


def looks_numeric(values: pd.Series) -> bool:
    """Whether every non-missing cell parses as a number (pandas' own inference rule)."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return False
    if pd.api.types.is_numeric_dtype(values.dtype):
        return True
    missing = missing_mask(values)
    if missing.all():
        return False
    text = values.astype(object)[~missing]
    parsed = pd.to_numeric(text, errors="coerce")
    return not bool(pd.isna(parsed).any())


def category_text(values: pd.Series) -> np.ndarray:
    """Cells as the text a CSV would hold (True -> 'True', 3 -> '3'), None where missing."""
    missing = missing_mask(values)
    text = values.astype(object).map(_as_text)
    out = text.to_numpy(dtype=object, copy=True)  # pandas may hand back a read-only view
    out[missing] = None
    return out


def _as_text(value: object) -> object:
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def check_writable_destination(path: Path) -> Path:
    """Fail early, before any work, if ``path`` cannot be written; return its folder."""
    directory = path.parent
    if path.is_dir():
        raise OutputError(f"{path} is a directory; pass a file path to write")
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
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=directory)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would.
    os.chmod(tmp_name, 0o666 & ~_current_umask())
    try:
        with os.fdopen(handle, mode, **({"newline": ""} if "b" not in mode else {})) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
