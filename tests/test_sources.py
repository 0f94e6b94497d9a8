"""One meaning per column, from every source (issue 38): the same generated rows,
through CSV, compressed CSV, Parquet, standard input, a real PostgreSQL table,
SQLite written by pandas and by the sqlite3 shell's `.import`, pandas and numpy,
give the same model as the CSV (weights, threshold, column specs: the model files
differ at most in the source name, the creation time and the fit's seconds) and
the same per-row scores, bit for bit, in shuffled order too.

The rows hold every logical type: floating (full float64 digits), decimal (two
places, some cells missing), integer (missing cells), an integer-coded category
(pandas writes it as 3.0 in CSV), a boolean, text, a timestamp with an offset (left
out as dates, from every source alike) and a row id (excluded).
"""

from __future__ import annotations

import decimal
import gzip
import json
import shutil
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

# The PostgreSQL server test_sql.py starts (this module gets its own), and PGPASSWORD.
from test_sql import env, postgres  # noqa: F401
from vae_anomaly import VAEAnomalyDetector, load
from vae_anomaly.api import fit_file, score_file
from vae_anomaly.errors import InputError

OPTIONS = {"epochs": 3, "seed": 0, "calibration_fits": 0, "exclude": ["rid"],
           "categorical": ["code"]}
FEATURES = ["x", "y", "amount", "n_items", "code", "flag", "colour", "ts"]
PG_COLUMNS = ("rid integer, x double precision, y double precision, amount numeric(12, 2), "
              "n_items integer, code integer, flag boolean, colour text, ts timestamptz")
SQLITE_COLUMNS = ("rid INTEGER, x REAL, y REAL, amount REAL, n_items INTEGER, code INTEGER, "
                  "flag BOOLEAN, colour TEXT, ts TEXT")


def source_rows(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    frame = pd.DataFrame({
        "rid": np.arange(n),
        "x": x,
        "y": 2 * x + rng.normal(scale=0.1, size=n),
        "amount": rng.lognormal(3, 1, size=n).round(2),
        "n_items": pd.array(rng.integers(1, 6, size=n), dtype="Int64"),
        "code": rng.integers(1, 8, size=n).astype(float),  # float with NaN, as pandas has it
        "flag": (x + rng.normal(scale=0.5, size=n)) > 0,
        "colour": np.where(x > 0, "red", "blue"),
        "ts": pd.Timestamp("2024-06-01", tz="UTC") + pd.to_timedelta(np.arange(n) % 48, unit="h"),
    })
    frame.loc[rng.random(n) < 0.05, "amount"] = np.nan
    frame.loc[rng.random(n) < 0.05, "n_items"] = pd.NA
    frame.loc[rng.random(n) < 0.05, "code"] = np.nan
    return frame


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return source_rows()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, rows) -> Path:
    """train.csv as pandas writes it (code as 3.0), and load.csv, the same rows with
    code as 3 for typed database columns."""
    folder = tmp_path_factory.mktemp("sources")
    rows.to_csv(folder / "train.csv", index=False)
    rows.astype({"code": "Int64"}).to_csv(folder / "load.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def reference(folder) -> Path:
    model = folder / "csv.vae"
    fit_file(folder / "train.csv", model, **OPTIONS)
    return model


def model_contents(path: Path) -> tuple[dict, dict]:
    """A model file's tensors (as bytes) and its metadata, less what may differ
    between two fits of the same rows: the creation time and the fit's seconds."""
    payload = path.read_bytes()
    (length,) = struct.unpack("<Q", payload[:8])
    header = json.loads(payload[8:8 + length])
    meta = json.loads(header.pop("__metadata__")["vae_anomaly"])
    tensors = {name: payload[8 + length + spec["data_offsets"][0]:
                             8 + length + spec["data_offsets"][1]]
               for name, spec in header.items()}
    meta.pop("created")
    meta["training"].pop("seconds")
    for epoch in meta["training"]["history"]:
        epoch.pop("seconds", None)
    # Which rows robust training judged anomalous, by their row numbers in the source.
    tensors.pop("training_outliers.rows")
    return tensors, meta


def assert_same_model(path: Path, reference: Path) -> None:
    tensors, meta = model_contents(path)
    expected_tensors, expected_meta = model_contents(reference)
    assert meta == expected_meta
    assert tensors.keys() == expected_tensors.keys()
    for name in tensors:
        assert tensors[name] == expected_tensors[name], name


def scores_by_row(scored: pd.DataFrame) -> np.ndarray:
    return scored.sort_values("rid")["anomaly_score"].to_numpy()


@pytest.fixture(scope="module")
def expected_scores(folder, reference) -> np.ndarray:
    out = folder / "csv.scored.csv"
    score_file(folder / "train.csv", reference, output=out)
    return scores_by_row(pd.read_csv(out))


def shuffled(frame: pd.DataFrame, seed: int = 7) -> pd.DataFrame:
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


# ----- files and pipes ---------------------------------------------------------------------
def write_parquet(rows: pd.DataFrame, path: Path) -> None:
    """Typed as Parquet holds such rows: code as integers, amount as decimal(12, 2)."""
    table = pa.Table.from_pandas(rows.astype({"code": "Int64"}), preserve_index=False)
    amounts = [None if pd.isna(v) else decimal.Decimal(f"{v:.2f}") for v in rows["amount"]]
    table = table.set_column(table.schema.get_field_index("amount"), "amount",
                             pa.array(amounts, pa.decimal128(12, 2)))
    pq.write_table(table, path)


@pytest.mark.parametrize("order", ["as written", "shuffled"])
@pytest.mark.parametrize("kind", ["csv.gz", "parquet", "stdin"])
def test_files_and_pipes_give_the_csv_model_and_scores(kind, order, rows, folder, reference,
                                                       expected_scores, tmp_path):
    frame = rows if order == "as written" else shuffled(rows)
    if kind == "csv.gz":
        data = tmp_path / "train.csv.gz"
        with gzip.open(data, "wt", newline="") as stream:
            frame.to_csv(stream, index=False)
    elif kind == "parquet":
        data = tmp_path / "train.parquet"
        write_parquet(frame, data)
    else:
        data = tmp_path / "train.csv"
        frame.to_csv(data, index=False)
    model = tmp_path / "m.vae"
    if kind == "stdin":
        args = [sys.executable, "-m", "vae_anomaly", "fit", "-", "--model", str(model), "-q",
                "--epochs", "3", "--seed", "0", "--calibration-fits", "0", "--exclude", "rid",
                "--categorical", "code"]
        with open(data, "rb") as stream:
            done = subprocess.run(args, stdin=stream, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    else:
        fit_file(data, model, **OPTIONS)
    assert_same_model(model, reference)
    out = tmp_path / "scored.csv"
    score_file(data, reference, output=out)
    np.testing.assert_array_equal(scores_by_row(pd.read_csv(out)), expected_scores)


def test_a_shuffled_csv_gives_the_same_training_outliers_by_row(rows, folder, tmp_path):
    """The outliers name the rows of the file as given, whatever their order."""
    order = np.random.default_rng(3).permutation(len(rows))
    rows.to_csv(tmp_path / "a.csv", index=False)
    rows.iloc[order].to_csv(tmp_path / "b.csv", index=False)
    found = {}
    for name in ("a", "b"):
        # A fixed share: robust training leaves 5% of the rows out of the gradient.
        fit_file(tmp_path / f"{name}.csv", tmp_path / f"{name}.vae", contamination=0.05,
                 training_outliers=tmp_path / f"{name}.out.csv", **{**OPTIONS, "epochs": 10})
        found[name] = pd.read_csv(tmp_path / f"{name}.out.csv")
    assert len(found["a"]) >= 10
    assert sorted(found["a"]["rid"]) == sorted(found["b"]["rid"])
    # Each 1-based row number points at its row in its own file.
    for name, ids in (("a", rows["rid"].to_numpy()), ("b", rows["rid"].to_numpy()[order])):
        np.testing.assert_array_equal(ids[found[name]["row"] - 1], found[name]["rid"])


# ----- Python -------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["as written", "shuffled", "Decimal objects"])
def test_a_pandas_frame_gives_the_csv_model_and_scores(form, rows, folder, reference,
                                                       expected_scores, tmp_path):
    frame = rows if form == "as written" else shuffled(rows)
    if form == "Decimal objects":  # as a database driver hands numeric values to pandas
        frame = frame.assign(amount=[None if pd.isna(v) else decimal.Decimal(f"{v:.2f}")
                                     for v in frame["amount"]])
    detector = VAEAnomalyDetector(**OPTIONS).fit(frame)
    detector.save(tmp_path / "m.vae")
    assert_same_model(tmp_path / "m.vae", reference)
    scored = load(reference).score(frame).assign(rid=frame["rid"].to_numpy())
    np.testing.assert_array_equal(scores_by_row(scored), expected_scores)


def test_a_numpy_array_gives_the_model_of_the_csv_with_its_columns_named_x0(rows, tmp_path):
    """numpy input names its columns x0, x1, ...: the same rows in a CSV with those
    names give the same model."""
    names = {name: f"x{i}" for i, name in enumerate(rows.columns)}
    renamed = rows.rename(columns=names)
    renamed.to_csv(tmp_path / "named.csv", index=False)
    options = {**OPTIONS, "exclude": [names["rid"]], "categorical": [names["code"]]}
    fit_file(tmp_path / "named.csv", tmp_path / "csv.vae", **options)
    array = rows.astype(object).where(rows.notna(), None).to_numpy()
    for order in (np.arange(len(array)), np.random.default_rng(1).permutation(len(array))):
        detector = VAEAnomalyDetector(**options).fit(array[order])
        detector.save(tmp_path / "numpy.vae")
        tensors, meta = model_contents(tmp_path / "numpy.vae")
        expected_tensors, expected_meta = model_contents(tmp_path / "csv.vae")
        assert tensors == expected_tensors
        assert meta["preprocessing"] == expected_meta["preprocessing"]
        assert meta["thresholds"] == expected_meta["thresholds"]
        np.testing.assert_array_equal(
            detector.score_samples(array),
            -load(tmp_path / "csv.vae").score(renamed)["anomaly_score"].to_numpy())


def test_each_column_has_the_logical_type_of_its_values(reference):
    columns = {c["name"]: c for c in load(reference).preprocessor_.columns}
    assert {name: (c["kind"], c["logical"]) for name, c in columns.items()} == {
        "x": ("numeric", "floating"), "y": ("numeric", "floating"),
        "amount": ("numeric", "decimal"), "n_items": ("numeric", "integer"),
        "code": ("categorical", "integer"), "flag": ("categorical", "boolean"),
        "colour": ("categorical", "text")}
    assert columns["amount"]["decimal_places"] == 2
    assert sorted(columns["code"]["levels"]) == [str(level) for level in range(1, 8)]
    assert sorted(columns["flag"]["levels"]) == ["False", "True"]
    assert load(reference).preprocessor_.ignored["ts"].startswith("it holds dates or times")


# ----- databases ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_rows(postgres, folder):  # noqa: F811
    postgres.load_csv("src", folder / "load.csv", PG_COLUMNS)
    postgres.psql("ALTER TABLE src OWNER TO scorer")
    return postgres


def sqlite_by_pandas(rows: pd.DataFrame, path: Path) -> str:
    with sqlite3.connect(path) as connection:
        rows.assign(ts=rows["ts"].astype(str)).to_sql("src", connection, index=False)
    return f"sqlite:///{path}"


def sqlite_by_shell(csv: Path, path: Path, typed: bool) -> str:
    if shutil.which("sqlite3") is None:
        pytest.skip("the sqlite3 shell is not installed (apt-get install sqlite3)")
    commands = ([f"CREATE TABLE src ({SQLITE_COLUMNS});", ".import --csv --skip 1 "
                 f"{csv} src"] if typed else [f".import --csv {csv} src"])
    subprocess.run(["sqlite3", str(path), *commands], check=True, capture_output=True,
                   timeout=60)
    return f"sqlite:///{path}"


def database(kind: str, rows: pd.DataFrame, folder: Path, tmp_path: Path, request) -> str:
    if kind == "postgresql":
        return request.getfixturevalue("pg_rows").url
    if kind == "sqlite by pandas":
        return sqlite_by_pandas(rows, tmp_path / "shop.db")
    return sqlite_by_shell(folder / "train.csv", tmp_path / "shop.db",
                           typed=kind == "sqlite .import, typed table")


DATABASES = ["postgresql", "sqlite by pandas", "sqlite .import, typed table",
             "sqlite .import, text table"]


@pytest.mark.parametrize("order", ["ORDER BY rid", "ORDER BY random()"])
@pytest.mark.parametrize("kind", DATABASES)
def test_databases_give_the_csv_model_and_scores(kind, order, rows, folder, reference,
                                                 expected_scores, tmp_path, env, request):
    url = database(kind, rows, folder, tmp_path, request)
    query = f"SELECT * FROM src {order}"
    fit_file(url, tmp_path / "m.vae", query=query, **OPTIONS)
    assert_same_model(tmp_path / "m.vae", reference)
    score_file(url, reference, query=query, output=tmp_path / "scored.csv")
    np.testing.assert_array_equal(scores_by_row(pd.read_csv(tmp_path / "scored.csv")),
                                  expected_scores)


def test_a_postgresql_table_exported_by_psql_scores_as_the_table(pg_rows, tmp_path, env):
    """The round trip of the issue: \\copy the table to CSV (t/f booleans, +00
    offsets), fit on the CSV, score the table: as many flags as scoring the CSV."""
    export = tmp_path / "export.csv"
    pg_rows.psql(f"\\copy (SELECT * FROM src ORDER BY rid) TO '{export}' CSV HEADER")
    assert ",t," in export.read_text() and "+00" in export.read_text()
    # A share, so that the threshold flags 5% of the training rows (15 of 300).
    fit_file(export, tmp_path / "m.vae", contamination=0.05, **{**OPTIONS, "epochs": 10})
    score_file(export, tmp_path / "m.vae", output=tmp_path / "csv.scored.csv")
    score_file(pg_rows.url, tmp_path / "m.vae", query="SELECT * FROM src",
               output=tmp_path / "table.scored.csv")
    from_csv, from_table = (pd.read_csv(tmp_path / name) for name in
                            ("csv.scored.csv", "table.scored.csv"))
    assert from_table["is_anomaly"].sum() == from_csv["is_anomaly"].sum() == 15
    np.testing.assert_array_equal(scores_by_row(from_table), scores_by_row(from_csv))


def test_a_sqlite_table_written_by_pandas_scores_as_the_csv(rows, folder, tmp_path):
    url = sqlite_by_pandas(rows, tmp_path / "shop.db")
    fit_file(folder / "train.csv", tmp_path / "m.vae", contamination=0.05,
             **{**OPTIONS, "epochs": 10})
    score_file(folder / "train.csv", tmp_path / "m.vae", output=tmp_path / "csv.scored.csv")
    score_file(url, tmp_path / "m.vae", query="SELECT * FROM src",
               output=tmp_path / "table.scored.csv")
    from_csv, from_table = (pd.read_csv(tmp_path / name) for name in
                            ("csv.scored.csv", "table.scored.csv"))
    assert from_table["is_anomaly"].sum() == from_csv["is_anomaly"].sum() == 15
    np.testing.assert_array_equal(scores_by_row(from_table), scores_by_row(from_csv))


def test_a_sqlite_table_exported_by_its_shell_scores_as_the_table(rows, tmp_path):
    """SQLite's round trip: the shell's CSV export (0/1 booleans, REAL in 15 digits),
    fit on it, score the table: as many flags as scoring the export."""
    if shutil.which("sqlite3") is None:
        pytest.skip("the sqlite3 shell is not installed (apt-get install sqlite3)")
    url = sqlite_by_pandas(rows, tmp_path / "shop.db")
    export = tmp_path / "export.csv"
    with open(export, "w") as stream:
        subprocess.run(["sqlite3", "-header", "-csv", str(tmp_path / "shop.db"),
                        "SELECT * FROM src ORDER BY rid"], stdout=stream, check=True, timeout=60)
    assert ",1," in export.read_text()  # booleans as SQLite holds them
    fit_file(export, tmp_path / "m.vae", contamination=0.05, **{**OPTIONS, "epochs": 10})
    score_file(export, tmp_path / "m.vae", output=tmp_path / "csv.scored.csv")
    score_file(url, tmp_path / "m.vae", query="SELECT * FROM src",
               output=tmp_path / "table.scored.csv")
    from_csv, from_table = (pd.read_csv(tmp_path / name) for name in
                            ("csv.scored.csv", "table.scored.csv"))
    assert from_table["is_anomaly"].sum() == from_csv["is_anomaly"].sum() == 15
    # The export's 15 digits are not the table's doubles: a number beside a knot of the
    # quantile map still takes the knot's slope (preprocessing.KNOT_TOLERANCE).
    np.testing.assert_allclose(scores_by_row(from_table), scores_by_row(from_csv), rtol=1e-9)


# ----- cells that cannot be mapped ---------------------------------------------------------
@pytest.mark.parametrize(("column", "value", "message"), [
    ("flag", "maybe", "column `flag` in new.csv has 'maybe' at row 4, which is not a boolean "
                      "(the model was trained with true/false values); use true/false, t/f, "
                      "yes/no or 1/0, or leave the cell empty"),
    ("code", "seven", "column `code` in new.csv has non-numeric value 'seven' at row 4; fix "
                      "the value or mark it missing"),
    ("x", "1,5", "column `x` in new.csv has non-numeric value '1,5' at row 4; fix the value "
                 "or mark it missing"),
])
def test_a_cell_that_cannot_be_mapped_onto_its_type_is_a_one_line_error(column, value, message,
                                                                        rows, reference,
                                                                        tmp_path):
    new = rows.head(10).astype({column: object})
    new.loc[3, column] = value
    new.to_csv(tmp_path / "new.csv", index=False)
    with pytest.raises(InputError) as error:
        score_file(tmp_path / "new.csv", reference, output=tmp_path / "out.csv")
    assert str(error.value) == message
    assert not (tmp_path / "out.csv").exists()


def test_booleans_are_read_in_every_spelling(rows, reference):
    detector = load(reference)
    expected = detector.score(rows)["anomaly_score"].to_numpy()
    for true, false in (("True", "False"), ("true", "false"), ("t", "f"), ("YES", "no"),
                        ("1", "0"), ("1.0", "0.0")):
        spelled = rows.assign(flag=np.where(rows["flag"], true, false))
        np.testing.assert_array_equal(detector.score(spelled)["anomaly_score"].to_numpy(),
                                      expected)
    as_numbers = rows.assign(flag=rows["flag"].astype(int))
    np.testing.assert_array_equal(detector.score(as_numbers)["anomaly_score"].to_numpy(),
                                  expected)
