"""Input health: compare a scored batch with the training profile in the model.

For every feature column it measures the missing rate (against training's), the
share of categories never seen in training, and the share of numbers outside
the training range. A finding is raised when:

- the missing rate is more than 5 percentage points above training's;
- the share of a categorical column's cells that are unseen categories is more
  than 1 point above the share among the held-out training rows (0 for a column
  without a long tail of one-off values);
- more than 1% of a numeric column's values lie outside the training range
  (fresh normal data puts about 2/(n+1) there, n = training rows).

Each finding also needs at least 2 affected cells, so one odd row in a tiny
batch is an anomaly to flag, not drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .preprocessing import NUMERIC, EncodedBatch, Preprocessor

MISSING_RATE_RISE = 0.05
UNSEEN_SHARE = 0.01
# Rates are shares of whole counts; without this, 14% - 9% (0.05000000000000002)
# would count as "more than 5 points".
_ROUNDING = 1e-9
OUTSIDE_RANGE_SHARE = 0.01
MIN_AFFECTED_CELLS = 2


@dataclass
class HealthMonitor:
    """Accumulates per-column counts over the chunks of one input file."""

    preprocessor: Preprocessor
    rows: int = 0
    totals: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, batch: EncodedBatch) -> None:
        self.rows += len(batch)
        for name, counts in batch.counts.items():
            column = self.totals.setdefault(name, {})
            for key, count in counts.items():
                column[key] = column.get(key, 0) + count

    def report(self) -> dict:
        """{'ok': bool, 'findings': [str], 'columns': [per-column rates]}"""
        columns, findings = [], []
        for spec in self.preprocessor.columns:
            counts = self.totals.get(spec["name"], {})
            row = _column_rates(spec, counts, self.rows)
            columns.append(row)
            findings += _findings(spec, counts, row)
        return {"ok": not findings, "rows": self.rows, "findings": findings, "columns": columns}


def _column_rates(spec: dict, counts: dict, rows: int) -> dict:
    share = (lambda key: counts.get(key, 0) / rows) if rows else (lambda key: 0.0)
    row = {"column": spec["name"], "kind": spec["kind"], "missing_rate": share("missing"),
           "training_missing_rate": spec.get("missing_rate", 0.0)}
    if spec["kind"] == NUMERIC:
        row["outside_range_share"] = share("outside_range")
    else:
        row["unseen_share"] = share("unseen")
        row["training_unseen_share"] = spec.get("heldout_unseen_rate", 0.0)
    return row


def _findings(spec: dict, counts: dict, row: dict) -> list[str]:
    name, found = spec["name"], []
    if (row["missing_rate"] - row["training_missing_rate"] > MISSING_RATE_RISE + _ROUNDING
            and counts.get("missing", 0) >= MIN_AFFECTED_CELLS):
        found.append(f"column `{name}` is missing in {row['missing_rate']:.1%} of rows "
                     f"(training: {row['training_missing_rate']:.1%})")
    baseline = row.get("training_unseen_share", 0.0)
    if (row.get("unseen_share", 0) - baseline > UNSEEN_SHARE + _ROUNDING
            and counts.get("unseen", 0) >= MIN_AFFECTED_CELLS):
        usual = f" (held-out training rows: {baseline:.1%})" if baseline else ""
        found.append(f"column `{name}` has categories never seen in training in "
                     f"{row['unseen_share']:.1%} of rows{usual}")
    if (row.get("outside_range_share", 0) > OUTSIDE_RANGE_SHARE
            and counts.get("outside_range", 0) >= MIN_AFFECTED_CELLS):
        found.append(f"column `{name}` is outside the training range [{spec['min']:.6g}, "
                     f"{spec['max']:.6g}] in {row['outside_range_share']:.1%} of rows")
    return found
