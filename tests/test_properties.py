"""Property tests: any small table either fits and scores, or fails with one of the
library's own errors and a one-line message. Nothing else (no IndexError, no
ValueError from numpy, no NaN score) is acceptable.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.csv as pa_csv
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from vae_anomaly import VAEAnomalyError, load
from vae_anomaly.api import fit_file, score_file

KINDS = ("float", "extreme", "int", "text", "bool", "empty")
EXTREMES = [0.0, -0.0, 5e-324, -5e-324, 1e-300, -1e-300, 1e300, -1e300,
            1.7976931348623157e308, -1.7976931348623157e308, 2.0**53 + 1, math.nan]
TEXTS = ["", " ", "a", "b", "B", "é", "日本", "🙂", "NA", "null", "1", "2.5", "x,y", 'q"uote',
         "two\nlines", "tab\there", "\u200b"]

floats = st.one_of(st.floats(allow_infinity=False, allow_nan=True), st.sampled_from(EXTREMES))
ints = st.one_of(st.integers(-1000, 1000), st.integers(-(2**63), 2**63 - 1))
texts = st.one_of(st.sampled_from(TEXTS), st.text(max_size=4))
# Columns made only of values near the ends of float64, where medians, spreads and
# differences overflow unless computed with care.
edges = st.sampled_from([1.7976931348623157e308, -1.7976931348623157e308, 1e308, -1e308,
                         5e-324, math.nan])
VALUES = {"float": floats, "extreme": edges, "int": ints, "text": texts,
          "bool": st.booleans()}


@st.composite
def tables(draw):
    """Two frames with the same columns of the same kinds: (train, new)."""
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=5))
    n_train = draw(st.integers(5, 40))
    n_new = draw(st.integers(0, 40))

    def column(kind, n):
        if kind == "empty":
            return pd.Series([None] * n, dtype=object)
        values = draw(st.lists(st.one_of(st.none(), VALUES[kind]) if draw(st.booleans())
                               else VALUES[kind], min_size=n, max_size=n))
        if kind == "int":
            return pd.Series(values, dtype="Int64")
        if kind in ("float", "extreme"):
            return pd.Series(values, dtype="float64")
        return pd.Series(values, dtype=object)

    names = [f"c{i}_{kind}" for i, kind in enumerate(kinds)]
    train = pd.DataFrame({name: column(kind, n_train) for name, kind in zip(names, kinds)})
    new = pd.DataFrame({name: column(kind, n_new) for name, kind in zip(names, kinds)})
    return train, new


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Each example trains a network of a few hundred weights: threads only add overhead."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _write(frame: pd.DataFrame, path: Path) -> None:
    # Quote every text cell, so that e.g. a lone "\r" in a value cannot split a row:
    # the file means exactly the frame.
    frame.to_csv(path, index=False, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")


def _assert_own_error(error: BaseException) -> None:
    assert isinstance(error, VAEAnomalyError), f"{type(error).__name__}: {error}"
    message = str(error)
    assert message.strip() and "\n" not in message and "\r" not in message, repr(message)
    assert "Traceback" not in message


def _gist(error: BaseException) -> str:
    """The message without its numbers, to group outcomes in --hypothesis-show-statistics."""
    return re.sub(r"\d+", "N", str(error))[:60]


@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(tables())
def test_any_small_table_fits_and_scores_or_fails_with_a_clean_error(tmp_path, pair):
    train, new = pair
    train_csv, new_csv = tmp_path / "train.csv", tmp_path / "new.csv"
    model, output = tmp_path / "model.vae", tmp_path / "out.csv"
    for path in (model, output):
        path.unlink(missing_ok=True)
    _write(train, train_csv)
    _write(new, new_csv)
    try:
        fit_file(train_csv, model, epochs=1, seed=0)
    except Exception as error:  # noqa: BLE001 - the property is about which errors
        _assert_own_error(error)
        event("fit refused: " + _gist(error))
        assert not model.exists()
        return
    try:
        result = score_file(new_csv, model, output=output)
    except Exception as error:  # noqa: BLE001
        _assert_own_error(error)
        event("score refused: " + _gist(error))
        assert not output.exists()
        return
    event("fitted and scored")
    assert result.rows == len(new)
    table = pa_csv.read_csv(output, parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                            convert_options=pa_csv.ConvertOptions(
                                column_types={name: "string" for name in new.columns}))
    assert table.num_rows == len(new)
    assert table.column_names[:len(new.columns)] == list(new.columns)
    if len(new):
        for column in ("anomaly_score", "reconstruction_nll", "kl_divergence", "p_value"):
            values = np.asarray(table.column(column).to_pylist(), dtype=float)
            assert np.isfinite(values).all(), (column, values)


finite = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                   st.sampled_from([1e300, -1e300, 1.7976931348623157e308, 5e-324, 0.0]))


@st.composite
def tiny_frames(draw):
    n = draw(st.integers(1, 20))
    numbers = st.lists(finite, min_size=n, max_size=n)
    return pd.DataFrame({
        "id": [f"Q{i}" for i in range(n)],
        "x": draw(numbers), "y": draw(numbers), "amount": draw(numbers),
        "colour": draw(st.lists(st.sampled_from(["red", "blue", "green", ""]),
                                min_size=n, max_size=n)),
        "member": draw(st.lists(st.booleans(), min_size=n, max_size=n)),
    })


@pytest.fixture(scope="module")
def tiny_detector(tiny_model):
    return load(tiny_model)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(tiny_frames())
def test_any_finite_numbers_get_finite_scores(tiny_detector, frame):
    result = tiny_detector.score(frame)
    assert len(result) == len(frame)
    for column in ("anomaly_score", "reconstruction_nll", "kl_divergence", "p_value"):
        assert np.isfinite(result[column].to_numpy(dtype=float)).all(), (column, result)
