"""Chunked scoring, Parquet in and out, several inputs in one run."""

from __future__ import annotations

import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from vae_anomaly.api import score_file
from vae_anomaly.cli import app

runner = CliRunner()


@pytest.mark.parametrize("chunk_size", [1, 7, 59, 1000])
def test_chunked_scores_equal_one_piece_scores(tiny_dir, tiny_model, tmp_path, chunk_size):
    whole = score_file(tiny_dir / "new.csv", tiny_model, output=tmp_path / "whole.csv",
                       chunk_size=10_000)
    parts = score_file(tiny_dir / "new.csv", tiny_model, output=tmp_path / "parts.csv",
                       chunk_size=chunk_size)
    assert whole.rows == parts.rows == 60 and whole.flagged == parts.flagged
    assert (tmp_path / "whole.csv").read_bytes() == (tmp_path / "parts.csv").read_bytes()


def test_parquet_in_and_out_keeps_types_and_scores(tiny_dir, tiny_model, tmp_path):
    frame = pd.read_csv(tiny_dir / "new.csv")
    frame.to_parquet(tmp_path / "new.parquet", index=False)
    result = runner.invoke(app, ["score", str(tmp_path / "new.parquet"), "--model",
                                 str(tiny_model), "-o", str(tmp_path / "out.parquet"), "-q"])
    assert result.exit_code == 0, result.output
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.schema.field("x").type == "double" and out.schema.field("member").type == "bool"
    csv_scores = score_file(tiny_dir / "new.csv", tiny_model, output=tmp_path / "o.csv")
    from_csv = pd.read_csv(tmp_path / "o.csv")
    pd.testing.assert_series_equal(out.to_pandas()["anomaly_score"], from_csv["anomaly_score"],
                                   rtol=1e-5)
    assert csv_scores.rows == out.num_rows


def test_a_glob_scores_every_file_into_the_output_dir(tiny_dir, tiny_model, tmp_path):
    incoming, scored = tmp_path / "incoming", tmp_path / "scored"
    incoming.mkdir(), scored.mkdir()
    for name in ("a.csv", "b.csv"):
        shutil.copy(tiny_dir / "new.csv", incoming / name)
    result = runner.invoke(app, ["score", str(incoming / "*.csv"), "--model", str(tiny_model),
                                 "--output-dir", str(scored)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in scored.iterdir()) == ["a.csv", "b.csv"]
    assert result.stderr.count("Scored 60 rows") == 2
    assert (scored / "a.csv").read_bytes() == (scored / "b.csv").read_bytes()


def test_a_glob_that_fails_on_a_later_file_says_which_outputs_are_complete(tiny_dir, tiny_model,
                                                                           tmp_path):
    incoming, scored = tmp_path / "incoming", tmp_path / "scored"
    incoming.mkdir(), scored.mkdir()
    for name in ("a.csv", "b.csv"):
        shutil.copy(tiny_dir / "new.csv", incoming / name)
    pd.read_csv(tiny_dir / "new.csv").drop(columns="amount").to_csv(incoming / "c.csv",
                                                                    index=False)
    result = runner.invoke(app, ["score", str(incoming / "*.csv"), "--model", str(tiny_model),
                                 "--output-dir", str(scored), "-q"])
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: column `amount` is missing from c.csv (the model was trained with it) (2 "
        f"earlier file(s) of this run were scored and kept: {scored / 'a.csv'}, "
        f"{scored / 'b.csv'})\n")
    assert sorted(p.name for p in scored.iterdir()) == ["a.csv", "b.csv"]


def test_a_glob_matching_several_files_needs_an_output_dir(tiny_dir, tiny_model, tmp_path):
    for name in ("a.csv", "b.csv"):
        shutil.copy(tiny_dir / "new.csv", tmp_path / name)
    result = runner.invoke(app, ["score", str(tmp_path / "*.csv"), "--model", str(tiny_model)])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"Error: '{tmp_path / '*.csv'}' matches 2 files; pass "
                                     "--output-dir to write one output per input")


def test_a_glob_matching_nothing_is_a_clear_error(tiny_model, tmp_path):
    result = runner.invoke(app, ["score", str(tmp_path / "*.csv"), "--model", str(tiny_model),
                                 "--output-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "no files match" in result.stderr


def test_scores_are_bit_identical_whatever_the_thread_count_or_chunking(tiny_model):
    """Dask workers run one torch thread, a laptop several: the same row must get
    the same float, not one that differs in the last bit."""
    import numpy as np
    import torch

    from conftest import make_records, run_together_with_two_torch_threads
    from vae_anomaly import load

    detector = load(tiny_model)
    frame = make_records(2500, seed=5)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = detector.score(frame)
        torch.set_num_threads(2)
        two_threads = detector.score(frame)
        pieces = pd.concat([detector.score(frame.iloc[start:start + 333], first_row=start)
                            for start in range(0, len(frame), 333)])
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before
    for other in (two_threads, pieces):
        for column in one_thread:
            assert np.array_equal(one_thread[column].to_numpy(), other[column].to_numpy(),
                                  equal_nan=True), column


def test_callers_scoring_from_several_threads_at_once_take_turns(tiny_model, monkeypatch):
    """torch's thread count is process-wide, and each CPU scoring call sets it to 1 for
    a pool of passes as wide as the machine. Two callers at once (a threaded Dask worker)
    would each run such a pool and read or restore the other's setting mid-way; instead
    one caller's passes all run, then the other's, each on one torch thread."""
    import time

    import torch

    from conftest import make_records, run_together_with_two_torch_threads
    from vae_anomaly import load
    from vae_anomaly import scoring

    detector, seen = load(tiny_model), []
    real_pass = scoring._score_pass

    def slow_pass(model, batch, *args, **kwargs):
        seen.append((len(batch), torch.get_num_threads()))
        time.sleep(0.02)  # keeps one caller busy while the other starts
        return real_pass(model, batch, *args, **kwargs)

    monkeypatch.setattr(scoring, "_score_pass", slow_pass)
    frames = [make_records(rows, seed=1) for rows in (6 * 1024, 5 * 1024)]  # 6 and 5 passes
    assert run_together_with_two_torch_threads(
        [lambda frame=frame: detector.score(frame) for frame in frames]) == 2
    assert {threads for _, threads in seen} == {1}
    order = [rows for rows, _ in seen]
    assert sorted(order) == [5 * 1024] * 5 + [6 * 1024] * 6
    assert order in ([6 * 1024] * 6 + [5 * 1024] * 5, [5 * 1024] * 5 + [6 * 1024] * 6), order


def test_a_cell_longer_than_the_read_block_is_read_whole(tmp_path, monkeypatch):
    """Arrow cannot parse a row longer than its block; the reader retries with
    bigger blocks, past the rows it already delivered, so nothing repeats or drops."""
    import pyarrow as pa

    from vae_anomaly import data

    monkeypatch.setattr(data, "CSV_BLOCK_BYTES", 1024)
    rows = [f"{i},short" for i in range(500)] + ['500,"' + "x" * 20_000 + '"'] + \
        [f"{i},after" for i in range(501, 600)]
    path = tmp_path / "wide.csv"
    path.write_text("n,text\n" + "\n".join(rows) + "\n")
    table = pa.concat_tables(data.read_batches(path, 64))
    assert table.column("n").to_pylist() == [str(i) for i in range(600)]
    assert len(table.column("text")[500].as_py()) == 20_000
    assert table.column("text")[599].as_py() == "after"
