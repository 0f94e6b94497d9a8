"""The review queue (issue 39, part 1): `vae-anomaly review MODEL DATA --budget B -o
FILE [--verdicts FILE ...]` and `review_file` write the rows most worth a verdict,
with their row numbers, scores, top columns and an empty verdict column; rows that
already have a verdict are never proposed again; the same seed proposes the same
rows; and the default picking finds a group of anomalies the model learned as a
mode, which the top of the score does not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from conftest import make_records
from test_known_anomalies import invoke, one_line_error  # the CLI helpers
from vae_anomaly.api import review_file, score_file
from vae_anomaly.detector import Detector
from vae_anomaly.review import PICKINGS, propose

REVIEW_COLUMNS = ["row", "anomaly_score", "top_columns", "verdict"]



def read_text(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_review_writes_the_rows_as_given_then_row_score_top_columns_and_an_empty_verdict(
        tiny_dir, tiny_model, tmp_path):
    out = tmp_path / "review.csv"
    result = invoke("review", tiny_model, tiny_dir / "new.csv", "--budget", 6, "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("Proposed 6 of 60 rows for review in ")
    assert f"wrote {out}" in result.stderr
    data, review = read_text(tiny_dir / "new.csv"), read_text(out)
    assert list(review.columns) == list(data.columns) + REVIEW_COLUMNS
    assert len(review) == 6 and (review["verdict"] == "").all()
    rows = review["row"].astype(int).to_numpy()
    assert len(set(rows)) == 6 and rows.min() >= 1 and rows.max() <= 60
    # Each row is the given row with that 1-based data row number, cells as written.
    pd.testing.assert_frame_equal(review[data.columns].reset_index(drop=True),
                                  data.iloc[rows - 1].reset_index(drop=True))
    # anomaly_score and top_columns as `score --explain 3` writes them.
    scored = tmp_path / "scored.csv"
    score_file(tiny_dir / "new.csv", tiny_model, output=scored, explain=3)
    expected = read_text(scored).iloc[rows - 1].reset_index(drop=True)
    np.testing.assert_array_equal(review["anomaly_score"].astype(float),
                                  expected["anomaly_score"].astype(float))
    assert list(review["top_columns"]) == list(expected["top_columns"])


def test_the_queue_leads_with_the_top_row_and_asks_once_per_group(tiny_dir, tiny_model,
                                                                  tmp_path):
    """new.csv's first five rows break y = 2x the same way: the top-scored row leads,
    and the five look-alikes do not take five of the ten places (one verdict teaches
    the next fit about all of them)."""
    out = tmp_path / "review.csv"
    review_file(tiny_model, tiny_dir / "new.csv", budget=10, output=out)
    rows = read_text(out)["row"].astype(int).to_numpy()
    scores = pd.read_csv(tmp_path / "review.csv")["anomaly_score"].to_numpy()
    scored = tmp_path / "scored.csv"
    score_file(tiny_dir / "new.csv", tiny_model, output=scored)
    assert rows[0] == int(pd.read_csv(scored)["anomaly_score"].to_numpy().argmax()) + 1
    assert scores[0] == scores.max()
    assert 1 <= len(set(rows) & set(range(1, 6))) < 5


def test_parquet_output_and_a_scored_batch_as_data(tiny_dir, tiny_model, tmp_path):
    """A scored batch's score columns are written afresh, not twice."""
    scored = tmp_path / "new.scored.csv"
    score_file(tiny_dir / "new.csv", tiny_model, output=scored, explain=2)
    out = tmp_path / "review.parquet"
    result = review_file(tiny_model, scored, budget=4, output=out)
    review = pd.read_parquet(out)
    assert result.proposed == 4 and len(review) == 4
    assert list(review.columns) == list(read_text(tiny_dir / "new.csv").columns) + REVIEW_COLUMNS
    assert review["row"].dtype == np.int64 and (review["verdict"] == "").all()


def test_rows_with_a_verdict_are_never_proposed_again(tiny_dir, tiny_model, tmp_path):
    first = tmp_path / "first.csv"
    review_file(tiny_model, tiny_dir / "train.csv", budget=8, output=first)
    filled = read_text(first)
    filled["verdict"] = ["anomaly", "normal", "normal", "anomaly", "normal", "normal", "", ""]
    filled.to_csv(tmp_path / "filled.csv", index=False)
    second = tmp_path / "second.csv"
    result = invoke("review", tiny_model, tiny_dir / "train.csv", "--budget", 8, "-o", second,
                    "--verdicts", tmp_path / "filled.csv")
    assert result.exit_code == 0, result.output
    assert "(6 already had a verdict)" in result.stderr
    judged = set(filled["row"].astype(int)[:6])
    again = set(read_text(second)["row"].astype(int))
    assert len(again) == 8 and not judged & again
    # The two rows left empty are still open: a row without a verdict may come back.
    assert set(filled["row"].astype(int)[6:]) & again


def test_verdicts_are_matched_by_value_from_any_file(tiny_dir, tiny_model, tmp_path):
    """A file of judged rows without a verdict column (e.g. confirmed anomalies), in
    another order and format, with other columns and a shuffled column order."""
    first = tmp_path / "first.csv"
    review_file(tiny_model, tiny_dir / "train.csv", budget=5, output=first)
    judged = read_text(first).drop(columns=REVIEW_COLUMNS).iloc[::-1]
    judged = judged[list(reversed(judged.columns))].assign(note="seen")
    judged.to_parquet(tmp_path / "judged.parquet")
    second = tmp_path / "second.csv"
    result = review_file(tiny_model, tiny_dir / "train.csv", budget=5, output=second,
                         verdicts=[tmp_path / "judged.parquet"])
    assert result.reviewed == 5
    assert not set(read_text(first)["row"]) & set(read_text(second)["row"])


def test_every_row_judged_writes_a_header_only_file(tiny_dir, tiny_model, tmp_path):
    data = tmp_path / "few.csv"
    read_text(tiny_dir / "new.csv").head(12).to_csv(data, index=False)
    (judged := read_text(data)).assign(verdict="normal").to_csv(tmp_path / "all.csv",
                                                                index=False)
    out = tmp_path / "review.csv"
    result = review_file(tiny_model, data, budget=3, output=out, verdicts=[tmp_path / "all.csv"])
    assert (result.proposed, result.reviewed) == (0, 12)
    assert list(read_text(out).columns) == list(judged.columns) + REVIEW_COLUMNS


def test_the_same_seed_proposes_the_same_file(tiny_dir, tiny_model, tmp_path):
    outputs = []
    for name in ("a.csv", "b.csv"):
        review_file(tiny_model, tiny_dir / "train.csv", budget=12, output=tmp_path / name,
                    seed=3)
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("args, message", [
    (["--budget", "0"],
     "Error: --budget must be at least 1 (got 0); it is how many rows to propose for review"),
    (["--budget", "-3"],
     "Error: --budget must be at least 1 (got -3); it is how many rows to propose for review"),
    (["--budget", "61"],
     "Error: --budget 61 is more than the 60 rows of new.csv; ask for at most 60"),
])
def test_a_budget_below_1_or_above_the_rows_is_one_line_and_exit_2(tiny_dir, tiny_model,
                                                                     tmp_path, args, message):
    out = tmp_path / "review.csv"
    result = invoke("review", tiny_model, tiny_dir / "new.csv", *args, "-o", out)
    assert one_line_error(result) == message
    assert not out.exists()


def test_file_errors_are_one_line_and_exit_2(tiny_dir, tiny_model, tmp_path):
    out = tmp_path / "review.csv"
    missing = invoke("review", tiny_model, tmp_path / "absent.csv", "--budget", 2, "-o", out)
    assert "absent.csv" in one_line_error(missing)
    no_model = invoke("review", tmp_path / "none.vae", tiny_dir / "new.csv", "--budget", 2,
                      "-o", out)
    assert "none.vae" in one_line_error(no_model)
    same = invoke("review", tiny_model, tiny_dir / "new.csv", "--budget", 2, "-o",
                  tiny_dir / "new.csv")
    assert "new.csv" in one_line_error(same)
    read_text(tiny_dir / "new.csv").drop(columns="x").to_csv(tmp_path / "no_x.csv", index=False)
    no_column = invoke("review", tiny_model, tiny_dir / "new.csv", "--budget", 2, "-o", out,
                       "--verdicts", tmp_path / "no_x.csv")
    assert "`x`" in one_line_error(no_column)
    read_text(tiny_dir / "new.csv").assign(verdict="").to_csv(tmp_path / "filled.csv",
                                                              index=False)
    as_data = invoke("review", tiny_model, tmp_path / "filled.csv", "--budget", 2, "-o", out)
    assert one_line_error(as_data) == (
        "Error: filled.csv has a column `verdict`, which the review file adds; rename or drop "
        "that column (a filled review file goes to --verdicts, not DATA)")
    assert not out.exists()


def test_a_word_that_is_no_verdict_is_one_line_and_exit_2(tiny_dir, tiny_model, tmp_path):
    read_text(tiny_dir / "new.csv").head(3).assign(verdict=["anomaly", "", "maybe"]).to_csv(
        tmp_path / "filled.csv", index=False)
    result = invoke("review", tiny_model, tiny_dir / "new.csv", "--budget", 2, "-o",
                    tmp_path / "review.csv", "--verdicts", tmp_path / "filled.csv")
    assert one_line_error(result) == ("Error: verdict 'maybe' at row 3 of filled.csv is not "
                                      "a verdict; write anomaly or normal, or leave it empty")


def test_review_help_needs_no_torch():
    import subprocess
    import sys

    code = ("import sys; from vae_anomaly.cli import app; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(app, ['review', '--help']); assert r.exit_code == 0; "
            "assert '--budget' in r.output; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----- the picking ---------------------------------------------------------------------
def learned_group(n: int, seed: int) -> pd.DataFrame:
    """A tight group of anomalies with a level of its own: 5% of the training file, so
    the network learns it as a mode and scores it like normal rows' upper tail."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "id": [f"G{i:05d}" for i in range(n)],
        "x": (2.2 + rng.normal(scale=0.05, size=n)).round(4),
        "y": (-4.4 + rng.normal(scale=0.05, size=n)).round(4),
        "amount": rng.lognormal(3, 0.2, size=n).round(2),
        "colour": "green", "member": False})


@pytest.fixture(scope="module")
def dirty_fits():
    train = pd.concat([make_records(1000, seed=1), learned_group(50, seed=5)],
                      ignore_index=True)
    planted = np.r_[np.zeros(1000, bool), np.ones(50, bool)]
    fits = [Detector(seed=seed, exclude=["id"], epochs=30, calibration_fits=0).fit(train)
            for seed in range(3)]
    return pa.Table.from_pandas(train), planted, fits


def test_the_picking_finds_a_group_the_model_learned_as_a_mode(dirty_fits):
    """Ten rows asked for, three seeds: the default picking proposes a row of the
    group every time; the top of the score never does (the group ranks around the
    95th percentile, below the normal rows' own extremes)."""
    table, planted, fits = dirty_fits
    for detector in fits:
        found = planted[propose(detector, table, 10).rows]
        top = planted[propose(detector, table, 10, picking="top").rows]
        assert found.sum() >= 1 and top.sum() == 0, (found, top)


def test_every_picking_is_deterministic_and_skips_judged_rows(dirty_fits):
    table, _, fits = dirty_fits
    judged = table.take(pa.array(np.arange(0, 1050, 7)))
    for picking in PICKINGS:
        first = propose(fits[0], table, 15, verdicts=[judged], picking=picking, seed=4).rows
        again = propose(fits[0], table, 15, verdicts=[judged], picking=picking, seed=4).rows
        np.testing.assert_array_equal(first, again)
        assert len(set(first)) == 15 and not (first % 7 == 0).any(), picking


def test_the_forest_grows_on_a_draw_but_scores_every_row(dirty_fits, monkeypatch):
    """A row of a big batch outside the forest's draw (500 of 1,050 rows here) still
    gets its forest score, the same as when the forest sees every row's kind: the
    picking can propose any row of DATA, not only the draw's."""
    import vae_anomaly.review as review

    table, planted, fits = dirty_fits
    detector = fits[0]
    monkeypatch.setattr(review, "MAX_FOREST_ROWS", 500)
    views = review.Views(scores=np.zeros(table.num_rows),
                         encoded=detector.preprocessor_.transform(table), model=detector.model_,
                         seed=0)
    forest = review.forest_scores(views, 0)
    assert np.isfinite(forest).all()
    # The planted group, most of it outside the draw, ranks above the normal rows.
    assert np.median(forest[planted]) > np.quantile(forest[~planted], 0.9)
