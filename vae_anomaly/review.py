"""The review queue (``vae-anomaly review MODEL DATA --budget B``): which B rows of
DATA are most worth a person's verdict, for the next fit's sake.

DATA is the training file the model was fitted on, or a scored batch. Rows that
already have a verdict (any row of the verdict files given, matched by their
encoded values as known.py matches confirmed rows) are never proposed again.

The aim is the next fit, not only hits: a verdict teaches the model about the
row's look-alikes (a confirmed anomaly pushes them up, a dismissal pulls them
down), so ten verdicts on ten copies of one broken record teach one thing. And the
anomalies a dirty training file hides best are those the network has learned as a
mode of its own: the negative ELBO ranks them low, because the model reconstructs
them well. The default picking, ``spread``, therefore

- ranks the rows by an IsolationForest on the encoded rows (the network's inputs:
  scaled numbers, missing indicators, one-hot levels): a density-free view that
  isolates a small, separate group in a few random cuts however well the network
  has learned it, and finds odd single rows too;
- and takes one row per group of similar rows among its top 2B: a greedy
  farthest-point walk over the encoded rows, so each verdict is about another
  kind of row.

Measured on the benchmark's dirty files (bench/quality.py ``--protocol review``;
docs/benchmarks.md, "Review queue"), it left a better next fit than the top of
the score, the top of the forest alone, half of each, or walks that split the
budget with the top of the score, and found as many anomalies as half of each
(the forest alone finds a few more, of fewer kinds).
``PICKINGS`` also holds those simple pickings, for the benchmark. The cost is one
scoring pass over DATA, a 50-tree forest grown on a draw of at most
MAX_FOREST_ROWS rows and scoring every row, and (review_file) the explanations of the B rows proposed: within 2x of
scoring DATA.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from .errors import InputError
# A review file's column of verdicts; a file without it is all verdicts (a file of
# confirmed rows, as --known-anomalies takes).
from .known import VERDICT_COLUMN, read_verdicts
from .preprocessing import EncodedBatch
from .scoring import row_keys

# How many times the budget the farthest-point walks choose from: wide enough that
# the walk can skip near-copies, narrow enough that it stays at the top (a pool of 4x
# the budget found fewer anomalies: docs/benchmarks.md, "Review queue").
POOL_FACTOR = 2
# The IsolationForest fits and scores a seeded draw of at most this many rows (it
# sees 256 per tree anyway): a proposal then costs at most a fixed amount beyond the
# scoring pass (forest_scores).
MAX_FOREST_ROWS = 10_000
FOREST_TREES = 50  # half the default: the cost of a proposal stays within 2x of scoring
_SCORE_CHUNK = 65_536  # rows the forest scores at a time
DEFAULT_PICKING = "spread"


@dataclass
class Proposal:
    """The rows of DATA proposed for review, most worth a verdict first."""

    rows: np.ndarray  # 0-based row numbers in DATA
    scores: np.ndarray  # every row's anomaly score (not only the proposed rows')
    reviewed: int  # rows of DATA that already had a verdict


@dataclass
class Views:
    """What the pickings look at, for the rows of DATA without a verdict."""

    scores: np.ndarray  # the model's anomaly score
    encoded: EncodedBatch
    model: object  # the fitted TabularVAE: it turns encoded rows into its inputs
    seed: int
    _forest: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def inputs(self, rows: Sequence[int]) -> np.ndarray:
        """The rows as the encoder reads them (scaled numbers, missing indicators,
        one-hot levels), built only for the rows asked for: one-hot levels make every
        row of a wide file as wide as all its levels together."""
        batch = self.encoded.rows(np.asarray(rows, dtype=np.int64))
        with torch.no_grad():
            return self.model.inputs(torch.from_numpy(batch.numeric),
                                     torch.from_numpy(batch.indicators),
                                     torch.from_numpy(batch.categories)).numpy()

    def forest(self) -> np.ndarray:
        """An IsolationForest's anomaly score of the encoded rows (higher: easier to
        isolate; forest_scores), computed once."""
        if self._forest is None:
            self._forest = forest_scores(self, self.seed)
        return self._forest


def propose(detector, table: pa.Table, budget: int, *, verdicts: Sequence[pa.Table] = (),
            seed: int | None = None, source: str = "the data",
            picking: str = DEFAULT_PICKING) -> Proposal:
    """The ``budget`` rows of ``table`` most worth a verdict (fewer when fewer rows are
    left without one). ``verdicts``: tables of rows already judged (a ``verdict``
    column, if present, keeps only the rows where it is filled in). ``seed`` drives
    the picking's random parts (default: the model's seed); the scores are the
    model's, as ``score`` writes them."""
    check_budget(budget, table.num_rows, source)
    if picking not in PICKINGS:
        raise InputError(f"unknown picking {picking!r}; the pickings are: {', '.join(PICKINGS)}")
    seed = detector.seed if seed is None else int(seed)
    encoded = detector.encode(table, source=source)
    keys = row_keys(encoded)
    judged = np.isin(keys, _judged_keys(detector, verdicts))
    scores = _scores(detector, encoded, keys)
    open_rows = np.flatnonzero(~judged)
    if not len(open_rows):
        return Proposal(np.zeros(0, dtype=np.int64), scores, int(judged.sum()))
    views = _views(detector, encoded.rows(open_rows), scores[open_rows], seed)
    chosen = PICKINGS[picking](views, min(budget, len(open_rows)))
    return Proposal(open_rows[np.asarray(chosen, dtype=np.int64)], scores, int(judged.sum()))


def check_budget(budget: int, rows: int, source: str) -> None:
    """An InputError for a budget below 1 or above the rows of DATA."""
    if budget < 1:
        raise InputError(f"--budget must be at least 1 (got {budget}); it is how many rows "
                         "to propose for review")
    if budget > rows:
        raise InputError(f"--budget {budget} is more than the {rows} rows of {source}; ask "
                         f"for at most {rows}")


def _judged_keys(detector, verdicts: Sequence) -> np.ndarray:
    """The keys of every row that has a verdict, encoded as the model encodes DATA.
    Each item of ``verdicts`` is a table or a (name for messages, table) pair."""
    keys = []
    for item in verdicts:
        name, table = item if isinstance(item, tuple) else ("the verdicts", item)
        rows = judged_rows(table, name)
        keys.append(row_keys(detector.encode(rows, source=name)))
    return np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)


def judged_rows(table: pa.Table, name: str = "the verdicts") -> pa.Table:
    """The rows of a verdict file that hold a verdict: where its ``verdict`` column
    is filled in (with the words fit --verdicts takes: known.read_verdicts), or
    every row when it has none (a file of confirmed rows)."""
    if VERDICT_COLUMN not in table.column_names:
        return table
    anomalies, normals, _ = read_verdicts(table, name)
    return pa.concat_tables([anomalies, normals])


def _scores(detector, encoded: EncodedBatch, keys: np.ndarray) -> np.ndarray:
    """Every row's anomaly score, as ``score`` writes it (same draws, seed, kind)."""
    return detector.default_scores(encoded, keys).score(detector.score_kind)


def _views(detector, encoded: EncodedBatch, scores: np.ndarray, seed: int) -> Views:
    return Views(scores=scores, encoded=encoded, model=detector.model_, seed=seed)


def forest_scores(views: Views, seed: int) -> np.ndarray:
    """IsolationForest's anomaly score (seeded) of every row, the forest grown on a
    draw of at most MAX_FOREST_ROWS rows. The draw bounds the fit's cost whatever the
    size of DATA and loses nothing the forest is for (a group big enough to be learned
    as a mode has rows in any such draw); every row is then scored, in chunks so that
    the one-hot inputs stay bounded, so a single odd row of a million-row batch is
    found as well as one of the draw."""
    from sklearn.ensemble import IsolationForest  # only review needs it

    rng = np.random.default_rng([seed, 41])
    drawn = np.arange(len(views))
    if len(views) > MAX_FOREST_ROWS:
        drawn = np.sort(rng.choice(len(views), MAX_FOREST_ROWS, replace=False))
    forest = IsolationForest(n_estimators=FOREST_TREES,
                             random_state=int(rng.integers(2**31 - 1))).fit(views.inputs(drawn))
    return np.concatenate([
        -forest.score_samples(views.inputs(np.arange(start, min(start + _SCORE_CHUNK,
                                                                len(views)))))
        for start in range(0, len(views), _SCORE_CHUNK)])


# ----- the pickings: each takes the views and a budget, returns row positions --------
def _top(values: np.ndarray, count: int, skip: Sequence[int] = ()) -> list[int]:
    """The ``count`` rows with the highest ``values``, ties broken by position."""
    order = np.lexsort((np.arange(len(values)), -values))
    skipped = set(int(i) for i in skip)
    return [int(i) for i in order if int(i) not in skipped][:count]


def spread_walk(views: Views, pool: Sequence[int], count: int,
                taken: Sequence[int] = ()) -> list[int]:
    """Greedy farthest-point over the encoded rows: from ``pool`` (best first), each
    next row is the one farthest from every row already taken; the first, when
    nothing is taken yet, is the pool's best. One row per group of similar rows."""
    taken_rows = {int(i) for i in taken}
    pool = [int(i) for i in pool if int(i) not in taken_rows]
    chosen: list[int] = []
    if not pool or count <= 0:
        return chosen
    candidates = views.inputs(pool)
    nearest = np.full(len(pool), np.inf)
    for point in (views.inputs(list(taken)) if len(taken) else ()):
        nearest = np.minimum(nearest, np.linalg.norm(candidates - point, axis=1))
    while len(chosen) < min(count, len(pool)):
        # The pool's order breaks ties, so with nothing taken the best row leads.
        pick = int(np.argmax(nearest)) if np.isfinite(nearest).any() else 0
        chosen.append(pool[pick])
        nearest = np.minimum(nearest, np.linalg.norm(candidates - candidates[pick], axis=1))
        nearest[pick] = -np.inf
    return chosen


def pick_random(views: Views, budget: int) -> list[int]:
    rng = np.random.default_rng([views.seed, 43])
    return [int(i) for i in rng.choice(len(views), budget, replace=False)]


def pick_top(views: Views, budget: int) -> list[int]:
    return _top(views.scores, budget)


def pick_iforest(views: Views, budget: int) -> list[int]:
    return _top(views.forest(), budget)


def pick_half(views: Views, budget: int) -> list[int]:
    """Half from the top of the score, the rest from the top of IsolationForest."""
    first = _top(views.scores, (budget + 1) // 2)
    return first + _top(views.forest(), budget - len(first), skip=first)


def _forest_led(forest_share: float, pool_factor: int) -> Callable[[Views, int], list[int]]:
    """``forest_share`` of the budget from the forest's top ``pool_factor`` x budget
    rows, the rest from the top of the score; each one row per group (a farthest-point
    walk over the encoded rows), the second kept away from the first."""
    def pick(views: Views, budget: int) -> list[int]:
        first = round(forest_share * budget)
        chosen = spread_walk(views, _top(views.forest(), pool_factor * budget), first)
        pool = _top(views.scores, pool_factor * budget, skip=chosen)
        return chosen + spread_walk(views, pool, budget - len(chosen), taken=chosen)
    return pick


PICKINGS: dict[str, Callable[[Views, int], list[int]]] = {
    # The simple pickings the benchmark measures the default against.
    "random": pick_random,
    "top": pick_top,
    "iforest": pick_iforest,
    "half": pick_half,
    # The default: one row per group among the forest's top 2 x budget rows.
    "spread": _forest_led(1.0, POOL_FACTOR),
    # Measured beside it (docs/benchmarks.md, "Review queue"): a quarter of the
    # budget from the top of the score instead.
    "spread-3q": _forest_led(0.75, POOL_FACTOR),
}
