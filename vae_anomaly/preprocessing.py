"""Turn a table into the model's arrays, and remember how (the preprocessing state).

Numeric columns are mapped to normal scores through their training quantiles
(a monotone, piecewise-linear map; beyond the training range it goes on as asinh
of the excess in robust spreads, so far-out values stay finite yet ordered), then
standardised. The map's log-slope is kept for every cell: the score adds it back
(a change of variables), so a row's score is a negative log-density in the data's
own units and a value in a sparse part of its column's range costs more than one
in a dense part. A missing numeric cell takes the training median, and columns
that had missing cells in training get a 0/1 missing indicator the model also
reconstructs. Categorical columns become integer codes with three reserved
levels: unknown (never seen in training), missing, and other (rare in training).

The state is plain JSON-compatible data, stored in the model file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .data import is_text, plain_array, to_arrow
from .errors import InputError
from .logical_types import (BOOLEAN, DATETIME, DECIMAL, LOGICAL_TYPES, NUMBER_TYPES, cell_text,
                            content_keys, decimal_places, logical_type, missing_mask,
                            to_levels, to_numbers)

if TYPE_CHECKING:
    import pandas as pd

NUMERIC = "numeric"
CATEGORICAL = "categorical"
UNKNOWN_CODE, MISSING_CODE, OTHER_CODE = 0, 1, 2
RESERVED_LEVELS = ("<unknown>", "<missing>", "<other>")
# asinh(1e15) is about 35: bounds any finite value without overflow.
_MAX_ABS_STANDARDISED = 1e15
_MAX_ABS_VALUE = 1e300
# Knots of the quantile map. Few knots make its slope a coarse, stable density
# estimate (an equal-mass histogram); 30 did best of 20-1000 on the quality benchmark.
QUANTILE_KNOTS = 30
# A number this close to a knot (relative) is on it. Knots are training values, and
# on a knot the map's slope is the mean of its two segments'; a lossy export of the
# same value (the sqlite3 shell and Excel print 15 digits) lands beside it, on one
# side, and would score up to a nat apart. Fifteen digits are within 5e-15.
KNOT_TOLERANCE = 1e-12


@dataclass
class EncodedBatch:
    """Model-ready arrays for n rows."""

    numeric: np.ndarray  # (n, n_numeric) float32, scaled
    indicators: np.ndarray  # (n, n_indicators) float32, 1 = the cell was missing
    categories: np.ndarray  # (n, n_categorical) int64 codes
    # (n, n_numeric) float64: -log of the numeric map's slope at each cell (0 where
    # the cell was missing); the score adds it to turn densities of the scaled
    # values into densities of the values themselves.
    nll_offset: np.ndarray
    # Per column: counts of missing cells, unseen categories and values outside the
    # training range, for the input-health check (see health.py).
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.numeric)

    def rows(self, index) -> EncodedBatch:
        """The rows at ``index`` (an index array or a slice), without the counts."""
        return EncodedBatch(self.numeric[index], self.indicators[index],
                            self.categories[index], self.nll_offset[index])


@dataclass
class TermColumns:
    """For each model term, the index of the data column it belongs to."""

    numeric: list[int]
    indicators: list[int]
    categories: list[int]
    n_columns: int


@dataclass
class Layout:
    """Widths of each block, which is all the model needs to know about the data."""

    n_numeric: int
    n_indicators: int
    category_sizes: list[int]
    # The inputs that size the network: a boolean counts as one, as it did as a 0/1
    # number, not as its one-hot block (two levels and the reserved three).
    sizing_inputs: int | None = None

    @property
    def input_dim(self) -> int:
        return self.n_numeric + self.n_indicators + sum(self.category_sizes)


# A cell that reads as a number (as pandas and pyarrow parse them), and the largest
# share of other cells for which a mostly numeric column earns a note at fit.
_NUMBER_PATTERN = r"^\s*[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?\s*$|^\s*[+-]?(inf|infinity|nan)\s*$"
_MAX_STRAY_SHARE = 0.05


@dataclass
class Preprocessor:
    """Learns column kinds and scaling from training data; encodes any later batch.

    Example:
        >>> pre = Preprocessor().fit(train_frame, exclude=["id"])
        >>> batch = pre.transform(new_frame, source="new.csv")
    """

    max_levels: int = 100
    max_rare_levels: int = 5000
    columns: list[dict] = field(default_factory=list)  # feature columns, in file order
    ignored: dict[str, str] = field(default_factory=dict)  # column -> reason
    notes: list[str] = field(default_factory=list)

    # ----- fitting -----------------------------------------------------------------
    def fit(self, frame: pd.DataFrame | pa.Table, *, categorical=(), exclude=(),
            source: str = "training data", rows: np.ndarray | None = None) -> Preprocessor:
        """Choose column kinds and learn the scaling and levels from ``frame``.

        With ``rows`` (positions), scaling and levels come from those rows only (the
        detector keeps its held-out rows out); kinds and bad values are still judged on
        every row, so errors name the row of the file.
        """
        table = to_arrow(frame)
        _check_named_columns(table, list(categorical) + list(exclude), source)
        both = [name for name in categorical if name in exclude]
        if both:
            raise InputError(f"column `{both[0]}` is named by both --categorical and --exclude; "
                             "keep the one you mean")
        self.columns, self.ignored, self.notes = [], {}, []
        for name in table.column_names:
            if name in exclude:
                self.ignored[name] = "excluded with --exclude"
                continue
            spec = self._fit_column(table.column(name), name, name in categorical, rows)
            if spec is not None:
                self.columns.append(spec)
        if not self.columns:
            raise InputError(f"no feature columns are left in {source} after exclusions; "
                             "keep at least one column")
        return self

    def _fit_column(self, values: pa.ChunkedArray, name: str, force_categorical: bool,
                    rows: np.ndarray | None) -> dict | None:
        if pa.types.is_nested(values.type):  # lists, structs, maps (Parquet only)
            if force_categorical:
                raise InputError(f"column `{name}` holds {values.type} values, which cannot be "
                                 f"categories; drop --categorical {name}")
            self._ignore(name, f"it holds {values.type} values, not numbers or categories")
            return None
        missing = missing_mask(values)
        if missing.all():
            self._ignore(name, "it is empty in every row")
            return None
        learn = _cells_to_learn_from(missing, rows)
        logical = logical_type(values, missing)
        if not force_categorical and logical in NUMBER_TYPES:
            return _fit_numeric(values, name, missing, learn, logical)
        if not force_categorical and logical == DATETIME:
            # As categories, tomorrow's dates would all be levels training never saw.
            self._ignore(name, "it holds dates or times, and each new file brings dates that "
                               "training never saw (derive numbers such as the hour or weekday "
                               f"to use them, or pass --categorical {name})")
            return None
        # A boolean column's 1/0 cells are no numbers among stray words.
        stray = None if force_categorical or logical == BOOLEAN else _stray_text(values, missing)
        text = to_levels(values, logical, name, "the training data")
        counts = _level_counts(text)
        if not force_categorical and len(counts) == (~missing).sum() >= 20:
            self._ignore(name, f"it holds numbers but {stray}" if stray else
                         "it has a distinct value in every row, so it looks like an id "
                         f"(pass --categorical {name} to use it)")
            return None
        if stray:
            self.notes.append(f"column `{name}` is treated as categorical: it holds numbers but "
                              f"{stray}")
        if rows is not None:  # the levels of the training rows only
            counts = _level_counts(text.filter(pa.array(learn)))
        return {**_fit_categorical(name, counts, self.max_levels, self.max_rare_levels,
                                   float(missing.mean())), "logical": logical}

    def content_keys(self, frame: pd.DataFrame | pa.Table, source: str = "the data") -> np.ndarray:
        """One uint64 per row, a hash of its feature cells as the model reads them
        (numbers, canonical category text): the same rows give the same keys from any
        source and in any order, so sorting by them puts rows in a canonical order."""
        table = to_arrow(frame)
        cells = []
        for spec in self.columns:
            values = table.column(spec["name"])
            cells.append(_spec_numbers(values, spec, source) if spec["kind"] == NUMERIC
                         else _spec_levels(values, spec, source))
        return content_keys(cells, table.num_rows)

    def note_heldout_unseen(self, encoded: EncodedBatch, heldout: np.ndarray) -> None:
        """Record, per categorical column, the share of the held-out training rows whose
        level the fitted rows never had: a long-tailed column (one-off merchants, cities)
        has such rows in every fresh file, and the health check measures drift above it."""
        categorical = [c for c in self.columns if c["kind"] == CATEGORICAL]
        codes = encoded.categories[heldout]
        for j, spec in enumerate(categorical):
            spec["heldout_unseen_rate"] = float((codes[:, j] == UNKNOWN_CODE).mean()) \
                if len(heldout) else 0.0

    def _ignore(self, name: str, reason: str) -> None:
        self.ignored[name] = reason
        self.notes.append(f"column `{name}` is ignored: {reason}")

    # ----- encoding ----------------------------------------------------------------
    @property
    def layout(self) -> Layout:
        numeric = [c for c in self.columns if c["kind"] == NUMERIC]
        categorical = [c for c in self.columns if c["kind"] == CATEGORICAL]
        sizes = [len(c["levels"]) + len(RESERVED_LEVELS) for c in categorical]
        n_indicators = sum(c["has_missing"] for c in numeric)
        booleans = [c.get("logical") == BOOLEAN for c in categorical]
        return Layout(
            n_numeric=len(numeric), n_indicators=n_indicators, category_sizes=sizes,
            sizing_inputs=len(numeric) + n_indicators + sum(
                1 if boolean else size for boolean, size in zip(booleans, sizes)))

    @property
    def term_columns(self) -> TermColumns:
        """Which data column each model term (number, indicator, category) belongs to."""
        numeric = [i for i, c in enumerate(self.columns) if c["kind"] == NUMERIC]
        return TermColumns(
            numeric=numeric,
            indicators=[i for i in numeric if self.columns[i]["has_missing"]],
            categories=[i for i, c in enumerate(self.columns) if c["kind"] == CATEGORICAL],
            n_columns=len(self.columns))

    @property
    def feature_names(self) -> list[str]:
        return [c["name"] for c in self.columns]

    def transform(self, frame: pd.DataFrame | pa.Table, source: str = "the data",
                  first_row: int = 0) -> EncodedBatch:
        """Encode ``frame``; raises InputError for a missing column or a bad value
        (rows in messages count from ``first_row``, the chunk's place in its file)."""
        table = to_arrow(frame)
        present = set(table.column_names)
        absent = [name for name in self.feature_names if name not in present]
        if absent:
            raise InputError(_missing_columns_message(absent, source))
        numeric, offsets, indicators, categories, counts = [], [], [], [], {}
        for spec in self.columns:
            values = table.column(spec["name"])
            if spec["kind"] == NUMERIC:
                scaled, offset, was_missing, counts[spec["name"]] = _encode_numeric(
                    values, spec, source, first_row)
                numeric.append(scaled)
                offsets.append(offset)
                if spec["has_missing"]:
                    indicators.append(was_missing)
            else:
                codes = _encode_categorical(values, spec, source, first_row)
                categories.append(codes)
                counts[spec["name"]] = {"missing": int((codes == MISSING_CODE).sum()),
                                        "unseen": int((codes == UNKNOWN_CODE).sum())}
        n = table.num_rows
        return EncodedBatch(
            numeric=_stack(numeric, n, np.float32),
            indicators=_stack(indicators, n, np.float32),
            categories=_stack(categories, n, np.int64),
            nll_offset=_stack(offsets, n, np.float64),
            counts=counts,
        )

    def typical_encoding(self) -> EncodedBatch:
        """One encoded row holding each column's typical value: the training median
        (not missing) for numbers, the most common level for categories."""
        numeric = [c for c in self.columns if c["kind"] == NUMERIC]
        medians = [_scale(np.array([c["median"]]), c) for c in numeric]
        categories = [len(RESERVED_LEVELS) if c["levels"] else OTHER_CODE
                      for c in self.columns if c["kind"] == CATEGORICAL]
        return EncodedBatch(
            numeric=np.array([[m[0][0] for m in medians]], dtype=np.float32),
            indicators=np.zeros((1, sum(c["has_missing"] for c in numeric)), dtype=np.float32),
            categories=np.array([categories], dtype=np.int64).reshape(1, len(categories)),
            nll_offset=np.array([[m[1][0] for m in medians]], dtype=np.float64))

    # ----- persistence -------------------------------------------------------------
    def to_state(self) -> dict:
        return {"max_levels": self.max_levels, "max_rare_levels": self.max_rare_levels,
                "columns": self.columns, "ignored": self.ignored}

    @classmethod
    def from_state(cls, state: dict) -> Preprocessor:
        """Rebuild from ``to_state``; raises ValueError (or KeyError, TypeError) where a
        column's description is damaged, so that a bad model file fails when it is
        loaded, not halfway through scoring."""
        columns = list(state["columns"])
        for spec in columns:
            _check_column_state(spec)
        names = [spec["name"] for spec in columns]
        if len(set(names)) != len(names):
            raise ValueError("a column is described twice")
        return cls(max_levels=int(state["max_levels"]),
                   max_rare_levels=int(state["max_rare_levels"]),
                   columns=columns, ignored=dict(state["ignored"]))


def _stray_text(values: pa.ChunkedArray, missing: np.ndarray) -> str | None:
    """For a column of numbers but for a few text cells (a typo, a stray 'n/a?'), which
    is then no numeric column, the part of a Note that names them; None otherwise."""
    text = plain_array(values)
    if not is_text(text.type):
        return None
    trimmed = pc.utf8_trim_whitespace(text)  # as the number parser trims (NBSP included)
    number = pc.fill_null(pc.match_substring_regex(trimmed, _NUMBER_PATTERN, ignore_case=True),
                          False).to_numpy(zero_copy_only=False)
    stray = np.flatnonzero(~number & ~missing)
    present = int((~missing).sum())
    if not 0 < len(stray) <= _MAX_STRAY_SHARE * present:
        return None
    first = int(stray[0])
    return (f"{len(stray)} of its {present} values "
            f"{'is not a number' if len(stray) == 1 else 'are not numbers'} "
            f"(the first: {text[first].as_py()!r} at row {first + 1}); "
            "fix them or leave them empty to use the column as numbers")


def _check_column_state(spec: dict) -> None:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ValueError("a column description has no name")
    name, kind = spec["name"], spec.get("kind")
    if "logical" in spec and spec["logical"] not in LOGICAL_TYPES:  # absent before 2026-12-07
        raise ValueError(f"column `{name}` has an unknown logical type {spec['logical']!r}")
    if kind == CATEGORICAL:
        for key in ("levels", "rare_levels"):
            if not (isinstance(spec[key], list) and all(isinstance(v, str) for v in spec[key])):
                raise ValueError(f"column `{name}` has a damaged list of {key.replace('_', ' ')}")
        rate = spec.get("heldout_unseen_rate", 0.0)  # absent from files before 2026-11-25
        if not (isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 <= rate <= 1):
            raise ValueError(f"column `{name}` has a damaged held-out unseen rate")
        return
    if kind != NUMERIC:
        raise ValueError(f"column `{name}` has an unknown kind {kind!r}")
    if not isinstance(spec["has_missing"], bool):
        raise ValueError(f"column `{name}` has a damaged missing-value flag")
    figures = [spec[key] for key in ("median", "spread", "mean", "std", "min", "max")]
    # Files of format 1 have no quantile map (their columns are scaled with asinh).
    knots, scores = spec.get("knots", []), spec.get("knot_scores", [])
    if not (isinstance(knots, list) and isinstance(scores, list) and len(knots) == len(scores)
            and (knots or "knots" not in spec)):
        raise ValueError(f"column `{name}` has a damaged quantile map")
    values = figures + knots + scores
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"column `{name}` has a scaling figure that is not a number")
    if (not np.isfinite(values).all() or spec["spread"] <= 0 or spec["std"] <= 0
            or (np.diff(knots) <= 0).any() or (np.diff(scores) < 0).any()):
        raise ValueError(f"column `{name}` has a damaged quantile map or scaling")


def _check_named_columns(table: pa.Table, names: list[str], source: str) -> None:
    for name in names:
        if name not in table.column_names:
            raise InputError(f"column `{name}` named in --categorical/--exclude is not in {source}; "
                             f"its columns are: {', '.join(table.column_names)}")


def _missing_columns_message(absent: list[str], source: str) -> str:
    if len(absent) == 1:
        return f"column `{absent[0]}` is missing from {source} (the model was trained with it)"
    names = ", ".join(f"`{name}`" for name in absent)
    return f"columns {names} are missing from {source} (the model was trained with them)"


def _cells_to_learn_from(missing: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """The non-missing cells among ``rows`` (all rows if None, or if none of ``rows``
    has a value)."""
    learn = ~missing
    if rows is not None:
        chosen = np.zeros(len(missing), dtype=bool)
        chosen[rows] = True
        if (learn & chosen).any():
            learn &= chosen
    return learn


def _level_counts(text: pa.Array) -> pd.Series:
    """How often each level (canonical text, null where missing) occurs."""
    import pandas as pd  # fit time only: scoring and `info` run without pandas

    counted = pc.value_counts(text.drop_null())
    return pd.Series(counted.field("counts").to_numpy(),
                     index=counted.field("values").to_pylist())


def _fit_numeric(values: pa.ChunkedArray, name: str, missing: np.ndarray,
                 learn: np.ndarray, logical: str) -> dict:
    # Every cell is parsed, so a bad value is reported at its row of the file.
    numbers = _bounded(to_numbers(values, logical, name, "the training data"))[learn]
    median = float(np.median(numbers))
    q25, q75 = np.percentile(numbers, [25, 75])
    spread = float(q75 - q25) / 1.349  # IQR of a unit normal is 1.349
    with np.errstate(over="ignore", invalid="ignore"):
        if not 0 < spread < np.inf:
            spread = float(np.std(numbers))
    if not 0 < spread < np.inf:
        # A constant column: a change of 0.1% of its value is already a big change.
        spread = max(abs(median), 1.0) * 1e-3
    knots, knot_scores = _quantile_knots(numbers)
    spec = {"name": name, "kind": NUMERIC, "median": median, "spread": spread,
            "knots": knots.tolist(), "knot_scores": knot_scores.tolist(),
            "mean": 0.0, "std": 1.0, "has_missing": bool(missing.any()),
            "min": float(numbers.min()), "max": float(numbers.max()),
            "missing_rate": float(missing.mean()), "logical": logical}
    if logical == DECIMAL:
        spec["decimal_places"] = decimal_places(numbers)
    mapped = _quantile_map(numbers, spec)[0]
    std = float(mapped.std())
    spec["mean"], spec["std"] = float(mapped.mean()), std if std > 1e-6 else 1.0
    return spec


def _bounded(numbers: np.ndarray) -> np.ndarray:
    """Clip to +-1e300 so medians, spreads and differences cannot overflow to inf."""
    return np.clip(numbers, -_MAX_ABS_VALUE, _MAX_ABS_VALUE)


def _quantile_knots(numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values among QUANTILE_KNOTS evenly spaced training quantiles, and
    their normal scores from the mid-rank empirical CDF (tied values share a score)."""
    ordered = np.sort(numbers)
    n = len(ordered)
    # Knots are data values ("lower"), so each has its own mid-rank and the map's
    # slope between two knots is never 0 (interpolated knots between two tied
    # values would share a rank).
    knots = np.unique(np.quantile(ordered, np.linspace(0.0, 1.0, QUANTILE_KNOTS),
                                  method="lower"))
    mid_ranks = (np.searchsorted(ordered, knots, side="left")
                 + np.searchsorted(ordered, knots, side="right")) / 2.0
    cdf = np.clip(mid_ranks / n, 0.5 / n, 1.0 - 0.5 / n)
    from scipy import special  # fit time only: scoring runs without scipy

    return knots, special.ndtri(cdf)


def _quantile_map(numbers: np.ndarray, spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """The map to normal scores and the log of its slope, for each number.

    Between knots the map is linear, and its slope is the segment's (on a knot, the
    mean of the slopes either side). Beyond the end knots it goes on as asinh of the
    excess in robust spreads, so far-out values stay finite and ordered. Each number's
    segment is looked up once; the slopes are worked in logs, so knots or spreads as
    small as 1e-320 cannot overflow them.
    """
    knots, scores = np.asarray(spec["knots"]), np.asarray(spec["knot_scores"])
    log_edge = -np.log(spec["spread"])
    numbers = _snapped_to_knots(numbers, knots)
    if len(knots) == 1:  # a constant column: only the tails
        mapped, log_slope = np.full(numbers.shape, scores[0]), np.full(numbers.shape, log_edge)
    else:
        right = np.searchsorted(knots, numbers, side="right")  # 0 below the range, len above
        segment = np.clip(right - 1, 0, len(knots) - 2)
        start, width = knots[segment], knots[segment + 1] - knots[segment]
        with np.errstate(invalid="ignore", over="ignore"):
            # The covered fraction, not np.interp's slope, which overflows for knots
            # 1e-323 apart. Values far beyond a narrow end segment overflow to inf
            # here, and the clip makes that 1, as it should.
            covered = np.clip((numbers - start) / width, 0.0, 1.0)
        mapped = scores[segment] + covered * (scores[segment + 1] - scores[segment])
        log_slopes = np.concatenate([[log_edge], np.log(np.diff(scores)) - np.log(np.diff(knots)),
                                     [log_edge]])  # below the range, each segment, above it
        log_slope = log_slopes[right]
        on_knot = np.flatnonzero((right > 0) & (knots[np.maximum(right - 1, 0)] == numbers))
        log_slope[on_knot] = np.logaddexp(log_slopes[right[on_knot] - 1],
                                          log_slopes[right[on_knot]]) - np.log(2.0)
    # Only values outside the training range have a tail part (most have none).
    outside = np.flatnonzero((numbers < knots[0]) | (numbers > knots[-1]))
    excess = _excess(numbers[outside], knots, spec["spread"])
    mapped[outside] += np.arcsinh(excess)
    log_slope[outside] -= 0.5 * np.log1p(excess * excess)
    return mapped, log_slope


def _snapped_to_knots(numbers: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """The numbers, those within KNOT_TOLERANCE of a knot replaced by the knot."""
    upper = np.clip(np.searchsorted(knots, numbers), 0, len(knots) - 1)
    lower = np.maximum(upper - 1, 0)
    with np.errstate(invalid="ignore"):
        nearest = np.where(np.abs(numbers - knots[lower]) <= np.abs(knots[upper] - numbers),
                           knots[lower], knots[upper])
        close = np.abs(numbers - nearest) <= KNOT_TOLERANCE * np.abs(nearest)
    return np.where(close, nearest, numbers)


def _excess(numbers: np.ndarray, knots: np.ndarray, spread: float) -> np.ndarray:
    """Signed distance beyond the training range in robust spreads (0 inside it)."""
    with np.errstate(over="ignore", invalid="ignore"):
        above = np.clip((numbers - knots[-1]) / spread, 0.0, _MAX_ABS_STANDARDISED)
        below = np.clip((knots[0] - numbers) / spread, 0.0, _MAX_ABS_STANDARDISED)
    return above - below


def _scale(numbers: np.ndarray, spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """The model's input for each number and its NLL offset (-log of d input / d number)."""
    if "knots" not in spec:  # model files of format 1: asinh of robust-standardised values
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = (_compress(numbers, spec["median"], spec["spread"]) - spec["mean"]) / spec["std"]
        return scaled, np.zeros_like(scaled)
    mapped, log_slope = _quantile_map(numbers, spec)
    return (mapped - spec["mean"]) / spec["std"], np.log(spec["std"]) - log_slope


def _compress(numbers: np.ndarray, median: float, spread: float) -> np.ndarray:
    with np.errstate(over="ignore"):
        standardised = np.clip((numbers - median) / spread, -_MAX_ABS_STANDARDISED,
                               _MAX_ABS_STANDARDISED)
    return np.arcsinh(standardised)


def _encode_numeric(values: pa.ChunkedArray, spec: dict, source: str,
                    first_row: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    numbers = _bounded(_spec_numbers(values, spec, source, first_row))
    was_missing = np.isnan(numbers)
    with np.errstate(invalid="ignore"):
        counts = {"missing": int(was_missing.sum()),
                  "outside_range": int(((numbers < spec["min"]) | (numbers > spec["max"])).sum())}
    scaled, offset = _scale(np.where(was_missing, spec["median"], numbers), spec)
    # A missing cell has no value to have a density; its indicator carries the evidence.
    offset = np.where(was_missing, 0.0, offset)
    return scaled.astype(np.float32), offset, was_missing.astype(np.float32), counts


def _fit_categorical(name: str, counts: pd.Series, max_levels: int, max_rare: int,
                     missing_rate: float) -> dict:
    counts = counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")
    levels = [str(level) for level in counts.index[:max_levels]]
    rare = [str(level) for level in counts.index[max_levels:max_levels + max_rare]]
    return {"name": name, "kind": CATEGORICAL, "levels": levels, "rare_levels": rare,
            "missing_rate": missing_rate}


def _spec_numbers(values: pa.ChunkedArray, spec: dict, source: str,
                  first_row: int = 0) -> np.ndarray:
    """A numeric column's cells as float64, as its logical type maps them (files
    written before logical types: as they were read then)."""
    return to_numbers(values, spec.get("logical"), spec["name"], source, first_row)


def _spec_levels(values: pa.ChunkedArray, spec: dict, source: str,
                 first_row: int = 0) -> pa.Array:
    """A categorical column's cells as canonical text, as its logical type maps them
    (files written before logical types: as the CSV text they were trained on)."""
    if "logical" not in spec:
        return cell_text(values)
    return to_levels(values, spec["logical"], spec["name"], source, first_row)


def _encode_categorical(values: pa.ChunkedArray, spec: dict, source: str,
                        first_row: int) -> np.ndarray:
    text = _spec_levels(values, spec, source, first_row)
    kept = pc.index_in(text, value_set=pa.array(spec["levels"], type=pa.string()))
    codes = pc.add(kept, len(RESERVED_LEVELS)).to_numpy(zero_copy_only=False)
    codes = np.nan_to_num(codes.astype(np.float64), nan=UNKNOWN_CODE).astype(np.int64)
    if spec["rare_levels"]:
        rare = pc.is_in(text, value_set=pa.array(spec["rare_levels"], type=pa.string()))
        codes[pc.fill_null(rare, False).to_numpy(zero_copy_only=False)] = OTHER_CODE
    codes[pc.is_null(text).to_numpy(zero_copy_only=False)] = MISSING_CODE
    return codes


def _stack(columns: list[np.ndarray], n: int, dtype) -> np.ndarray:
    if not columns:
        return np.zeros((n, 0), dtype=dtype)
    return np.ascontiguousarray(np.stack(columns, axis=1), dtype=dtype)
