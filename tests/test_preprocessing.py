"""Column kinds, scaling, missing values, unseen categories, and the state round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import make_records
from vae_anomaly import VAEAnomalyDetector
from vae_anomaly.data import read_table, to_arrow
from vae_anomaly.errors import InputError
from vae_anomaly.preprocessing import MISSING_CODE, UNKNOWN_CODE, Preprocessor


@pytest.fixture()
def fitted():
    return Preprocessor().fit(make_records(300), exclude=["id"])


def test_kinds_come_from_the_data(fitted):
    kinds = {c["name"]: (c["kind"], c["logical"]) for c in fitted.columns}
    assert kinds == {"x": ("numeric", "decimal"), "y": ("numeric", "decimal"),
                     "amount": ("numeric", "decimal"), "colour": ("categorical", "text"),
                     "member": ("categorical", "boolean")}
    assert fitted.ignored == {"id": "excluded with --exclude"}


def test_categorical_option_overrides_a_numeric_column():
    pre = Preprocessor().fit(make_records(100), categorical=["x"], exclude=["id"])
    assert next(c for c in pre.columns if c["name"] == "x")["kind"] == "categorical"


def test_csv_text_and_typed_frames_encode_identically(fitted, tmp_path):
    frame = make_records(50, seed=5)
    frame.to_csv(tmp_path / "f.csv", index=False)
    from_text = fitted.transform(read_table(tmp_path / "f.csv"))
    from_typed = fitted.transform(frame)
    np.testing.assert_allclose(from_text.numeric, from_typed.numeric, rtol=1e-6)
    np.testing.assert_array_equal(from_text.categories, from_typed.categories)


def test_missing_numeric_becomes_median_plus_indicator(fitted):
    frame = make_records(5, seed=9)
    frame.loc[2, "amount"] = np.nan
    batch = fitted.transform(frame)
    amount = next(c for c in fitted.columns if c["name"] == "amount")
    assert fitted.layout.n_indicators == 1  # only `amount` had missing cells in training
    assert batch.indicators[2, 0] == 1 and batch.indicators[[0, 1, 3, 4], 0].sum() == 0
    at_median = frame.copy()
    at_median.loc[2, "amount"] = amount["median"]
    assert batch.numeric[2, 2] == fitted.transform(at_median).numeric[2, 2]
    # A missing cell has no value, so no density term: only its indicator counts.
    assert batch.nll_offset[2, 2] == 0.0 and np.all(batch.nll_offset[[0, 1, 3, 4], 2] != 0.0)


def _one_column(values) -> Preprocessor:
    return Preprocessor().fit(pd.DataFrame({"v": values}))


def test_quantile_map_makes_a_skewed_column_standard_normal():
    values = np.random.default_rng(0).lognormal(3.0, 1.2, 5000)
    scaled = _one_column(values).transform(pd.DataFrame({"v": values})).numeric[:, 0]
    assert abs(scaled.mean()) < 1e-3 and scaled.std() == pytest.approx(1.0, abs=1e-3)
    # Close to normal, not just standardised: a lognormal's skewness (about 13 here)
    # is nearly gone; 30 knots leave a little in the outermost segments.
    assert abs(((scaled - scaled.mean()) ** 3).mean()) < 0.3
    assert np.all(np.diff(scaled[np.argsort(values)]) >= 0)  # order is kept


def test_values_beyond_the_training_range_stay_finite_and_ordered():
    pre = _one_column(np.random.default_rng(1).normal(10, 2, 500))
    probe = np.array([-1e300, -1e6, -50.0, 0.0, 10.0, 25.0, 100.0, 1e6, 1e300])
    batch = pre.transform(pd.DataFrame({"v": probe}))
    assert np.all(np.isfinite(batch.numeric)) and np.all(np.isfinite(batch.nll_offset))
    assert np.all(np.diff(batch.numeric[:, 0]) > 0)
    # Farther out is less dense: the offset (-log slope) grows in both tails.
    offset = batch.nll_offset[:, 0]
    assert offset[0] > offset[1] > offset[2] and offset[-1] > offset[-2] > offset[-3]


def test_nll_offset_is_minus_the_log_slope_of_the_map():
    """The change of variables the score relies on: exp(-offset) = d scaled / d value."""
    pre = _one_column(np.random.default_rng(2).gamma(2.0, 3.0, 2000))
    knots = np.asarray(pre.columns[0]["knots"])
    probe = np.concatenate([(knots[:-1] + knots[1:]) / 2, [knots[-1] + 7.0, knots[0] - 3.0]])
    h = 1e-4 * pre.columns[0]["spread"]
    up, down = (pre.transform(pd.DataFrame({"v": probe + d})) for d in (h, -h))
    slope = (up.numeric[:, 0].astype(np.float64) - down.numeric[:, 0]) / (2 * h)
    offset = pre.transform(pd.DataFrame({"v": probe})).nll_offset[:, 0]
    np.testing.assert_allclose(np.exp(-offset), slope, rtol=2e-2)


def test_a_constant_column_maps_to_one_value_and_changes_stand_out():
    pre = _one_column(np.full(300, 7.0))
    batch = pre.transform(pd.DataFrame({"v": [7.0, 7.007, 8.0]}))
    assert np.all(np.isfinite(batch.numeric))
    assert batch.numeric[0, 0] < batch.numeric[1, 0] < batch.numeric[2, 0]
    assert batch.numeric[2, 0] - batch.numeric[0, 0] > 5  # 1.0 is 140 x the 0.1% spread


def test_a_format_1_column_state_still_encodes_with_asinh():
    """Model files written before the quantile map keep scoring as they did."""
    legacy = {"name": "v", "kind": "numeric", "median": 2.0, "spread": 4.0, "mean": 0.1,
              "std": 0.5, "has_missing": False, "min": -5.0, "max": 9.0, "missing_rate": 0.0}
    pre = Preprocessor.from_state({"max_levels": 100, "max_rare_levels": 5000,
                                   "columns": [legacy], "ignored": {}})
    batch = pre.transform(pd.DataFrame({"v": [2.0, 6.0, 1e9]}))
    expected = (np.arcsinh((np.array([2.0, 6.0, 1e9]) - 2.0) / 4.0) - 0.1) / 0.5
    np.testing.assert_allclose(batch.numeric[:, 0], expected, rtol=1e-6)
    np.testing.assert_array_equal(batch.nll_offset, 0.0)


def test_columns_without_a_logical_type_keep_the_mapping_they_were_trained_with():
    """Model files from before logical types: a category keeps its levels as the CSV
    text was ("3.0", "True"), and a numeric column still refuses true/false."""
    code = {"name": "code", "kind": "categorical", "levels": ["3.0", "4.0"],
            "rare_levels": [], "missing_rate": 0.0}
    pre = Preprocessor.from_state({"max_levels": 100, "max_rare_levels": 5000,
                                   "columns": [code], "ignored": {}})
    codes = pre.transform(pd.DataFrame({"code": ["3.0", "4.0", "3"]})).categories[:, 0]
    assert codes.tolist() == [3, 4, UNKNOWN_CODE]
    fitted_now = Preprocessor().fit(pd.DataFrame({"code": ["3.0", "4.0"] * 10}),
                                    categorical=["code"])
    assert fitted_now.columns[0]["levels"] == ["3", "4"]  # one level for 3, 3.0 and "3.0"
    legacy_number = {"name": "v", "kind": "numeric", "median": 0.0, "spread": 1.0, "mean": 0.0,
                     "std": 1.0, "has_missing": False, "min": 0.0, "max": 1.0,
                     "missing_rate": 0.0, "knots": [0.0, 1.0], "knot_scores": [-1.0, 1.0]}
    pre = Preprocessor.from_state({"max_levels": 100, "max_rare_levels": 5000,
                                   "columns": [legacy_number], "ignored": {}})
    with pytest.raises(InputError, match="holds true/false values, not numbers"):
        pre.transform(pd.DataFrame({"v": [True, False]}))
    with pytest.raises(ValueError, match="unknown logical type 'bool'"):
        Preprocessor.from_state({"max_levels": 100, "max_rare_levels": 5000,
                                 "columns": [{**code, "logical": "bool"}], "ignored": {}})


def test_unseen_and_missing_categories_get_their_own_codes(fitted):
    frame = make_records(3, seed=4)
    frame["colour"] = ["purple", None, "red"]
    codes = fitted.transform(frame).categories[:, 0]
    assert codes[0] == UNKNOWN_CODE and codes[1] == MISSING_CODE and codes[2] > MISSING_CODE


def test_heavy_tails_and_huge_values_stay_finite_and_ordered(fitted):
    frame = make_records(4, seed=4)
    frame["amount"] = [1.0, 1e6, 1e300, -1e308]
    scaled = fitted.transform(frame).numeric[:, 2]
    assert np.isfinite(scaled).all()
    assert scaled[3] < scaled[0] < scaled[1] < scaled[2]


def test_state_round_trips_through_json(fitted):
    state = json.loads(json.dumps(fitted.to_state()))
    rebuilt = Preprocessor.from_state(state)
    frame = make_records(40, seed=8)
    a, b = fitted.transform(frame), rebuilt.transform(frame)
    np.testing.assert_array_equal(a.numeric, b.numeric)
    np.testing.assert_array_equal(a.indicators, b.indicators)
    np.testing.assert_array_equal(a.categories, b.categories)


def test_id_like_text_column_is_ignored_with_a_note():
    pre = Preprocessor().fit(make_records(100))
    assert "id" in pre.ignored
    assert pre.notes == ["column `id` is ignored: it has a distinct value in every row, so it "
                         "looks like an id (pass --categorical id to use it)"]


def test_text_in_a_numeric_column_names_the_column_and_row(fitted):
    frame = make_records(5).astype(object)
    frame.loc[3, "y"] = "abc"
    with pytest.raises(InputError) as error:
        fitted.transform(frame, source="new.csv")
    assert str(error.value) == ("column `y` in new.csv has non-numeric value 'abc' at row 4; "
                                "fix the value or mark it missing")


def test_a_missing_feature_column_is_named(fitted):
    with pytest.raises(InputError) as error:
        fitted.transform(make_records(5).drop(columns=["amount"]), source="new.csv")
    assert str(error.value) == ("column `amount` is missing from new.csv "
                                "(the model was trained with it)")


def test_many_levels_are_capped_and_rare_ones_become_other():
    frame = pd.DataFrame({"code": [f"c{i % 150}" for i in range(3000)],
                          "v": np.arange(3000.0)})
    pre = Preprocessor(max_levels=100).fit(frame)
    spec = pre.columns[0]
    assert len(spec["levels"]) == 100 and len(spec["rare_levels"]) == 50
    codes = pre.transform(pd.DataFrame({"code": [spec["rare_levels"][0]], "v": [1.0]})).categories
    assert codes[0, 0] == 2  # OTHER_CODE


@pytest.mark.parametrize("rows, held_out", [(10, 3), (400, 120), (1000, 200), (5000, 500)])
def test_validation_size_keeps_enough_rows_to_place_the_threshold(rows, held_out):
    from vae_anomaly.calibration import validation_size
    assert validation_size(rows, 0.1) == held_out


def test_held_out_rows_take_no_part_in_the_scaling_or_the_levels():
    """They calibrate the threshold, so they must be as new to the fit as tomorrow's rows."""
    frame = make_records(300)
    detector = VAEAnomalyDetector(seed=3, epochs=2, exclude=["id"]).fit(frame)
    train_index, val_index = detector._split(len(frame))
    order = detector._in_canonical_order(to_arrow(frame), "x")[1]  # the rows as fit sees them
    alone = Preprocessor().fit(frame.iloc[order[train_index]], exclude=["id"])
    learned = ("median", "spread", "knots", "knot_scores", "mean", "std", "levels")
    for fitted_column, alone_column in zip(detector.preprocessor_.columns, alone.columns):
        assert ({k: fitted_column.get(k) for k in learned}
                == {k: alone_column.get(k) for k in learned})
    everything = Preprocessor().fit(frame, exclude=["id"])
    assert everything.columns[0]["knots"] != detector.preprocessor_.columns[0]["knots"]


def test_a_numeric_column_with_a_few_text_cells_is_categorical_with_a_note():
    frame = make_records(200).astype({"x": str})
    frame.loc[6, "x"] = "n/a?"
    frame.loc[9, "x"] = "about 3"
    pre = Preprocessor().fit(frame, exclude=["id"])
    assert {c["name"]: c["kind"] for c in pre.columns}["x"] == "categorical"
    assert ("column `x` is treated as categorical: it holds numbers but 2 of its 200 values "
            "are not numbers (the first: 'n/a?' at row 7); fix them or leave them empty to use "
            "the column as numbers") in pre.notes
    # Real text columns, numbers written as 1e3, .5, -2 or inf, and --categorical get no note.
    plain = make_records(200).astype({"x": str})
    plain.loc[:4, "x"] = ["1e3", ".5", "-2", "inf", "7\u00a0"]  # NBSP: trimmed, as parsing does
    plain.loc[5, "x"] = "text"
    assert [n for n in Preprocessor().fit(plain, exclude=["id"]).notes if "`x`" in n] == [
        "column `x` is treated as categorical: it holds numbers but 1 of its 200 values is not "
        "a number (the first: 'text' at row 6); fix them or leave them empty to use the column "
        "as numbers"]
    # Unrounded floats differ in every row: with a typo they are no id, and the reason says so.
    floats = make_records(200).assign(amount=[f"{v:.6f}" for v in np.linspace(1, 2, 200)])
    floats.loc[6, "amount"] = "1..5"
    assert Preprocessor().fit(floats, exclude=["id"]).ignored["amount"] == (
        "it holds numbers but 1 of its 200 values is not a number (the first: '1..5' at row 7); "
        "fix them or leave them empty to use the column as numbers")
    assert not [n for n in Preprocessor().fit(frame, exclude=["id"], categorical=["x"]).notes
                if "`x`" in n]
    assert not [n for n in Preprocessor().fit(make_records(200), exclude=["id"]).notes
                if "`colour`" in n]


def test_typed_columns_decimals_are_numbers_and_lists_are_ignored_with_a_reason():
    import decimal

    import pyarrow as pa

    rng = np.random.default_rng(0)
    table = pa.table({
        "x": rng.normal(size=60),
        "price": pa.array([decimal.Decimal(f"{v:.2f}") for v in rng.uniform(0, 100, 60)],
                          pa.decimal128(10, 2)),
        "tags": pa.array([[i % 3] for i in range(60)]),
    })
    pre = Preprocessor().fit(table)
    assert {c["name"]: c["kind"] for c in pre.columns} == {"x": "numeric", "price": "numeric"}
    kind = table.schema.field("tags").type  # list<item: int64> (list<element: ...> from Parquet)
    assert pre.ignored == {"tags": f"it holds {kind} values, not numbers or categories"}
    with pytest.raises(InputError) as error:
        Preprocessor().fit(table, categorical=["tags"])
    assert str(error.value) == (f"column `tags` holds {kind} values, which cannot be "
                                "categories; drop --categorical tags")
    with pytest.raises(InputError) as error:
        Preprocessor().fit(table, categorical=["x"], exclude=["x"])
    assert str(error.value) == ("column `x` is named by both --categorical and --exclude; keep "
                                "the one you mean")


def test_date_columns_are_left_out_with_a_note_unless_forced_categorical():
    import pyarrow as pa

    frame = make_records(60)
    frame["day"] = ["2024-06-0%d" % (1 + i % 3) for i in range(60)]  # 3 levels: not id-like
    frame["stamp"] = pd.Timestamp("2024-06-01") + pd.to_timedelta(np.arange(60) % 5, unit="h")
    frame.loc[3, "day"] = ""  # missing cells do not stop a column counting as dates
    pre = Preprocessor().fit(frame, exclude=["id"])
    assert set(pre.ignored) == {"id", "day", "stamp"}
    assert pre.ignored["day"] == (
        "it holds dates or times, and each new file brings dates that training never saw "
        "(derive numbers such as the hour or weekday to use them, or pass --categorical day)")
    assert pa.types.is_timestamp(pa.Table.from_pandas(frame).schema.field("stamp").type)
    forced = Preprocessor().fit(frame, exclude=["id"], categorical=["day"])
    assert {c["name"]: c["kind"] for c in forced.columns}["day"] == "categorical"
    # A text column with one cell that is not a date is ordinary text.
    frame.loc[5, "day"] = "soon"
    assert "day" not in Preprocessor().fit(frame, exclude=["id"]).ignored


def test_a_number_an_ulp_beside_a_knot_maps_as_the_knot():
    """A lossy export of a training value (15 digits) scores as the value itself: on a
    knot the map's slope is the mean of its two segments', not one side's."""
    values = np.random.default_rng(0).normal(size=500)
    pre = Preprocessor().fit(pd.DataFrame({"v": values}))
    knot = pre.columns[0]["knots"][10]
    beside = [knot, np.nextafter(knot, np.inf), float(f"{knot:.15g}"), knot * (1 + 1e-9)]
    batch = pre.transform(pd.DataFrame({"v": beside}))
    assert batch.numeric[0, 0] == batch.numeric[1, 0] == batch.numeric[2, 0]
    assert batch.nll_offset[0, 0] == batch.nll_offset[1, 0] == batch.nll_offset[2, 0]
    assert batch.nll_offset[3, 0] != batch.nll_offset[0, 0]  # 1e-9 off is another value


def test_a_boolean_counts_as_one_input_in_the_networks_size():
    """Booleans are categories (a one-hot block of 5: two levels and the reserved three),
    but size the network as one input each, as they did as 0/1 numbers."""
    from vae_anomaly.model import VAEConfig

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"b{i}": rng.random(300) < 0.3 for i in range(40)})
    frame["v"] = rng.normal(size=300)
    layout = Preprocessor().fit(frame).layout
    assert layout.category_sizes == [5] * 40 and layout.input_dim == 201
    assert layout.sizing_inputs == 41
    config = VAEConfig.sized_for(layout.n_numeric, layout.n_indicators, layout.category_sizes,
                                 None, layout.sizing_inputs)
    assert (config.hidden_dims, config.latent_dim) == ([82, 41], 10)
