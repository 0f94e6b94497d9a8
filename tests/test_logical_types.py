"""logical_types.py: each column's logical type from its values, and every source's
cells mapped onto it (issue 38)."""

from __future__ import annotations

import datetime as dt
import decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from vae_anomaly.errors import InputError
from vae_anomaly.logical_types import (content_keys, logical_type, to_levels, to_numbers)
from vae_anomaly.preprocessing import Preprocessor


@pytest.mark.parametrize(("values", "expected"), [
    (pa.array([True, False, None]), "boolean"),
    (pa.array(["True", "false", "T", "f", "yes", "NO", ""]), "boolean"),
    (pa.array([0, 1, 1, None]), "boolean"),  # SQLite's booleans, pandas' 0/1 columns
    (pa.array(["1.0", "0.0", ""]), "boolean"),
    (pa.array([1, 2, 3]), "integer"),
    (pa.array([3.0, 4.0, float("nan")]), "integer"),
    (pa.array(["3.0", "4", ""]), "integer"),
    (pa.array(["12.50", "3.25"]), "decimal"),
    (pa.array([decimal.Decimal("12.50"), None], pa.decimal128(10, 2)), "decimal"),
    (pa.array([0.1 + 0.2, 1.5]), "floating"),
    (pa.array(["2024-06-01 01:00:00+00", "2024-06-01T13:45:07.25Z", "2024-06-01 13:45:07+05:30",
               "2024/06/01"]), "datetime"),
    (pa.array([dt.date(2024, 6, 1)]), "datetime"),
    (pa.array([dt.datetime(2024, 6, 1)], pa.timestamp("us", tz="UTC")), "datetime"),
    (pa.array(["red", "3", "yes"]), "text"),
    (pa.array(["yes", "2"]), "text"),  # a word and a number other than 0/1
])
def test_the_logical_type_comes_from_the_values_not_the_storage(values, expected):
    assert logical_type(values) == expected


def test_decimals_convert_exactly_where_arrows_own_cast_is_an_ulp_off():
    texts = [f"{v:.2f}" for v in np.random.default_rng(0).lognormal(3, 1, 500)]
    typed = pa.array([decimal.Decimal(t) for t in texts], pa.decimal128(20, 6))
    assert (pc.cast(typed, pa.float64()).to_numpy() != np.array(texts, float)).any()
    np.testing.assert_array_equal(to_numbers(typed, "decimal", "amount", "x"),
                                  np.array(texts, dtype=float))


def test_booleans_map_to_one_and_zero_in_every_spelling():
    text = pa.array(["True", "f", "YES", "no", "1", "0.0", "", None])
    np.testing.assert_array_equal(to_numbers(text, "boolean", "flag", "x"),
                                  [1, 0, 1, 0, 1, 0, np.nan, np.nan])
    np.testing.assert_array_equal(to_numbers(pa.array([True, None]), "boolean", "flag", "x"),
                                  [1, np.nan])
    with pytest.raises(InputError, match=r"column `flag` in x has 'maybe' at row 12, which is "
                                         r"not a boolean"):
        to_numbers(pa.array(["t", "maybe"]), "boolean", "flag", "x", first_row=10)
    with pytest.raises(InputError, match="holds true/false values, not numbers"):
        to_numbers(pa.array([True]), "integer", "count", "x")


def test_category_levels_are_canonical_text_whatever_the_source():
    assert to_levels(pa.array(["3.0", "4", "", "2.50"]), "integer", "code", "x").to_pylist() \
        == ["3", "4", None, "2.5"]
    assert to_levels(pa.array([3, None]), "integer", "code", "x").to_pylist() == ["3", None]
    assert to_levels(pa.array([3.0, np.nan]), "integer", "code", "x").to_pylist() == ["3", None]
    assert to_levels(pa.array([1, 0]), "boolean", "b", "x").to_pylist() == ["True", "False"]
    assert to_levels(pa.array(["t", "F"]), "boolean", "b", "x").to_pylist() == ["True", "False"]
    assert to_levels(pa.array(["red", ""]), "text", "c", "x").to_pylist() == ["red", None]


def test_timestamps_with_offsets_give_one_level_from_text_and_typed_columns():
    text = pa.array(["2024-06-01 01:00:00+00", "2024-06-01T06:30:00+05:30", "2024-06-01 01:00Z"])
    typed = pa.array([dt.datetime(2024, 6, 1, 1, tzinfo=dt.timezone.utc)] * 3,
                     pa.timestamp("us", tz="UTC"))
    expected = ["2024-06-01 01:00:00+00:00"] * 3
    assert to_levels(text, "datetime", "ts", "x").to_pylist() == expected
    assert to_levels(typed, "datetime", "ts", "x").to_pylist() == expected
    assert to_levels(pa.array(["2024-06-01"]), "datetime", "d", "x").to_pylist() \
        == to_levels(pa.array([dt.date(2024, 6, 1)]), "datetime", "d", "x").to_pylist() \
        == ["2024-06-01 00:00:00"]
    with pytest.raises(InputError, match=r"column `ts` in x has 'soon' at row 2, which is not "
                                         r"a date or time"):
        to_levels(pa.array(["2024-06-01", "soon"]), "datetime", "ts", "x")


def test_content_keys_depend_on_the_values_only():
    text = pd.DataFrame({"x": ["0.5", "", "1e3"], "flag": ["t", "f", "yes"],
                         "code": ["3.0", "4", ""], "c": ["a", "b", None]})
    typed = pd.DataFrame({"x": [0.5, np.nan, 1000.0], "flag": [1, 0, 1],
                          "code": pd.array([3, 4, None], dtype="Int64"), "c": ["a", "b", None]})
    fitted = Preprocessor().fit(text, categorical=["code"])
    keys = fitted.content_keys(text)
    np.testing.assert_array_equal(fitted.content_keys(typed), keys)
    assert len(set(keys.tolist())) == 3
    # -0.0 and 0.0, and NaNs of any payload, are one value.
    assert (content_keys([np.array([0.0, np.nan])], 2)
            == content_keys([np.array([-0.0, np.float64("nan") * -1])], 2)).all()


def test_integer_levels_keep_every_digit_from_text_and_typed_columns():
    text = pa.array(["007", "+3", "3.0", "-0", "100000000000000001", "", "2.5"])
    assert to_levels(text, "integer", "id", "x").to_pylist() == [
        "7", "3", "3", "0", "100000000000000001", None, "2.5"]
    typed = pa.array([7, 3, 100000000000000001, 100000000000000002, None])
    assert to_levels(typed, "integer", "id", "x").to_pylist() == [
        "7", "3", "100000000000000001", "100000000000000002", None]


def test_a_pandas_categorical_maps_as_its_values_do():
    values = pd.Series(pd.Categorical(["a", "", "b", None]))
    frame = pd.DataFrame({"c": values, "v": [1.0, 2.0, 3.0, 4.0]})
    fitted = Preprocessor().fit(frame)
    plain = frame.assign(c=values.astype(object))
    assert fitted.columns[0]["levels"] == Preprocessor().fit(plain).columns[0]["levels"]
    np.testing.assert_array_equal(fitted.transform(frame).categories,
                                  fitted.transform(plain).categories)


def test_decimals_are_written_to_csv_in_plain_notation():
    from vae_anomaly.data import csv_rows

    small = pa.array([decimal.Decimal("0"), decimal.Decimal("0.000000001"), None],
                     pa.decimal128(20, 9))
    assert csv_rows(pa.table({"d": small})) == b"0.000000000\n0.000000001\n\n"


def test_single_precision_floats_read_as_the_numbers_their_export_holds():
    """A PostgreSQL `real` or a pandas float32 column exports as 0.1, not as the float32's
    exact 0.100000001490116: the typed column and its CSV give one value."""
    typed = pa.array(np.array([0.1, 1 / 3, None], dtype=np.float32), from_pandas=True)
    exported = pc.cast(typed, pa.string())
    np.testing.assert_array_equal(to_numbers(typed, "floating", "r", "x"),
                                  to_numbers(exported, "floating", "r", "x"))
    assert to_numbers(typed, "floating", "r", "x")[0] == 0.1
