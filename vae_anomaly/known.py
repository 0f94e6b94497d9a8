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

Dismissed rows (``fit --known-normals FILE``, ``--verdicts FILE``, the word
``normal`` in ``--label-column``) are confirmed normals: KnownRows too, resolved by
``resolve_normals``. They train as normal, and the fit pulls their scores below the
threshold's quantile (training.py); they are never left out as too common (a
dismissal says nothing against its look-alikes), and those that match no training row
join the training rows (``outside``). ``read_verdicts`` splits a filled review file
into both kinds. docs/method.md, "Dismissed rows", says what they change.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from contextvars import ContextVar
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

# --label-column's words: existing files keep their meaning (1/true/yes confirmed,
# 0/false/no/empty unlabelled), and a review's two verdicts are words too.
ANOMALY_WORDS = ("1", "true", "yes", "anomaly")
NORMAL_WORDS = ("normal",)
UNLABELLED_WORDS = ("0", "false", "no", "")
# A review file (vae-anomaly review): the rows, and this column for a person to fill.
VERDICT_COLUMN = "verdict"
VERDICT_ANOMALY, VERDICT_NORMAL = "anomaly", "normal"


@dataclass
class KnownRows:
    """The confirmed anomalies (or confirmed normals) of a fit, and which training rows
    they are."""

    table: pa.Table  # the confirmed rows, as given
    source: str  # their name in messages: a file name, or "the known anomalies"
    in_data: np.ndarray  # bool over the training rows: the rows that are confirmed ones
    notes: list[str] = field(default_factory=list)  # for the user: rows left out, and why
    # Each row's key (scoring.row_keys of its values, encoded as the training data's
    # are), to find the same values among other verdicts; None: not computed.
    keys: np.ndarray | None = None
    # Each row's name in messages ("row 4 of review.csv"); None: "row i of source".
    names: list[str] | None = None
    # True for the rows whose values no training row has (confirmed normals from a
    # scored batch: they join the training rows); None: none.
    outside: np.ndarray | None = None
    # Rows that had a verdict in the files these came from (reviewed ones; 0: untold).
    reviewed: int = 0

    def __len__(self) -> int:
        return self.table.num_rows

    def row_name(self, row: int) -> str:
        return self.names[row] if self.names is not None else f"row {row + 1} of {self.source}"


def parse_label_column(values: pa.ChunkedArray, column: str,
                       source: str) -> tuple[np.ndarray, np.ndarray]:
    """``--label-column``: masks of the confirmed anomalies (1/true/yes/anomaly) and of
    the confirmed normals (normal); 0/false/no or empty is unlabelled; any other value
    is an InputError naming it and its 1-based data row."""
    if pa.types.is_boolean(values.type):
        anomalous = pc.fill_null(values, False).to_numpy(zero_copy_only=False).astype(bool)
        return anomalous, np.zeros(len(anomalous), dtype=bool)
    words = _words(values)
    anomalous, normal = np.zeros(len(words), dtype=bool), np.zeros(len(words), dtype=bool)
    for row, word in enumerate(words):
        if word is None or word in UNLABELLED_WORDS:
            continue
        if word not in ANOMALY_WORDS + NORMAL_WORDS:
            raise InputError(
                f"label column `{column}` in {source} has {values[row].as_py()!r} at row "
                f"{row + 1}; use 1, true, yes or anomaly for a confirmed anomaly, normal for "
                "a dismissed one, and 0, false, no or an empty cell for the rest")
        (anomalous if word in ANOMALY_WORDS else normal)[row] = True
    return anomalous, normal


def _words(values: pa.ChunkedArray) -> list[str | None]:
    """Each cell as a trimmed lower-case word; None for a missing cell."""
    missing = missing_mask(values)
    if is_text(values.type):
        words = pc.utf8_lower(pc.utf8_trim_whitespace(values)).to_pylist()
    else:
        words = [None if value is None else _number_text(value) for value in values.to_pylist()]
    return [None if missing[row] else word for row, word in enumerate(words)]


def read_verdicts(table: pa.Table, source: str) -> tuple[pa.Table, pa.Table, int]:
    """A filled review file split by its ``verdict`` column: (the rows marked anomaly,
    the rows marked normal, how many rows have a verdict). The tables keep every
    column as given (the features are picked out later); see verdict_masks."""
    anomalous, normal = verdict_masks(table, source)
    return (table.filter(pa.array(anomalous)), table.filter(pa.array(normal)),
            int(anomalous.sum() + normal.sum()))


def verdict_masks(table: pa.Table, source: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows of a review file marked anomaly, and those marked normal. Verdicts are
    trimmed and read in any case; empty cells are rows not reviewed yet; any other word
    is an InputError naming it and its 1-based data row."""
    if VERDICT_COLUMN not in table.column_names:
        raise InputError(f"{source} has no `{VERDICT_COLUMN}` column; a review file holds "
                         f"the rows and a `{VERDICT_COLUMN}` column of {VERDICT_ANOMALY}, "
                         f"{VERDICT_NORMAL} or empty cells (vae-anomaly review writes one)")
    values = table.column(VERDICT_COLUMN)
    words = ([None] * table.num_rows if pa.types.is_null(values.type) else _words(values))
    anomalous, normal = np.zeros(len(words), dtype=bool), np.zeros(len(words), dtype=bool)
    for row, word in enumerate(words):
        if word is None or word == "":
            continue
        if word not in (VERDICT_ANOMALY, VERDICT_NORMAL):
            raise InputError(f"verdict {values[row].as_py()!r} at row {row + 1} of {source} "
                             f"is not a verdict; write {VERDICT_ANOMALY} or {VERDICT_NORMAL}, "
                             "or leave it empty")
        (anomalous if word == VERDICT_ANOMALY else normal)[row] = True
    return anomalous, normal


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
    mask = _row_mask(known, frame, "known anomalies", "confirmed rows")
    return known_from_mask(frame, mask, "the known anomalies", source,
                           categorical=categorical, exclude=exclude)


def _row_mask(values, frame: pa.Table, what: str, rows: str) -> np.ndarray:
    """``values`` as a boolean mask over ``frame``'s rows, or an InputError naming the
    two forms ``what`` (known anomalies, known normals) may take."""
    mask = np.asarray(values)
    if mask.dtype != bool or mask.shape != (frame.num_rows,):
        raise InputError(f"{what} must be a table of {rows} or a boolean mask over the "
                         f"{frame.num_rows} training rows (got an array of shape "
                         f"{mask.shape} and type {mask.dtype})")
    return mask


def known_from_mask(frame: pa.Table, mask: np.ndarray, known_source: str, source: str, *,
                    categorical: list[str], exclude: list[str]) -> KnownRows:
    """The rows of ``frame`` that ``mask`` marks (``--label-column``), named
    ``known_source`` in messages."""
    if not mask.any():
        return KnownRows(frame.filter(pa.array(mask)), known_source, mask)
    keys = _training_keys(frame, source, categorical, exclude)[0]
    common, note = _common_patterns(keys, keys[mask], known_source, source)
    mask = mask & ~np.isin(keys, keys[mask][common])
    rows = KnownRows(frame.filter(pa.array(mask)), known_source, mask, note, keys=keys[mask],
                     names=_data_rows(mask, source))
    return _checked(rows, frame, source)


def known_from_file(frame: pa.Table, known: pa.Table, known_source: str, source: str, *,
                    categorical: list[str], exclude: list[str],
                    row_numbers: np.ndarray | None = None,
                    kind: str = "the known anomalies") -> KnownRows:
    """The rows of a ``--known-anomalies`` file (named ``known_source`` in messages;
    ``row_numbers``: their 1-based rows in it, where they are some of its rows, as a
    review file's marked ones; ``kind``: what the rows are, in messages)."""
    return _from_table(frame, known, known_source, categorical, exclude, source,
                       row_numbers, kind)


def _from_table(frame: pa.Table, known: pa.Table, known_source: str, categorical: list[str],
                exclude: list[str], source: str, row_numbers: np.ndarray | None = None,
                kind: str = "the known anomalies") -> KnownRows:
    if known.num_rows == 0:
        return KnownRows(known, known_source, np.zeros(frame.num_rows, dtype=bool))
    keys, known_keys = _keys_of(frame, known, known_source, kind, categorical, exclude, source)
    common, note = _common_patterns(keys, known_keys, known_source, source)
    numbers = _numbers(row_numbers, known.num_rows)[~common]
    if common.any():
        known, known_keys = known.filter(pa.array(~common)), known_keys[~common]
    rows = KnownRows(known, known_source, np.isin(keys, known_keys), note, keys=known_keys,
                     names=[f"row {row} of {known_source}" for row in numbers])
    return _checked(rows, frame, source)


def _numbers(row_numbers: np.ndarray | None, count: int) -> np.ndarray:
    return np.arange(1, count + 1) if row_numbers is None else np.asarray(row_numbers)


def _keys_of(frame: pa.Table, rows: pa.Table, rows_source: str, kind: str,
             categorical: list[str], exclude: list[str],
             source: str) -> tuple[np.ndarray, np.ndarray]:
    """The training rows' keys and those of ``rows``, encoded alike; an InputError
    when ``rows`` lacks a feature column (``kind`` names them in it)."""
    keys, preprocessor = _training_keys(frame, source, categorical, exclude)
    absent = [name for name in preprocessor.feature_names if name not in rows.column_names]
    if absent:
        raise InputError(f"column `{absent[0]}` is missing from {rows_source} (the model is "
                         f"trained with it); {kind} need every feature column of {source}")
    return keys, row_keys(preprocessor.transform(rows, source=rows_source))


def _data_rows(mask: np.ndarray, source: str) -> list[str]:
    return [f"row {row + 1} of {source}" for row in np.flatnonzero(mask)]


def resolve_normals(frame: pa.Table, normals, source: str, *, categorical: list[str],
                    exclude: list[str]) -> KnownRows | None:
    """``normals`` (rows dismissed as normal: a table, or a boolean mask over
    ``frame``'s rows) as KnownRows (None for None or no rows)."""
    if normals is None or isinstance(normals, KnownRows):
        return normals if normals is None or len(normals) else None
    if isinstance(normals, pa.Table):
        rows = normals_from_file(frame, normals, "the known normals", source,
                                 categorical=categorical, exclude=exclude)
    else:
        mask = _row_mask(normals, frame, "known normals", "dismissed rows")
        rows = normals_from_mask(frame, mask, "the known normals", source,
                                 categorical=categorical, exclude=exclude)
    return rows if len(rows) else None


def normals_from_mask(frame: pa.Table, mask: np.ndarray, normals_source: str, source: str, *,
                      categorical: list[str], exclude: list[str]) -> KnownRows:
    """The rows of ``frame`` that ``mask`` marks as confirmed normals (the word
    ``normal`` in ``--label-column``)."""
    if not mask.any():
        return KnownRows(frame.filter(pa.array(mask)), normals_source, mask)
    keys = _training_keys(frame, source, categorical, exclude)[0]
    # Training rows with a dismissed row's values are dismissed rows too.
    in_data = np.isin(keys, keys[mask])
    return KnownRows(frame.filter(pa.array(mask)), normals_source, in_data, keys=keys[mask],
                     names=_data_rows(mask, source), outside=np.zeros(int(mask.sum()), bool))


def normals_from_file(frame: pa.Table, normals: pa.Table, normals_source: str, source: str, *,
                      categorical: list[str], exclude: list[str],
                      row_numbers: np.ndarray | None = None,
                      kind: str = "the known normals") -> KnownRows:
    """The rows of a ``--known-normals`` file. Unlike confirmed anomalies, none is left
    out as too common, and there is no bound on their count: the fit's term for them is
    an average (training.py), so thousands weigh as much as a handful. ``row_numbers``
    and ``kind`` as for known_from_file."""
    if normals.num_rows == 0:
        return KnownRows(normals, normals_source, np.zeros(frame.num_rows, dtype=bool))
    keys, normal_keys = _keys_of(frame, normals, normals_source, kind, categorical, exclude,
                                 source)
    return KnownRows(normals, normals_source, np.isin(keys, normal_keys), keys=normal_keys,
                     names=[f"row {row} of {normals_source}"
                            for row in _numbers(row_numbers, normals.num_rows)],
                     outside=~np.isin(normal_keys, keys))


def merged(parts: list[KnownRows], source: str, frame: pa.Table) -> KnownRows | None:
    """The union of several sources' verdicts of one kind (``--verdicts`` files beside
    ``--known-anomalies`` / ``--known-normals``): each set of values once, at its
    first row; None when none has rows. One source is returned as it is."""
    parts = [part for part in parts if part is not None]
    reviewed = sum(part.reviewed for part in parts)
    parts = [part for part in parts if len(part)]
    if not parts:
        return None
    if len(parts) == 1:
        return dataclasses.replace(parts[0], reviewed=reviewed)
    keys = np.concatenate([part.keys for part in parts])
    first = np.sort(np.unique(keys, return_index=True)[1])
    names = [name for part in parts for name in
             (part.names or [part.row_name(row) for row in range(len(part))])]
    outside = np.concatenate([part.outside if part.outside is not None
                              else np.zeros(len(part), bool) for part in parts])
    in_data = np.logical_or.reduce([part.in_data for part in parts])
    table = _stacked_tables([part.table for part in parts], frame).take(pa.array(first))
    return KnownRows(table, ", ".join(part.source for part in parts), in_data,
                     [note for part in parts for note in part.notes], keys=keys[first],
                     names=[names[row] for row in first], outside=outside[first],
                     reviewed=reviewed)


def _stacked_tables(tables: list[pa.Table], frame: pa.Table) -> pa.Table:
    """The feature columns of ``tables``, one table: by type where they agree, else as
    text, which the preprocessor reads as the same values (every source's cells map
    onto one logical type, logical_types.py)."""
    columns = [name for name in frame.column_names
               if all(name in table.column_names for table in tables)]
    picked = [table.select(columns) for table in tables]
    try:
        return pa.concat_tables(picked, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.concat_tables([pa.table({name: pc.cast(table.column(name), pa.large_string())
                                           for name in columns}) for table in picked])


def check_verdicts_agree(anomalies: KnownRows | None, normals: KnownRows | None) -> None:
    """Refuse values that are both confirmed anomalous and dismissed as normal: no fit
    can push a row's score up and pull it down at once."""
    if anomalies is None or normals is None or anomalies.keys is None or normals.keys is None:
        return
    both = np.flatnonzero(np.isin(anomalies.keys, normals.keys))
    if not len(both):
        return
    row = int(both[0])
    twin = int(np.flatnonzero(normals.keys == anomalies.keys[row])[0])
    more = f" ({len(both) - 1} more such rows)" if len(both) > 1 else ""
    raise InputError(f"{anomalies.row_name(row)} is confirmed as an anomaly and "
                     f"{normals.row_name(twin)} is dismissed as normal, with the same values"
                     f"{more}; give those values one verdict")


# Within keys_learned_once, the training keys of each (frame, options) already learned.
_LEARNED_KEYS: ContextVar[dict | None] = ContextVar("learned_training_keys", default=None)


@contextlib.contextmanager
def keys_learned_once() -> Iterator[None]:
    """Within the block, the training keys of a frame are learned once however many
    verdict sources are matched against it: a review file's confirmed anomalies and
    dismissed rows, --known-anomalies and --known-normals. Learning them preprocesses
    the whole file (0.2 s of a 40,000-row fit); the block ends with the fit's reading
    of its verdicts, so no table outlives it here."""
    token = _LEARNED_KEYS.set({})
    try:
        yield
    finally:
        _LEARNED_KEYS.reset(token)


def _training_keys(frame: pa.Table, source: str, categorical: list[str],
                   exclude: list[str]) -> tuple[np.ndarray, Preprocessor]:
    """Each training row's key (its encoded values' hash), and the preprocessor that
    encoded them: the training data's columns, kinds and encoding, learned from all its
    rows, only to find which rows confirmed ones match."""
    learned = _LEARNED_KEYS.get()
    wanted = (id(frame), source, tuple(categorical), tuple(exclude))
    if learned is not None and wanted in learned:
        return learned[wanted][1]
    preprocessor = Preprocessor().fit(frame, categorical=categorical, exclude=exclude,
                                      source=source)
    found = row_keys(preprocessor.transform(frame, source=source)), preprocessor
    if learned is not None:  # the frame is held too, so its id cannot be reused meanwhile
        learned[wanted] = (frame, found)
    return found


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
