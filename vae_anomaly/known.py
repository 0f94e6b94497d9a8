"""Confirmed anomalies (``fit --known-anomalies FILE``, ``--label-column COL``):
which rows they are, checked, and which rows of the training data they match.

A fit trains against them (outlier exposure, training.py) and never as normal:
training rows with the same encoded values as a confirmed row leave the normal
rows, held-out ones included. A confirmed row whose values are shared by more
than MAX_CONTAMINATION of the training rows is left out with a note: in these
columns it is a kind of normal, and no model can flag it without them.
``near_confirmed`` finds the held-out rows with a confirmed row among their
nearest neighbours: the threshold leaves such rows out while they crowd its tail
(calibration.unconfirmed_siblings). docs/method.md, "Confirmed anomalies", says
what they change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .data import is_text
from .errors import InputError
from .logical_types import missing_mask
from .preprocessing import EncodedBatch, Preprocessor
from .rejection import MAX_CONTAMINATION
from .scoring import row_keys

ANOMALY_WORDS = ("1", "true", "yes")
UNLABELLED_WORDS = ("0", "false", "no", "")


@dataclass
class KnownRows:
    """The confirmed anomalies of a fit, and which training rows they are."""

    table: pa.Table  # the confirmed rows, as given
    source: str  # their name in messages: a file name, or "the known anomalies"
    in_data: np.ndarray  # bool over the training rows: the rows that are confirmed ones
    notes: list[str] = field(default_factory=list)  # for the user: rows left out, and why

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
    as KnownRows (None for None; no rows when none is left), checked: it has every
    feature column and is at most half of the training rows."""
    if known is None:
        return None
    if isinstance(known, KnownRows):
        return _checked(known, frame, source)
    if isinstance(known, pa.Table):
        return _from_table(frame, known, "the known anomalies", categorical, exclude, source)
    mask = np.asarray(known)
    if mask.dtype != bool or mask.shape != (frame.num_rows,):
        raise InputError(f"known anomalies must be a table of confirmed rows or a boolean "
                         f"mask over the {frame.num_rows} training rows (got an array of "
                         f"shape {mask.shape} and type {mask.dtype})")
    return known_from_mask(frame, mask, "the known anomalies", source,
                           categorical=categorical, exclude=exclude)


def known_from_mask(frame: pa.Table, mask: np.ndarray, known_source: str, source: str, *,
                    categorical: list[str], exclude: list[str]) -> KnownRows:
    """The rows of ``frame`` that ``mask`` marks (``--label-column``), named
    ``known_source`` in messages."""
    if not mask.any():
        return KnownRows(frame.filter(pa.array(mask)), known_source, mask)
    keys = _training_keys(frame, source, categorical, exclude)[0]
    common, note = _common_patterns(keys, keys[mask], known_source, source)
    mask = mask & ~np.isin(keys, keys[mask][common])
    rows = KnownRows(frame.filter(pa.array(mask)), known_source, mask, note)
    return _checked(rows, frame, source)


def known_from_file(frame: pa.Table, known: pa.Table, known_source: str, source: str, *,
                    categorical: list[str], exclude: list[str]) -> KnownRows:
    """The rows of a ``--known-anomalies`` file (named ``known_source`` in messages)."""
    return _from_table(frame, known, known_source, categorical, exclude, source)


def _from_table(frame: pa.Table, known: pa.Table, known_source: str, categorical: list[str],
                exclude: list[str], source: str) -> KnownRows:
    if known.num_rows == 0:
        return KnownRows(known, known_source, np.zeros(frame.num_rows, dtype=bool))
    keys, preprocessor = _training_keys(frame, source, categorical, exclude)
    absent = [name for name in preprocessor.feature_names if name not in known.column_names]
    if absent:
        raise InputError(f"column `{absent[0]}` is missing from {known_source} (the model is "
                         f"trained with it); the known anomalies need every feature column of "
                         f"{source}")
    known_keys = row_keys(preprocessor.transform(known, source=known_source))
    common, note = _common_patterns(keys, known_keys, known_source, source)
    if common.any():
        known, known_keys = known.filter(pa.array(~common)), known_keys[~common]
    rows = KnownRows(known, known_source, np.isin(keys, known_keys), note)
    return _checked(rows, frame, source)


def _training_keys(frame: pa.Table, source: str, categorical: list[str],
                   exclude: list[str]) -> tuple[np.ndarray, Preprocessor]:
    """Each training row's key (its encoded values' hash), and the preprocessor that
    encoded them: the training data's columns, kinds and encoding, learned from all its
    rows, only to find which rows confirmed ones match."""
    preprocessor = Preprocessor().fit(frame, categorical=categorical, exclude=exclude,
                                      source=source)
    return row_keys(preprocessor.transform(frame, source=source)), preprocessor


def _common_patterns(keys: np.ndarray, known_keys: np.ndarray, known_source: str,
                     source: str) -> tuple[np.ndarray, list[str]]:
    """True for the confirmed rows whose values more than MAX_CONTAMINATION of the
    training rows share, and the note that says they are left out. Such a row is a
    kind of normal in these columns (rejection.py's bound): training against it would
    push up the score of all those rows, and leaving them out took their pattern out
    of the threshold's rows (mammography: one confirmed row had the values of 30% of
    the training file, and the test false-positive rate rose to 31%)."""
    values, counts = np.unique(keys, return_counts=True)
    at = np.clip(np.searchsorted(values, known_keys), 0, max(len(values) - 1, 0))
    matches = np.where(values[at] == known_keys, counts[at], 0)
    common = matches > MAX_CONTAMINATION * len(keys)
    if not common.any():
        return common, []
    most, count = int(matches.max()), int(common.sum())
    left = ("fitting without confirmed anomalies" if common.all()
            else f"{'it is' if count == 1 else 'they are'} left out, and those rows train "
            "as normal")
    return common, [f"{count} of the {len(known_keys)} confirmed rows ({known_source}) "
                    f"{'has' if count == 1 else 'have'} the values of {most:,} of the "
                    f"{len(keys):,} rows of {source} "
                    f"({most / len(keys):.0%}), too common to be anomalies in these columns; "
                    + left]


def _checked(rows: KnownRows, frame: pa.Table, source: str) -> KnownRows:
    if 2 * len(rows) > frame.num_rows:
        raise InputError(f"{rows.source} hold {len(rows)} rows, more than half of the "
                         f"{frame.num_rows} rows of {source}; pass only the rows confirmed as "
                         "anomalous, and train on a file of mostly normal records")
    return rows


# A held-out row is near the confirmed anomalies when one of them is among its
# NEIGHBOURS nearest rows of the fit's training rows and the confirmed rows together,
# in the network's input space (scaled numbers, missing indicators, one-hot levels).
# Offline on the benchmark's dirty files (docs/benchmarks.md, "Tried and dropped"), 20
# neighbours found too few of the unconfirmed planted rows (cardio: 0.12% FPR); 50, or a
# looser stop, let normal rows go too (campaign: 3.2% FPR with 25% of them confirmed).
NEIGHBOURS = 30
# The training rows a fit compares against, at most (a seeded draw beyond it): the
# search is exact, and its cost grows with their count.
MAX_REFERENCE_ROWS = 50_000
# Wider inputs (many levels of categories) are searched as sparse rows, by brute force.
MAX_DENSE_WIDTH = 256


def near_confirmed(heldout: EncodedBatch, training: EncodedBatch, confirmed: EncodedBatch,
                   category_sizes: list[int], seed: int) -> np.ndarray:
    """True for each held-out row with a confirmed row among its NEIGHBOURS nearest
    rows of ``training`` and ``confirmed`` together (encoded by the same preprocessor).
    Siblings of the confirmed rows that nobody confirmed score high once training has
    pushed their neighbourhood up; this is how the threshold tells them apart."""
    from sklearn.neighbors import NearestNeighbors  # only fits with confirmed rows need it

    if len(training) > MAX_REFERENCE_ROWS:
        draw = np.random.default_rng([seed, 3]).choice(len(training), MAX_REFERENCE_ROWS,
                                                       replace=False)
        training = training.rows(np.sort(draw))
    reference = _stacked([_points(training, category_sizes), _points(confirmed, category_sizes)])
    is_confirmed = np.r_[np.zeros(len(training), bool), np.ones(len(confirmed), bool)]
    count = min(NEIGHBOURS, len(is_confirmed))
    search = NearestNeighbors(n_neighbors=count).fit(reference)
    _, nearest = search.kneighbors(_points(heldout, category_sizes))
    return is_confirmed[nearest].any(axis=1)


def _points(encoded: EncodedBatch, category_sizes: list[int]):
    """The rows as the network's encoder sees them: a dense array, or a sparse matrix
    when one-hot levels make them wider than MAX_DENSE_WIDTH."""
    dense = np.hstack([encoded.numeric, encoded.indicators]).astype(np.float32)
    width = sum(category_sizes)
    if not width:
        return dense
    offsets = np.cumsum([0] + category_sizes[:-1])
    columns = (encoded.categories + offsets).ravel()
    rows = np.repeat(np.arange(len(encoded)), len(category_sizes))
    if dense.shape[1] + width <= MAX_DENSE_WIDTH:
        one_hot = np.zeros((len(encoded), width), dtype=np.float32)
        one_hot[rows, columns] = 1.0
        return np.hstack([dense, one_hot])
    from scipy import sparse

    one_hot = sparse.csr_matrix((np.ones(len(columns), np.float32), (rows, columns)),
                                shape=(len(encoded), width))
    return sparse.hstack([sparse.csr_matrix(dense), one_hot], format="csr")


def _stacked(parts: list):
    if isinstance(parts[0], np.ndarray):
        return np.vstack(parts)
    from scipy import sparse

    return sparse.vstack(parts, format="csr")
