"""The command line as cron uses it: exit codes, exact errors, files on disk."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import make_records
from vae_anomaly import load
from vae_anomaly.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture()
def work(tmp_path, tiny_dir, tiny_model):
    """A private folder with copies of the tiny data and model."""
    for name in ("train.csv", "new.csv", "model.vae"):
        shutil.copy(tiny_dir / name, tmp_path / name)
    return tmp_path


def test_score_writes_inputs_unchanged_then_score_columns(work):
    result = invoke("score", work / "new.csv", "--model", work / "model.vae",
                    "-o", work / "out.csv")
    assert result.exit_code == 0, result.output
    original = pd.read_csv(work / "new.csv", dtype=str, keep_default_na=False)
    scored = pd.read_csv(work / "out.csv", dtype=str, keep_default_na=False)
    assert list(scored.columns) == list(original.columns) + [
        "anomaly_score", "is_anomaly", "p_value", "reconstruction_nll", "kl_divergence",
        "score_std_error"]
    pd.testing.assert_frame_equal(scored[original.columns], original)
    numbers = scored[["anomaly_score", "reconstruction_nll", "kl_divergence"]].astype(float)
    assert (numbers["anomaly_score"] - numbers.sum(axis=1) + numbers["anomaly_score"]).abs().max() < 1e-6
    assert set(scored["is_anomaly"]) <= {"0", "1"}
    assert "Scored 60 rows" in result.stderr


def test_default_output_is_beside_the_input(work):
    result = invoke("score", work / "new.csv", "--model", work / "model.vae", "--quiet")
    assert result.exit_code == 0
    assert result.stderr == ""
    assert (work / "new.scored.csv").exists()


def test_same_seed_gives_identical_output_and_another_seed_does_not(work):
    for name, seed in (("a.csv", 5), ("b.csv", 5), ("c.csv", 6)):
        assert invoke("score", work / "new.csv", "--model", work / "model.vae", "-o",
                      work / name, "--seed", seed, "-q").exit_code == 0
    assert (work / "a.csv").read_bytes() == (work / "b.csv").read_bytes()
    assert (work / "a.csv").read_bytes() != (work / "c.csv").read_bytes()


def test_fit_with_the_same_seed_gives_an_identical_model(work):
    for name in ("m1.vae", "m2.vae"):
        result = invoke("fit", work / "train.csv", "--model", work / name, "--epochs", 3, "-q")
        assert result.exit_code == 0, result.output
    first = json.loads(invoke("info", work / "m1.vae", "--json").stdout)
    second = json.loads(invoke("info", work / "m2.vae", "--json").stdout)
    assert first["threshold"] == second["threshold"]
    assert first["training"]["history"][-1]["val_loss"] == \
        second["training"]["history"][-1]["val_loss"]


def test_stdout_gets_data_only_with_dash(work):
    result = invoke("score", work / "new.csv", "--model", work / "model.vae", "-o", "-", "-q")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].endswith("score_std_error")
    assert len(result.stdout.splitlines()) == 61


def test_fail_on_anomaly_exits_1_when_rows_are_flagged(work):
    args = ("score", work / "new.csv", "--model", work / "model.vae", "-o", work / "o.csv", "-q")
    assert invoke(*args, "--threshold", -1e9, "--fail-on-anomaly").exit_code == 1
    assert invoke(*args, "--threshold", 1e9, "--fail-on-anomaly").exit_code == 0
    assert invoke(*args, "--threshold", -1e9).exit_code == 0


def test_header_only_file_is_a_normal_night(work):
    header = (work / "new.csv").read_text().splitlines()[0]
    (work / "empty_night.csv").write_text(header + "\n")
    result = invoke("score", work / "empty_night.csv", "--model", work / "model.vae",
                    "-o", work / "o.csv")
    assert result.exit_code == 0
    assert "Note: empty_night.csv has no rows; wrote a header-only output" in result.stderr
    assert (work / "o.csv").read_text().splitlines() == [
        header + ",anomaly_score,is_anomaly,p_value,reconstruction_nll,kl_divergence,"
                 "score_std_error"]


def _bad_new_csv(work, case):
    frame = pd.read_csv(work / "new.csv", dtype=str, keep_default_na=False)
    if case == "missing column":
        frame = frame.drop(columns=["amount"])
    elif case == "text in numeric":
        frame.loc[6, "x"] = "twelve"
    path = work / "bad.csv"
    if case == "empty file":
        path.write_bytes(b"")
    else:
        frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("case, message", [
    ("missing column", "Error: column `amount` is missing from bad.csv "
                       "(the model was trained with it)"),
    ("text in numeric", "Error: column `x` in bad.csv has non-numeric value 'twelve' at row 7; "
                        "fix the value or mark it missing"),
    ("empty file", "Error: bad.csv is empty (0 bytes); expected a CSV file with a header row"),
])
def test_bad_input_gives_one_line_exit_2_and_no_output(work, case, message):
    path = _bad_new_csv(work, case)
    (work / "previous.csv").write_text("keep me\n")
    result = invoke("score", path, "--model", work / "model.vae", "-o", work / "previous.csv")
    assert result.exit_code == 2
    assert result.stderr.strip() == message
    assert "Traceback" not in result.output
    assert (work / "previous.csv").read_text() == "keep me\n"
    assert not [p for p in work.iterdir() if p.name.endswith(".partial")]
    fresh = invoke("score", path, "--model", work / "model.vae", "-o", work / "fresh.csv")
    assert fresh.exit_code == 2 and not (work / "fresh.csv").exists()


def test_an_unseen_category_raises_the_score_and_does_not_crash(work):
    frame = pd.read_csv(work / "new.csv")
    frame.loc[10:, "colour"] = "ultraviolet"
    frame.to_csv(work / "odd.csv", index=False)
    assert invoke("score", work / "odd.csv", "--model", work / "model.vae", "-o",
                  work / "odd_out.csv", "-q", "--seed", 1).exit_code == 0
    assert invoke("score", work / "new.csv", "--model", work / "model.vae", "-o",
                  work / "new_out.csv", "-q", "--seed", 1).exit_code == 0
    odd = pd.read_csv(work / "odd_out.csv")["anomaly_score"]
    base = pd.read_csv(work / "new_out.csv")["anomaly_score"]
    assert (odd[10:] > base[10:] + 1).all()


def test_output_equal_to_input_is_refused(work):
    before = (work / "new.csv").read_bytes()
    result = invoke("score", work / "new.csv", "--model", work / "model.vae",
                    "-o", work / "new.csv")
    assert result.exit_code == 2
    assert "is the input file itself" in result.stderr
    assert (work / "new.csv").read_bytes() == before


def test_missing_output_folder_fails_before_any_work(work):
    result = invoke("score", work / "new.csv", "--model", work / "model.vae",
                    "-o", work / "nope" / "out.csv")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"Error: output folder {work / 'nope'} does not exist; create it first"


def test_corrupt_model_file_gives_exit_2(work):
    (work / "bad.vae").write_bytes(b"\x80\x04garbage")
    result = invoke("score", work / "new.csv", "--model", work / "bad.vae", "-o", work / "o.csv")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("Error: bad.vae is not a vae-anomaly model file; "
                                     "pass a file written by `vae-anomaly fit`")
    assert not (work / "o.csv").exists()


def test_a_failed_fit_keeps_the_existing_model(work):
    before = (work / "model.vae").read_bytes()
    (work / "tiny.csv").write_text("x,y\n1,2\n3,4\n")
    result = invoke("fit", work / "tiny.csv", "--model", work / "model.vae")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("Error: tiny.csv has 2 row(s); fit needs at least 10 rows "
                                     "of normal records")
    assert (work / "model.vae").read_bytes() == before


def test_fit_reports_notes_and_a_summary(work):
    result = invoke("fit", work / "train.csv", "--model", work / "m.vae", "--epochs", 2)
    assert result.exit_code == 0, result.output
    assert "Note: column `id` is ignored: it has a distinct value in every row" in result.stderr
    assert "Trained on 280 rows (120 held out) for 2 epochs" in result.stderr
    assert "from 360 held-out scores (2 calibration fits); saved" in result.stderr
    assert result.stdout == ""


def test_fit_with_unknown_exclude_column_is_a_usage_error(work):
    result = invoke("fit", work / "train.csv", "--model", work / "m.vae", "--exclude", "nope")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: column `nope` named in --categorical/--exclude "
                                    "is not in train.csv")


def test_cuda_request_without_a_gpu_is_a_clear_error(work):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = invoke("fit", work / "train.csv", "--model", work / "m.vae", "--device", "cuda")
    assert result.exit_code == 2
    assert "no CUDA GPU is available; use --device auto or --device cpu" in result.stderr


def test_info_shows_columns_threshold_training_and_versions(work):
    result = invoke("info", work / "model.vae")
    assert result.exit_code == 0
    for text in ("amount", "categorical", "threshold", "epochs", "torch", "id", "ignored"):
        assert text in result.stdout
    data = json.loads(invoke("info", work / "model.vae", "--json").stdout)
    assert [c["name"] for c in data["columns"]] == ["x", "y", "amount", "colour", "member"]
    assert data["training"]["rows"] == 400
    assert data["versions"]["vae_anomaly"]
    assert data["threshold"] == load(work / "model.vae").threshold_
    assert data["fpr"] == 0.01 and data["samples"] == 8


def test_usage_errors_exit_2():
    assert invoke("score").exit_code == 2
    assert invoke("fit", "x.csv", "--device", "tpu").exit_code == 2


def test_installed_command_runs_for_real(tmp_path, tiny_dir, tiny_model):
    exe = shutil.which("vae-anomaly")
    commands = [[sys.executable, "-m", "vae_anomaly"]] + ([[exe]] if exe else [])
    for i, command in enumerate(commands):
        out = tmp_path / f"out{i}.csv"
        done = subprocess.run(
            command + ["score", str(tiny_dir / "new.csv"), "--model", str(tiny_model),
                       "-o", str(out)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "Scored 60 rows" in done.stderr and done.stdout == ""
        assert len(pd.read_csv(out)) == 60
    assert exe, "the vae-anomaly entry point is not installed"
    bad = subprocess.run([exe, "score", str(tmp_path / "none.csv"), "--model", str(tiny_model)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr == f"Error: file not found: {tmp_path / 'none.csv'}; check the path\n"


def test_typed_frames_score_like_the_csv(tiny_model, tiny_dir):
    from vae_anomaly import load
    detector = load(tiny_model)
    typed = detector.score(make_records(30, seed=11))
    path = tiny_dir.parent / "typed.csv"
    make_records(30, seed=11).to_csv(path, index=False)
    from vae_anomaly.data import read_table
    text = detector.score(read_table(path))
    pd.testing.assert_frame_equal(typed, text, rtol=1e-5)


def test_a_long_tailed_column_is_not_drift_when_the_training_file_is_scored(tmp_path):
    """One-off merchants in 15% of rows: the held-out training rows have unseen levels
    too, so only a rise above their share is drift."""
    rng = np.random.default_rng(3)
    frame = make_records(400, seed=3)
    frame["merchant"] = np.where(rng.random(400) < 0.85, rng.choice(["a", "b", "c"], 400),
                                 [f"m{i}" for i in range(400)])
    frame.to_csv(tmp_path / "train.csv", index=False)
    assert invoke("fit", tmp_path / "train.csv", "--model", tmp_path / "m.vae", "--epochs", 2,
                  "--calibration-fits", 0, "--exclude", "id", "-q").exit_code == 0
    same = invoke("score", tmp_path / "train.csv", "--model", tmp_path / "m.vae", "-o",
                  tmp_path / "o.csv", "--fail-on-drift")
    assert same.exit_code == 0 and "Warning" not in same.stderr, same.stderr
    baseline = load(tmp_path / "m.vae").preprocessor_.columns[-1]["heldout_unseen_rate"]
    assert 0.05 < baseline < 0.3
    frame["merchant"] = [f"new{i}" if i % 2 else "a" for i in range(400)]  # 50% unseen
    frame.to_csv(tmp_path / "drift.csv", index=False)
    drifted = invoke("score", tmp_path / "drift.csv", "--model", tmp_path / "m.vae", "-o",
                     tmp_path / "o2.csv", "--fail-on-drift")
    assert drifted.exit_code == 3
    assert (f"Warning: drift.csv: column `merchant` has categories never seen in training in "
            f"50.0% of rows (held-out training rows: {baseline:.1%})") in drifted.stderr


def test_a_rise_of_exactly_five_points_in_missing_cells_is_not_drift():
    from vae_anomaly.health import _findings

    spec = {"name": "v", "kind": "numeric", "missing_rate": 0.09, "min": 0.0, "max": 1.0}
    row = {"missing_rate": 0.14, "training_missing_rate": 0.09, "outside_range_share": 0.0}
    assert 0.14 - 0.09 > 0.05  # the float trap the check must not fall into
    assert _findings(spec, {"missing": 14}, row) == []
    assert _findings(spec, {"missing": 15}, {**row, "missing_rate": 0.15}) != []


def test_dated_file_names_get_their_own_default_outputs(work):
    for day in ("2024-06-01", "2024-06-02"):
        shutil.copy(work / "new.csv", work / f"nightly.{day}.csv")
        assert invoke("score", work / f"nightly.{day}.csv", "--model", work / "model.vae",
                      "-q").exit_code == 0
    assert (work / "nightly.2024-06-01.scored.csv").exists()
    assert (work / "nightly.2024-06-02.scored.csv").exists()


def test_summary_records_rows_flags_model_hash_and_health(work):
    import hashlib
    frame = pd.read_csv(work / "new.csv")
    frame.loc[:9, "colour"] = "ultraviolet"
    frame.to_csv(work / "drifted.csv", index=False)
    result = invoke("score", work / "drifted.csv", "--model", work / "model.vae", "-o",
                    work / "o.csv", "--summary", work / "run.json", "--fail-on-drift")
    assert result.exit_code == 3
    assert ("Warning: drifted.csv: column `colour` has categories never seen in training "
            "in 16.7% of rows") in result.stderr
    summary = json.loads((work / "run.json").read_text())
    assert summary["rows"] == 60 and summary["healthy"] is False
    assert summary["model_sha256"] == hashlib.sha256((work / "model.vae").read_bytes()).hexdigest()
    assert summary["flagged"] == pd.read_csv(work / "o.csv")["is_anomaly"].sum()
    assert summary["files"][0]["health"]["findings"] == [
        "column `colour` has categories never seen in training in 16.7% of rows"]
    clean = invoke("score", work / "new.csv", "--model", work / "model.vae", "-o",
                   work / "o2.csv", "--fail-on-drift", "-q")
    assert clean.exit_code == 0
