"""Confirmed anomalies (issue 29): `fit --known-anomalies FILE`, `fit --label-column
COL` and `fit(X, known_anomalies=...)` train against the confirmed rows, keep them
out of the normal rows, report how many the model flags, and refuse what cannot
work with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from conftest import FAST_FIT, make_records
from vae_anomaly import VAEAnomalyDetector, load
from vae_anomaly import calibration as calibration_module
from vae_anomaly import known as known_module
from vae_anomaly.artifact import read_model, write_model
from vae_anomaly.calibration import (TAIL_SHARE, calibrated_p_values, calibrated_threshold,
                                     conformal_p_values, exponential_tail, threshold_at,
                                     unconfirmed_siblings)
from vae_anomaly.cli import app
from vae_anomaly.known import near_confirmed
from vae_anomaly.preprocessing import EncodedBatch


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def same_weights(first: Path, second: Path) -> bool:
    a, b = load_file(first), load_file(second)
    return a.keys() == b.keys() and all(np.array_equal(a[key], b[key]) for key in a)


def broken(n: int, seed: int, first_id: int) -> pd.DataFrame:
    """One kind of odd record: y follows -2x instead of 2x."""
    frame = make_records(n, seed=seed, first_id=first_id)
    frame["y"] = -frame["y"]
    return frame


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """dirty.csv: 400 normal rows and 30 odd ones, 4 of them confirmed (known.csv,
    and `verdict` = yes inside labelled.csv)."""
    folder = tmp_path_factory.mktemp("known")
    odd = broken(30, seed=2, first_id=5000)
    dirty = pd.concat([make_records(400, seed=1), odd], ignore_index=True)
    dirty.to_csv(folder / "dirty.csv", index=False)
    odd.head(4).assign(anomaly_score=99.0).to_csv(folder / "known.csv", index=False)
    labelled = dirty.assign(verdict="")
    labelled.loc[400:403, "verdict"] = "yes"
    labelled.loc[404, "verdict"] = "0"
    labelled.to_csv(folder / "labelled.csv", index=False)
    odd.head(0).to_csv(folder / "empty.csv", index=False)
    return folder


FIT = ["--exclude", "id", "--epochs", "15", "--calibration-fits", "1"]


@pytest.fixture(scope="module")
def known_model(files) -> tuple[Path, object]:
    result = invoke("fit", files / "dirty.csv", "--model", files / "known.vae", *FIT,
                    "--known-anomalies", files / "known.csv")
    return files / "known.vae", result


def test_fit_reports_the_confirmed_rows_and_keeps_them_out_of_the_normal_rows(known_model):
    model, result = known_model
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("Known anomalies")]
    assert len(lines) == 1
    assert lines[0].startswith("Known anomalies: 4 trained against (4 training rows with "
                               "their values kept out of the normal rows); the model flags ")
    assert "held out of their calibration fit" in lines[0]
    training = json.loads(invoke("info", model, "--json").stdout)["training"]
    assert (training["known_anomalies"], training["known_in_data"]) == (4, 4)
    assert training["known_heldout"] == 4
    assert 0 <= training["known_flagged"] <= 4
    assert training["train_rows"] + training["validation_rows"] == 430 - 4
    assert "known anomalies" in invoke("info", model).stdout


def test_a_label_column_is_the_same_knowledge_as_a_file(files, known_model):
    result = invoke("fit", files / "labelled.csv", "--model", files / "labelled.vae", *FIT,
                    "--label-column", "verdict")
    assert result.exit_code == 0, result.output
    # The label column is no feature, so the two models are the same network.
    assert same_weights(files / "labelled.vae", known_model[0])
    info = json.loads(invoke("info", files / "labelled.vae", "--json").stdout)
    assert "verdict" not in [column["name"] for column in info["columns"]]


def test_an_empty_file_is_a_note_and_the_same_fit_as_without(files, tmp_path):
    result = invoke("fit", files / "dirty.csv", "--model", tmp_path / "empty.vae", *FIT,
                    "--known-anomalies", files / "empty.csv")
    assert result.exit_code == 0, result.output
    assert "Note: empty.csv has no rows; fitting without confirmed anomalies" in result.stderr
    plain = invoke("fit", files / "dirty.csv", "--model", tmp_path / "plain.vae", *FIT)
    assert plain.exit_code == 0
    assert same_weights(tmp_path / "plain.vae", tmp_path / "empty.vae")
    assert "Known anomalies" not in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--known-anomalies", "{f}/nocolour.csv"],
     "Error: column `colour` is missing from nocolour.csv (the model is trained with it); "
     "the known anomalies need every feature column of dirty.csv"),
    (["--known-anomalies", "{f}/most.csv"],
     "Error: most.csv hold 300 rows, more than half of the 430 rows of dirty.csv; pass only "
     "the rows confirmed as anomalous, and train on a file of mostly normal records"),
    (["--known-anomalies", "{f}/known.csv", "--model", "{f}/known.csv"],
     "Error: --known-anomalies and --model name the same file ({f}/known.csv); the confirmed "
     "rows need a file of their own"),
    (["--known-anomalies", "{f}/known.csv", "--training-outliers", "{f}/known.csv"],
     "Error: --known-anomalies and --training-outliers name the same file ({f}/known.csv); "
     "the confirmed rows need a file of their own"),
    (["--known-anomalies", "{f}/known.csv", "--label-column", "verdict"],
     "Error: pass either --known-anomalies or --label-column, not both; put the confirmed "
     "rows in one place"),
])
def test_bad_known_anomalies_get_one_line_and_exit_2(files, args, message):
    pd.read_csv(files / "known.csv").drop(columns="colour").to_csv(files / "nocolour.csv",
                                                                   index=False)
    make_records(300, seed=9).to_csv(files / "most.csv", index=False)
    filled = [a.format(f=files) for a in args]
    model = [] if "--model" in filled else ["--model", files / "never.vae"]
    result = invoke("fit", files / "dirty.csv", *model, "--exclude", "id", *filled)
    assert one_line_error(result) == message.format(f=files)
    assert not (files / "never.vae").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--label-column", "verdict", "--exclude", "verdict"],
     "Error: --label-column verdict is also given to --exclude; the label column is never a "
     "feature, so drop it from --exclude"),
    (["--label-column", "verdict", "--categorical", "verdict"],
     "Error: --label-column verdict is also given to --categorical; the label column is never "
     "a feature, so drop it from --categorical"),
    (["--label-column", "truth"],
     "Error: label column `truth` is not in {name}; its columns are: id, x, y, amount, "
     "colour, member, verdict"),
    (["--label-column", "verdict"],
     "Error: label column `verdict` in {name} has 'maybe' at row 7; use 1, true, yes or "
     "anomaly for a confirmed anomaly, normal for a dismissed one, and 0, false, no or an "
     "empty cell for the rest"),
])
def test_bad_label_columns_get_one_line_and_exit_2(files, args, message):
    frame = pd.read_csv(files / "labelled.csv", dtype=str, keep_default_na=False)
    frame.loc[6, "verdict"] = "maybe"
    frame.to_csv(files / "maybe.csv", index=False)
    result = invoke("fit", files / "maybe.csv", "--model", files / "never.vae",
                    "--exclude", "id", *args)
    assert one_line_error(result) == message.format(name="maybe.csv")


def test_python_mask_and_frame_train_against_the_confirmed_group():
    """Six of sixty odd rows confirmed: fresh odd rows score above normal ones far
    more often than without them (ROC-AUC up by at least 0.02 over four seeds; single
    seeds gain -0.002 to 0.057)."""
    odd = broken(60, seed=2, first_id=5000)
    train = pd.concat([make_records(1000, seed=1), odd], ignore_index=True)
    test = pd.concat([make_records(300, seed=3), broken(60, seed=4, first_id=9000)])
    truth = np.r_[np.zeros(300), np.ones(60)]
    mask = np.zeros(len(train), bool)
    mask[1000:1006] = True
    gains = []
    for seed in range(4):
        options = dict(seed=seed, exclude="id", calibration_fits=0)
        plain = VAEAnomalyDetector(**options).fit(train)
        told = VAEAnomalyDetector(**options).fit(train, known_anomalies=mask)
        gains.append(roc_auc_score(truth, -told.score_samples(test))
                     - roc_auc_score(truth, -plain.score_samples(test)))
        assert told.summary_.known_anomalies == 6 and told.summary_.known_in_data == 6
    assert np.mean(gains) >= 0.02, gains
    # A frame of the same rows is the same knowledge.
    framed = VAEAnomalyDetector(seed=3, exclude="id", calibration_fits=0).fit(
        train, known_anomalies=odd.head(6))
    np.testing.assert_array_equal(framed.score_samples(test), told.score_samples(test))


def test_without_confirmed_rows_nothing_changes(tiny_dir):
    frame = pd.read_csv(tiny_dir / "train.csv")
    plain = VAEAnomalyDetector(**FAST_FIT).fit(frame)
    none = VAEAnomalyDetector(**FAST_FIT).fit(frame, known_anomalies=np.zeros(len(frame), bool))
    new = pd.read_csv(tiny_dir / "new.csv")
    np.testing.assert_array_equal(plain.score_samples(new), none.score_samples(new))
    assert none.summary_.known_anomalies == 0


def test_a_model_file_from_before_confirmed_anomalies_loads(tiny_model, tmp_path):
    metadata, tensors = read_model(tiny_model)
    for key in [k for k in metadata["training"]
                if k.startswith("known_") or k == "calibration_tail"]:
        del metadata["training"][key]
    del metadata["tensor_sha256"]
    write_model(tmp_path / "old.vae", metadata, tensors)
    old = load(tmp_path / "old.vae")
    assert old.summary_.known_anomalies == 0 and old.calibration_tail_ == 0.0
    assert old.threshold_ == load(tiny_model).threshold_
    info = json.loads(invoke("info", tmp_path / "old.vae", "--json").stdout)
    assert info["known_anomalies"] == "none"


@pytest.fixture(scope="module")
def common_files(files) -> Path:
    """common.csv: dirty.csv with 120 copies of one normal row's values (22% of its
    550 rows); confirming that row confirms a kind of normal."""
    dirty = pd.read_csv(files / "dirty.csv")
    copies = pd.concat([dirty.iloc[[0]]] * 120, ignore_index=True).assign(
        id=range(8000, 8120))
    common = pd.concat([dirty, copies], ignore_index=True)
    common.to_csv(files / "common.csv", index=False)
    pd.concat([copies.head(1), dirty.iloc[400:402]]).to_csv(files / "mixed.csv", index=False)
    copies.head(1).to_csv(files / "only_common.csv", index=False)
    common.assign(verdict=["yes" if i in (0, 400, 401) else "" for i in range(len(common))]
                  ).to_csv(files / "common_labelled.csv", index=False)
    return files


COMMON_NOTE = ("Note: 1 of the 3 confirmed rows ({source}) has the values of 121 of the 550 "
               "rows of {data} (22%), too common to be anomalies in these columns; ")


@pytest.mark.parametrize("option, value, source, data", [
    ("--known-anomalies", "mixed.csv", "mixed.csv", "common.csv"),
    ("--label-column", "verdict", "the rows labelled anomalous in `verdict`",
     "common_labelled.csv")])
def test_a_confirmed_row_as_common_as_a_kind_of_normal_is_left_out(common_files, tmp_path,
                                                                   option, value, source, data):
    arg = common_files / value if option == "--known-anomalies" else value
    result = invoke("fit", common_files / data, "--model", tmp_path / "m.vae", *FIT,
                    option, arg)
    assert result.exit_code == 0, result.output
    note = COMMON_NOTE.format(source=source, data=data)
    assert note + "it is left out, and those rows train as normal" in result.stderr
    training = read_model(tmp_path / "m.vae")[0]["training"]
    # The two odd rows stay confirmed; none of the 121 copies leaves the normal rows.
    assert (training["known_anomalies"], training["known_in_data"]) == (2, 2)
    assert training["train_rows"] + training["validation_rows"] == 550 - 2


def test_only_common_confirmed_rows_fit_as_without_them(common_files, tmp_path):
    result = invoke("fit", common_files / "common.csv", "--model", tmp_path / "c.vae", *FIT,
                    "--known-anomalies", common_files / "only_common.csv")
    assert result.exit_code == 0, result.output
    assert ("Note: 1 of the 1 confirmed rows (only_common.csv) has the values of 121 of the "
            "550 rows of common.csv (22%), too common to be anomalies in these columns; "
            "fitting without confirmed anomalies") in result.stderr
    plain = invoke("fit", common_files / "common.csv", "--model", tmp_path / "p.vae", *FIT)
    assert plain.exit_code == 0
    assert same_weights(tmp_path / "p.vae", tmp_path / "c.vae")


def test_python_warns_of_a_common_confirmed_row(common_files):
    frame = pd.read_csv(common_files / "common.csv")
    with pytest.warns(UserWarning, match=r"^1 of the 1 confirmed rows \(the known anomalies\) "
                      r"has the values of 121 of the 550 rows of the training data"):
        detector = VAEAnomalyDetector(**FAST_FIT, exclude="id").fit(
            frame, known_anomalies=frame.head(1))
    assert detector.summary_.known_anomalies == 0


# ----- the threshold with confirmed rows: their unconfirmed siblings leave it ---------

def test_held_out_rows_near_confirmed_ones_above_the_threshold_leave_it():
    rng = np.random.default_rng(0)
    normal = rng.standard_exponential(980) * 10  # a heavy-ish normal tail
    siblings = 200 + rng.standard_exponential(20) * 50  # unconfirmed anomalies, on top
    scores = np.r_[normal, siblings]
    near = np.r_[rng.random(980) < 0.01, np.ones(20, bool)]
    left_out = unconfirmed_siblings(scores, near, 0.01)
    assert left_out[980:].all()  # every sibling leaves
    assert left_out[:980].sum() <= 2  # and almost no normal row
    fpr = np.mean(normal > threshold_at(scores[~left_out], 0.01))
    assert 0.005 <= fpr <= 0.02, fpr
    assert np.mean(normal > threshold_at(scores, 0.01)) == 0  # all held-out rows: timid


def test_rows_near_confirmed_ones_that_are_no_commoner_in_the_tail_stay():
    rng = np.random.default_rng(1)
    scores = rng.standard_exponential(1000)
    # Near rows as common above the threshold as anywhere (anomalies among the normal
    # rows, as on campaign): the tail is normal, and nothing leaves.
    near = rng.random(1000) < 0.1
    assert not unconfirmed_siblings(scores, near, 0.01).any()
    assert not unconfirmed_siblings(scores, np.zeros(1000, bool), 0.01).any()
    # However many near rows crowd the top, at most MAX_CONTAMINATION of the rows leave.
    assert unconfirmed_siblings(scores, scores > np.quantile(scores, 0.7), 0.01).sum() <= 200


def encoded_points(points: np.ndarray, codes: np.ndarray | None = None) -> EncodedBatch:
    codes = np.zeros((len(points), 0), np.int64) if codes is None else codes
    return EncodedBatch(points.astype(np.float32), np.zeros((len(points), 0), np.float32),
                        codes, np.zeros_like(points, dtype=np.float64))


def test_near_confirmed_finds_the_held_out_rows_of_a_confirmed_row_s_group():
    rng = np.random.default_rng(2)
    training = np.r_[rng.normal(size=(500, 2)), rng.normal(6, 0.3, size=(20, 2))]
    confirmed = rng.normal(6, 0.3, size=(2, 2))  # two of the group at (6, 6)
    heldout = np.r_[rng.normal(size=(100, 2)), rng.normal(6, 0.3, size=(5, 2))]
    near = near_confirmed(encoded_points(heldout), encoded_points(training),
                          encoded_points(confirmed), [], seed=0)
    assert near[100:].all() and not near[:100].any()


def test_wide_levels_are_searched_as_sparse_rows_with_the_same_answer(monkeypatch):
    rng = np.random.default_rng(3)
    sizes = [300, 4]  # 304 one-hot columns: past MAX_DENSE_WIDTH

    def rows(counts: tuple[int, int]) -> EncodedBatch:
        """counts[g] rows of group g: its own 150 levels of the wide category, and
        numbers shifted by 3 g."""
        group = np.repeat([0, 1], counts)
        codes = np.c_[rng.integers(0, 150, len(group)) + 150 * group,
                      rng.integers(0, 4, len(group))]
        return encoded_points(rng.normal(size=(len(group), 2)) + 3 * group[:, None], codes)

    training, confirmed, heldout = rows((300, 40)), rows((0, 2)), rows((60, 6))
    sparse = near_confirmed(heldout, training, confirmed, sizes, seed=0)
    monkeypatch.setattr(known_module, "MAX_DENSE_WIDTH", 10_000)
    dense = near_confirmed(heldout, training, confirmed, sizes, seed=0)
    np.testing.assert_array_equal(sparse, dense)
    assert dense[60:].all() and not dense[:60].any()


@pytest.fixture(scope="module")
def sibling_files(tmp_path_factory) -> Path:
    """siblings.csv: 1,000 normal rows and 60 broken ones, 8 of them confirmed
    (siblings_known.csv); the 52 others are the confirmed rows' unconfirmed siblings,
    and about 30 of them fall among the 597 held-out rows."""
    folder = tmp_path_factory.mktemp("siblings")
    odd = broken(60, seed=2, first_id=5000)
    pd.concat([make_records(1000, seed=1), odd], ignore_index=True).to_csv(
        folder / "siblings.csv", index=False)
    odd.head(8).to_csv(folder / "siblings_known.csv", index=False)
    return folder


def test_unconfirmed_siblings_in_the_held_out_rows_leave_the_threshold(sibling_files,
                                                                       monkeypatch):
    train = pd.read_csv(sibling_files / "siblings.csv")
    known = np.arange(len(train)) >= 1000
    known[1008:] = False
    fresh, fresh_odd = make_records(5000, seed=9, first_id=20000), broken(500, 8, 30000)

    def fit(seed: int) -> tuple[VAEAnomalyDetector, float, float]:
        detector = VAEAnomalyDetector(seed=seed, exclude="id").fit(train, known_anomalies=known)
        return (detector, np.mean(detector.predict(fresh) == -1),
                np.mean(detector.predict(fresh_odd) == -1))

    gains = []
    for seed in range(3):
        monkeypatch.setattr(calibration_module, "SIBLING_ENRICHMENT", 5.0)
        told, fpr, recall = fit(seed)
        monkeypatch.setattr(calibration_module, "SIBLING_ENRICHMENT", np.inf)  # the rule off
        kept, kept_fpr, kept_recall = fit(seed)
        assert kept.summary_.calibration_left_out == 0
        assert told.summary_.calibration_left_out > 0
        assert told.summary_.calibration_rows + told.summary_.calibration_left_out == \
            kept.summary_.calibration_rows
        # The same network; the threshold set on the normal held-out rows is lower,
        # with no more false alarms than the target allows.
        np.testing.assert_array_equal(told.score_samples(fresh), kept.score_samples(fresh))
        assert told.threshold_ < kept.threshold_
        assert kept_fpr <= fpr <= 0.02
        gains.append(recall - kept_recall)
    # It catches more of the group (single seeds: +0.11 to +0.39).
    assert np.mean(gains) >= 0.15, gains


def test_the_rows_left_out_of_the_threshold_are_reported(sibling_files):
    model = sibling_files / "siblings.vae"
    result = invoke("fit", sibling_files / "siblings.csv", "--model", model, "--exclude", "id",
                    "--known-anomalies", sibling_files / "siblings_known.csv")
    assert result.exit_code == 0, result.output
    left_out = json.loads(invoke("info", model, "--json").stdout)["training"][
        "calibration_left_out"]
    assert left_out > 0
    text = f"{left_out} more left out as near confirmed anomalies"
    tail = "an exponential tail above their 95th percentile"  # 586 kept scores, 29 above it
    assert f"(2 calibration fits; {text}; {tail}); saved" in result.stderr
    # The table wraps the threshold's cell: compare its words.
    info = " ".join(invoke("info", model).stdout.replace("│", " ").split())
    assert f"{text}, {tail})" in info
    report = invoke("report", model, "-o", sibling_files / "report.html")
    assert report.exit_code == 0, report.output
    assert f"{text}, {tail}" in (sibling_files / "report.html").read_text()


# ----- the threshold with confirmed rows: an exponential tail -------------------------

def exponential_scores(seed: int, n: int = 600) -> np.ndarray:
    """Held-out scores with an exponential tail: 5 + 2·Exp(1), so the 1% threshold
    is 5 + 2 ln 100 and a threshold t flags exp(-(t - 5) / 2) of new rows."""
    return np.sort(5 + 2 * np.random.default_rng(seed).standard_exponential(n))


def flagged_share(threshold: float) -> float:
    return float(np.exp(-(threshold - 5) / 2))


def test_the_tail_threshold_keeps_its_rate_where_a_few_siblings_top_the_scores():
    clean, dirty, order = [], [], []
    for seed in range(40):
        scores = exponential_scores(seed)
        clean.append(flagged_share(calibrated_threshold(scores, 0.01, TAIL_SHARE)))
        # Six unconfirmed siblings far above every normal row: the order statistic
        # becomes one of them and flags nothing.
        siblings = np.sort(np.r_[scores, 1000 + np.arange(6)])
        dirty.append(flagged_share(calibrated_threshold(siblings, 0.01, TAIL_SHARE)))
        order.append(flagged_share(threshold_at(siblings, 0.01)))
    assert 0.008 <= np.mean(clean) <= 0.014, np.mean(clean)
    assert 0.003 <= np.mean(dirty) <= np.mean(clean), np.mean(dirty)
    assert max(order) < 1e-100


def test_tail_p_values_flag_exactly_the_rows_above_the_tail_threshold():
    scores = exponential_scores(0)
    new = np.linspace(0, 40, 4001)
    p_values = calibrated_p_values(scores, new, TAIL_SHARE)
    for fpr in (0.01, 0.002):
        assert np.array_equal(new > calibrated_threshold(scores, fpr, TAIL_SHARE),
                              p_values < fpr)
    assert np.all(np.diff(p_values) <= 0)
    below = new <= exponential_tail(scores, TAIL_SHARE).start  # conformal there
    np.testing.assert_array_equal(p_values[below], conformal_p_values(scores, new[below]))


def test_without_a_tail_the_threshold_is_the_order_statistic():
    few = exponential_scores(1, 399)  # 19 scores above the 95th percentile: too few
    assert exponential_tail(few, TAIL_SHARE) is None
    assert calibrated_threshold(few, 0.01, TAIL_SHARE) == threshold_at(few, 0.01)
    scores, new = exponential_scores(2), np.linspace(0, 40, 401)
    assert calibrated_threshold(scores, 0.01, 0.0) == threshold_at(scores, 0.01)  # no confirmed rows
    np.testing.assert_array_equal(calibrated_p_values(scores, new, 0.0),
                                  conformal_p_values(scores, new))
    # A rate the tail does not reach comes from the order statistic.
    assert calibrated_threshold(scores, 0.1, TAIL_SHARE) == threshold_at(scores, 0.1)


def test_a_fit_with_confirmed_rows_keeps_its_tail_through_the_model_file(sibling_files,
                                                                          tmp_path):
    train = pd.read_csv(sibling_files / "siblings.csv")
    known = pd.read_csv(sibling_files / "siblings_known.csv")
    told = VAEAnomalyDetector(seed=0, exclude="id").fit(train, known_anomalies=known)
    calibration = told.calibration_scores_["elbo"]
    assert told.summary_.calibration_tail == TAIL_SHARE and len(calibration) >= 400
    assert told.threshold_ == calibrated_threshold(calibration, 0.01, TAIL_SHARE)
    assert told.threshold_ != threshold_at(calibration, 0.01)
    told.save(tmp_path / "told.vae")
    again = load(tmp_path / "told.vae")
    assert again.threshold_ == told.threshold_
    scored = again.score(train)
    pd.testing.assert_frame_equal(scored, told.score(train))
    assert np.array_equal(scored["is_anomaly"] == 1, scored["p_value"] < 0.01)
    plain = VAEAnomalyDetector(seed=0, exclude="id").fit(train)
    assert plain.summary_.calibration_tail == 0.0
    assert plain.threshold_ == threshold_at(plain.calibration_scores_["elbo"], 0.01)
