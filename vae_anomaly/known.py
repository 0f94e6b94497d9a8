"""Confirmed anomalies (``fit --known-anomalies FILE``, ``--label-column COL``):
which rows they are, checked, and which rows of the training data they match.

A fit trains against them (outlier exposure, training.py) and never as normal:
training rows with the same encoded values as a confirmed row leave the normal
rows, held-out ones included. docs/method.md, "Confirmed anomalies", says what
they change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .data import is_text, missing_mask
from .errors import InputError
from .preprocessing import Preprocessor
from .scoring import row_keys

ANOMALY_WORDS = ("1", "true", "yes")
UNLABELLED_WORDS = ("0", "false", "no", "")


@dataclass
class KnownRows:
    """The confirmed anomalies of a fit, and which training rows they are."""

    table: pa.Table  # the confirmed rows, as given
    source: str  # their name in messages: a file name, or "the known anomalies"
    in_data: np.ndarray  # bool over the training rows: the rows that are confirmed ones

    def __len__(self) -> int:
        return self.table.num_rows


def parse_label_column(values: pa.ChunkedArray, column: str, source: str) -> np.ndarray:
    """``--label-column``: True where a row is a confirmed anomaly (1/true/yes), False
    where it is unlabelled (0/false/no or empty); any other value is an InputError
    naming it and its 1-based data row."""
    if pa.types.is_boolean(values.type):
        return pc.fill_null(values, False).to_numpy(zero_copy_only=False).astype(bool)
    missing = missing_mask(values)
    if is_text(values.type):
        words = pc.utf8_lower(pc.utf8_trim_whitespace(values)).to_pylist()
    else:
        words = [None if value is None else _number_text(value) for value in values.to_pylist()]
    labels = np.zeros(len(words), dtype=bool)
    for row, word in enumerate(words):
        if missing[row] or word in UNLABELLED_WORDS:
            continue
        if word not in ANOMALY_WORDS:
            raise InputError(
                f"label column `{column}` in {source} has {values[row].as_py()!r} at row "
                f"{row + 1}; use 1, true or yes for a confirmed anomaly and 0, false, no or "
                "an empty cell for the rest")
        labels[row] = True
    return labels


def _number_text(value) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def resolve_known(frame: pa.Table, known, source: str, *, categorical: list[str],
                  exclude: list[str]) -> KnownRows | None:
    """``known`` (a table of confirmed rows, or a boolean mask over ``frame``'s rows)
    as KnownRows, None when it holds no rows. Checks that it has every feature
    column and is at most half of the training rows."""
    if known is None:
        return None
    if isinstance(known, KnownRows):
        return _checked(known, frame, source)
    if isinstance(known, pa.Table):
        return _from_table(frame, known, "the known anomalies", categorical, exclude)
    mask = np.asarray(known)
    if mask.dtype != bool or mask.shape != (frame.num_rows,):
        raise InputError(f"known anomalies must be a table of confirmed rows or a boolean "
                         f"mask over the {frame.num_rows} training rows (got an array of "
                         f"shape {mask.shape} and type {mask.dtype})")
    table = frame.filter(pa.array(mask))
    return _checked(KnownRows(table, "the known anomalies", mask), frame, source)


def known_from_file(frame: pa.Table, known: pa.Table, known_source: str, source: str, *,
                    categorical: list[str], exclude: list[str]) -> KnownRows | None:
    """The rows of a ``--known-anomalies`` file (named ``known_source`` in messages)."""
    return _from_table(frame, known, known_source, categorical, exclude, source)


def _from_table(frame: pa.Table, known: pa.Table, known_source: str, categorical: list[str],
                exclude: list[str], source: str = "the training data") -> KnownRows | None:
    if known.num_rows == 0:
        return None
    # The training data's columns, kinds and encoding, learned from all its rows: only
    # to find which of them the confirmed rows are.
    preprocessor = Preprocessor().fit(frame, categorical=categorical, exclude=exclude,
                                      source=source)
    absent = [name for name in preprocessor.feature_names if name not in known.column_names]
    if absent:
        raise InputError(f"column `{absent[0]}` is missing from {known_source} (the model is "
                         f"trained with it); the known anomalies need every feature column of "
                         f"{source}")
    keys = row_keys(preprocessor.transform(frame, source=source))
    known_keys = row_keys(preprocessor.transform(known, source=known_source))
    rows = KnownRows(known, known_source, np.isin(keys, known_keys))
    return _checked(rows, frame, source)


def _checked(rows: KnownRows, frame: pa.Table, source: str) -> KnownRows | None:
    if len(rows) == 0:
        return None
    if 2 * len(rows) > frame.num_rows:
        raise InputError(f"{rows.source} hold {len(rows)} rows, more than half of the "
                         f"{frame.num_rows} rows of {source}; pass only the rows confirmed as "
                         "anomalous, and train on a file of mostly normal records")
    return rows
