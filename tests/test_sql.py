"""Databases in and out (issue 30): a real PostgreSQL server and SQLite files.

One PostgreSQL 15 server serves the whole session: `initdb` into a temporary folder
owned by the `postgres` user (PostgreSQL refuses to run as root), listening only on
a Unix socket in that folder. Its role `scorer` has a password, which reaches the
tool only through PGPASSWORD, as the docs advise. Tables are set up and checked
with `psql`; the tool reads and writes them through its ADBC drivers (the `sql`
extra). The tests skip only where `initdb` is absent, and the SQLite `.import` tests
(SQLite files need no server) where the `sqlite3` shell is.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from conftest import make_records
from vae_anomaly.cli import app
from vae_anomaly.sql import read_source, read_source_table

PASSWORD = "pw-Secret-42"
# Debian and Ubuntu keep the server's programs off PATH, in /usr/lib/postgresql/N/bin.
PG_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
runner = CliRunner()
SCORES = ["anomaly_score", "is_anomaly", "p_value", "reconstruction_nll", "kl_divergence",
          "score_std_error"]


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    for folder in PG_BINS:
        if found is None and (folder / name).exists():
            found = str(folder / name)
    return found


class Postgres:
    def __init__(self, folder: Path, port: int):
        self.folder, self.port = folder, port
        self.url = f"postgresql://scorer@/shop?host={folder}&port={port}"

    def psql(self, sql: str, *, user: str = "postgres", db: str = "shop", check=True) -> str:
        done = subprocess.run(
            [_tool("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h",
             str(self.folder), "-p", str(self.port), "-U", user, "-d", db, "-c", sql],
            capture_output=True, text=True, env={**os.environ, "PGPASSWORD": PASSWORD},
            timeout=60)
        if check:
            assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def load_csv(self, table: str, csv: Path, columns: str) -> None:
        self.psql(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({columns})")
        self.psql(f"\\copy {table} FROM '{csv}' WITH (FORMAT csv, HEADER)")

    def frame(self, sql: str) -> pd.DataFrame:
        text = self.psql(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER)")
        from io import StringIO
        return pd.read_csv(StringIO(text), dtype=str, keep_default_na=False)

    def count(self, table: str) -> int:
        return int(self.psql(f"SELECT count(*) FROM {table}"))

    def fingerprint(self, table: str) -> str:
        return self.psql(f"SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY "
                         f"t::text)) FROM {table} t")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="session")
def postgres():
    initdb = _tool("initdb")
    if initdb is None:
        pytest.skip("PostgreSQL's initdb is not installed (apt-get install postgresql)")
    pg_ctl = _tool("pg_ctl")
    # Not under pytest's own temp folder: its 0700 parents would keep `postgres` out.
    folder = Path(tempfile.mkdtemp(prefix="vae-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", _free_port()
    subprocess.run(_as_postgres([initdb, "-D", str(data), "-U", "postgres", "-A", "trust"]),
                   check=True, capture_output=True, timeout=120)
    # The superuser may use the socket freely; everyone else needs a password.
    (data / "pg_hba.conf").write_text("local all postgres trust\nlocal all all scram-sha-256\n")
    subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-w",
                                 "-o", f"-k {folder} -p {port} -c listen_addresses=''",
                                 "start"]), check=True, capture_output=True, timeout=120)
    server = Postgres(folder, port)
    try:
        server.psql(f"CREATE ROLE scorer LOGIN PASSWORD '{PASSWORD}'", db="postgres")
        server.psql("CREATE DATABASE shop OWNER scorer", db="postgres")
        yield server
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


COLUMNS = "id text, x double precision, y numeric, amount double precision, colour text, member boolean"


@pytest.fixture(scope="session")
def shop(postgres, tiny_dir):
    """Table `new`: tiny new.csv with real types (numeric, boolean, NULLs in amount)."""
    postgres.load_csv("new", tiny_dir / "new.csv", COLUMNS)
    postgres.psql("ALTER TABLE new OWNER TO scorer")
    return postgres


@pytest.fixture()
def env(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", PASSWORD)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def csv_scores(tiny_dir: Path, model: Path, tmp_path: Path) -> pd.DataFrame:
    out = tmp_path / "from_csv.csv"
    assert invoke("score", tiny_dir / "new.csv", "-m", model, "-o", out, "-q").exit_code == 0
    return pd.read_csv(out, dtype=str, keep_default_na=False)


# ----- the same scores --------------------------------------------------------------------
def test_postgres_table_in_table_out_gives_the_csv_scores_with_proper_types(
        shop, env, tiny_dir, tiny_model, tmp_path):
    result = invoke("score", shop.url, "--query", "SELECT * FROM new ORDER BY id", "-m",
                    tiny_model, "-o", shop.url, "--output-table", "flags_same",
                    "--chunk-size", 7)
    assert result.exit_code == 0, result.output
    assert "wrote table flags_same in postgresql://scorer@/shop" in result.stderr
    table = shop.frame("SELECT * FROM flags_same ORDER BY id")
    expected = csv_scores(tiny_dir, tiny_model, tmp_path)
    assert list(table.columns) == list(expected.columns)
    assert list(table["id"]) == list(expected["id"])
    for column in SCORES:  # bit for bit: both print the shortest text that round-trips
        assert [float(v) for v in table[column]] == [float(v) for v in expected[column]]
    types = dict(line.split("|") for line in shop.psql(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'flags_same'").splitlines())
    assert types["member"] == "boolean" and types["id"] == "text"
    assert types["x"] == types["anomaly_score"] == "double precision"
    assert types["y"] == "numeric"  # as the input's, with its exact values
    assert shop.psql("SELECT count(*) FROM new n JOIN flags_same f USING (id) "
                     "WHERE n.y IS DISTINCT FROM f.y") == "0"
    assert types["is_anomaly"] == "bigint"
    nulls = shop.psql("SELECT count(*) FROM flags_same WHERE amount IS NULL")
    assert int(nulls) == (expected["amount"] == "").sum() > 0


def test_fit_from_postgres_gives_the_model_fit_from_csv(shop, env, tiny_dir, tmp_path):
    from conftest import FAST_FIT
    from vae_anomaly import load

    options = ["--epochs", FAST_FIT["epochs"], "--calibration-fits", 0, "-q"]
    assert invoke("fit", tiny_dir / "train.csv", "-m", tmp_path / "csv.vae", *options
                  ).exit_code == 0
    shop.load_csv("train", tiny_dir / "train.csv", COLUMNS)
    shop.psql("ALTER TABLE train OWNER TO scorer")
    result = invoke("fit", shop.url, "--query", "SELECT * FROM train", "-m",
                    tmp_path / "pg.vae", *options)
    assert result.exit_code == 0, result.output
    assert load(tmp_path / "pg.vae").threshold_ == load(tmp_path / "csv.vae").threshold_


def test_sqlite_in_and_out_and_across_files(tiny_dir, tiny_model, tmp_path, monkeypatch):
    """SQLite has no boolean type: `member` is kept as its text, as the CSV has it."""
    monkeypatch.chdir(tmp_path)
    rows = pd.read_csv(tiny_dir / "new.csv", dtype={"member": str})
    with sqlite3.connect(tmp_path / "shop.db") as db:
        db.execute("CREATE TABLE new (id TEXT, x REAL, y REAL, amount REAL, colour TEXT, "
                   "member TEXT)")
        db.executemany("INSERT INTO new VALUES (?, ?, ?, ?, ?, ?)",
                       [tuple(None if pd.isna(v) else v for v in row)
                        for row in rows.itertuples(index=False)])
    url = "sqlite:///shop.db"  # relative to the working folder
    result = invoke("score", url, "--query", "SELECT * FROM new", "-m", tiny_model, "-o",
                    f"sqlite:///{tmp_path}/shop.db", "--output-table", "flags")
    assert result.exit_code == 0, result.output
    with sqlite3.connect(tmp_path / "shop.db") as db:
        table = pd.read_sql("SELECT * FROM flags", db)
    expected = csv_scores(tiny_dir, tiny_model, tmp_path)
    assert list(table.columns) == list(expected.columns)
    assert list(table["anomaly_score"]) == [float(v) for v in expected["anomaly_score"]]
    # A table to a file, and a file to a table.
    assert invoke("score", url, "--query", "SELECT * FROM new", "-m", tiny_model, "-o",
                  "out.csv", "-q").exit_code == 0
    assert pd.read_csv("out.csv")["anomaly_score"].tolist() == table["anomaly_score"].tolist()
    assert invoke("score", tiny_dir / "new.csv", "-m", tiny_model, "-o", url,
                  "--output-table", "from_file", "-q").exit_code == 0
    with sqlite3.connect(tmp_path / "shop.db") as db:
        from_file = pd.read_sql("SELECT anomaly_score FROM from_file", db)
    assert from_file["anomaly_score"].tolist() == table["anomaly_score"].tolist()


def test_append_and_replace(shop, env, tiny_model):
    base = ["-m", tiny_model, "-o", shop.url, "--output-table", "flags_modes", "-q"]
    query = ["--query", "SELECT * FROM new LIMIT 10"]
    shop.psql("DROP TABLE IF EXISTS flags_modes")
    assert invoke("score", shop.url, *query, *base).exit_code == 0
    assert invoke("score", shop.url, *query, *base, "--if-exists", "append").exit_code == 0
    assert shop.count("flags_modes") == 20
    assert invoke("score", shop.url, "--query", "SELECT * FROM new LIMIT 3", *base,
                  "--if-exists", "replace").exit_code == 0
    assert shop.count("flags_modes") == 3
    # replace also swaps a table of other columns; append to it names the mismatch.
    shop.psql("DROP TABLE flags_modes; CREATE TABLE flags_modes (other int); "
              "INSERT INTO flags_modes VALUES (1); ALTER TABLE flags_modes OWNER TO scorer")
    error = one_line_error(invoke("score", shop.url, *query, *base, "--if-exists", "append"))
    assert "cannot write table flags_modes in postgresql://scorer@/shop" in error
    assert shop.psql("SELECT other FROM flags_modes") == "1"
    assert invoke("score", shop.url, *query, *base, "--if-exists", "replace").exit_code == 0
    assert shop.count("flags_modes") == 10
    assert shop.psql("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'vae_anomaly_new%'") == "0"


def test_summary_and_messages_carry_no_password(shop, tiny_model, tmp_path, monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    url = shop.url.replace("scorer@", f"scorer:{PASSWORD}@")
    (tmp_path / "night.sql").write_text("SELECT * FROM new WHERE id > 'R001010'\n")
    result = invoke("score", url, "--query", f"@{tmp_path / 'night.sql'}", "-m", tiny_model,
                    "-o", url, "--output-table", "flags_secret", "--if-exists", "replace",
                    "--summary", tmp_path / "run.json")
    assert result.exit_code == 0, result.output
    summary = (tmp_path / "run.json").read_text()
    assert PASSWORD not in summary and PASSWORD not in result.output
    record = json.loads(summary)["files"][0]
    assert record["input"] == shop.url.replace("scorer@", "scorer:***@")
    assert record["query"] == "SELECT * FROM new WHERE id > 'R001010'\n"
    assert record["output"].startswith("table flags_secret in postgresql://scorer:***@/shop")
    # An error names the server, without the (wrong) password either.
    wrong = shop.url.replace("scorer@", "scorer:n0tThe-Pw@")
    error = one_line_error(invoke("score", wrong, "--query", "SELECT 1", "-m", tiny_model,
                                  "-o", "x.csv"))
    assert "n0tThe-Pw" not in error and "scorer:***@/shop" in error
    assert error.startswith("Error: cannot log in to postgresql://scorer:***@/shop")
    assert "PGPASSWORD, ~/.pgpass or PGSERVICE" in error


def test_evaluate_reads_a_query(shop, env, tiny_model):
    result = invoke("evaluate", shop.url, "--query",
                    "SELECT *, (id < 'R001005')::int AS label FROM new", "--label-column",
                    "label", "-m", tiny_model, "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["rows"] == 60 and metrics["anomalies"] == 5
    assert metrics["input"] == shop.url and metrics["query"].startswith("SELECT")


# ----- bad input: one line, exit 2, the table untouched ------------------------------------
@pytest.fixture()
def kept(shop, env, tiny_model):
    """Table `kept` with 5 scored rows, which no failing run may change."""
    shop.psql("DROP TABLE IF EXISTS kept")
    assert invoke("score", shop.url, "--query", "SELECT * FROM new LIMIT 5", "-m", tiny_model,
                  "-o", shop.url, "--output-table", "kept", "-q").exit_code == 0
    before = shop.fingerprint("kept")
    yield ["-m", tiny_model, "-o", shop.url, "--output-table", "kept", "--if-exists", "append"]
    assert shop.fingerprint("kept") == before


@pytest.mark.parametrize(("query", "message"), [
    ("SELEC * FROM new", 'the query failed on postgresql://scorer@/shop?host='),
    ("SELECT * FROM no_such_table", 'relation "no_such_table" does not exist; fix --query'),
    ("SELECT *, ARRAY[1, 2] AS tags FROM new", "column `tags` of the query on postgresql://"
     "scorer@/shop"),
])
def test_bad_queries(shop, kept, query, message):
    error = one_line_error(invoke("score", shop.url, "--query", query, *kept))
    assert message in error
    if "tags" in message:
        assert "has type _int4, which vae-anomaly cannot read; cast it in --query" in error


def test_unreachable_server_and_wrong_password(shop, kept, monkeypatch):
    nowhere = shop.url.replace(f"port={shop.port}", "port=1")
    error = one_line_error(invoke("score", nowhere, "--query", "SELECT * FROM new", "-m",
                                  kept[1], "-o", "x.csv"))
    assert error.startswith(f"Error: cannot connect to {nowhere}: ")
    assert error.endswith("check that the server is running and the URL's host, port and database")
    monkeypatch.setenv("PGPASSWORD", "wrong")
    error = one_line_error(invoke("score", shop.url, "--query", "SELECT * FROM new", *kept))
    assert error.startswith(f"Error: cannot log in to {shop.url}: ")
    assert 'password authentication failed for user "scorer"' in error


def test_existing_table_with_fail_and_a_run_holding_the_table(shop, kept, tiny_model):
    fail = [*kept[:-2], "--if-exists", "fail"]
    error = one_line_error(invoke("score", shop.url, "--query", "SELECT * FROM new", *fail))
    assert error == (f"Error: table kept in {shop.url} already exists; pass --if-exists replace "
                     "to replace it or --if-exists append to add the rows, or choose another "
                     "--output-table")
    # Another run (here a psql session) holds the table's lock: refused at once.
    holder = subprocess.Popen(
        [_tool("psql"), "-X", "-q", "-h", str(shop.folder), "-p", str(shop.port), "-U",
         "postgres", "-d", "shop"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        holder.stdin.write("BEGIN; SELECT pg_advisory_xact_lock(hashtext("
                           "'vae-anomaly output table kept'));\n")
        holder.stdin.flush()
        deadline = time.monotonic() + 30
        while shop.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == "0":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        error = one_line_error(invoke("score", shop.url, "--query", "SELECT * FROM new", *kept))
        assert error == (f"Error: another vae-anomaly run is writing table kept in {shop.url}; "
                         "wait for it to finish or choose another --output-table")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_usage_errors(shop, env, tiny_model):
    error = one_line_error(invoke("score", shop.url, "-m", tiny_model, "-o", "x.csv"))
    assert error == (f"Error: {shop.url} is a database: pass --query with the SQL that selects "
                     "the rows (or --query @file.sql)")
    error = one_line_error(invoke("score", shop.url, "--query", "SELECT 1", "-m", tiny_model,
                                  "-o", shop.url))
    assert "pass --output-table NAME" in error
    error = one_line_error(invoke("fit", shop.url, "-m", "x.vae"))
    assert "is a database: pass --query" in error
    error = one_line_error(invoke("score", shop.url, "--query", "@/no/such.sql", "-m",
                                  tiny_model, "-o", "x.csv"))
    assert error.startswith("Error: cannot read the query file /no/such.sql")
    error = one_line_error(invoke("score", shop.url, "--query", "SELECT 1", "-m", tiny_model,
                                  "-o", shop.url, "--output-table", "bad name"))
    assert "is not a table name" in error
    error = one_line_error(invoke("score", "new.csv", "-m", tiny_model, "-o", "x.csv",
                                  "--if-exists", "append"))
    assert "--if-exists append applies to a table" in error


def test_a_query_with_no_rows_writes_the_table_with_its_columns(shop, env, tiny_model):
    shop.psql("DROP TABLE IF EXISTS flags_empty")
    result = invoke("score", shop.url, "--query", "SELECT * FROM new WHERE false", "-m",
                    tiny_model, "-o", shop.url, "--output-table", "flags_empty")
    assert result.exit_code == 0, result.output
    assert f"Note: {shop.url} has no rows; wrote the table with its columns and no rows" \
        in result.stderr
    assert shop.count("flags_empty") == 0
    columns = shop.psql("SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM "
                        "information_schema.columns WHERE table_name = 'flags_empty'")
    assert columns == "id,x,y,amount,colour,member," + ",".join(SCORES)


def test_without_the_sql_extra_a_url_names_the_install(shop, tiny_model, tmp_path):
    blocked = ("import sys\n"
               "for name in ('adbc_driver_postgresql', 'adbc_driver_postgresql.dbapi'):\n"
               "    sys.modules[name] = None  # as if not installed\n"
               "from vae_anomaly.cli import main\n"
               f"sys.argv = ['vae-anomaly', 'score', {shop.url!r}, '--query', 'SELECT 1', "
               f"'-m', {str(tiny_model)!r}, '-o', 'x.csv']\n"
               "main()\n")
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"Error: reading or writing {shop.url} needs the database "
                                   "drivers; install them with pip install 'vae-anomaly[sql]'")


# ----- PostgreSQL numeric: exact decimals in, numeric out ------------------------------------
NUMERIC_COLUMNS = "id text, amount numeric(12, 2), reading numeric, x double precision, colour text"
# Cells as a user typed them: many digits, trailing zeros, zero, a NULL.
READINGS = ["12345678901234.123456789", "0.1", "-7.50", "0", "0.000000001", ""]
READ_TYPES = [pa.decimal128(12, 2), pa.decimal128(23, 9)]  # 14 digits before the point, 9 after
SCORE_TYPES = {"anomaly_score": "double precision", "is_anomaly": "bigint",
               "p_value": "double precision", "reconstruction_nll": "double precision",
               "kl_divergence": "double precision", "score_std_error": "double precision"}
NUMERIC_TYPES = {"id": "text", "amount": "numeric(12,2)", "reading": "numeric",
                 "x": "double precision", "colour": "text", **SCORE_TYPES}


def numeric_rows(n: int = 300, seed: int = 5) -> pd.DataFrame:
    """Text cells: amount with 2 places, reading with 0 to 9 (READINGS first), NULLs."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    places = rng.integers(0, 10, size=n)
    reading = [f"{50 + 10 * v + rng.normal():.{k}f}" for v, k in zip(x, places)]
    reading[:len(READINGS)] = READINGS
    amount = [f"{v:.2f}" for v in rng.lognormal(3, 1, size=n)]
    amount[2], amount[3] = "-7.50", "0.10"
    for i in np.flatnonzero(rng.random(n) < 0.05):
        amount[i] = ""
    return pd.DataFrame({"id": [f"N{i:05d}" for i in range(n)], "amount": amount,
                         "reading": reading, "x": [repr(float(v)) for v in x],
                         "colour": np.where(x > 0, "red", "blue")})


@pytest.fixture(scope="session")
def nums(shop, tmp_path_factory):
    """Table `nums` (numeric_rows), and a model fitted on its CSV export by psql's
    \\copy (as `nums.model`, `nums.export`)."""
    folder = tmp_path_factory.mktemp("nums")
    numeric_rows().to_csv(folder / "nums.csv", index=False)
    shop.load_csv("nums", folder / "nums.csv", NUMERIC_COLUMNS)
    shop.psql("ALTER TABLE nums OWNER TO scorer")
    shop.export = folder / "export.csv"
    shop.psql(f"\\copy (SELECT * FROM nums ORDER BY id) TO '{shop.export}' CSV HEADER")
    shop.model = folder / "nums.vae"
    assert invoke("fit", shop.export, "-m", shop.model, "--exclude", "id", "--epochs", 15,
                  "--calibration-fits", 0, "-q").exit_code == 0
    return shop


def column_types(server: Postgres, table: str) -> dict[str, str]:
    return dict(line.split("|") for line in server.psql(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
        f"'{table}'::regclass AND attnum > 0 AND NOT attisdropped").splitlines())


def differing_numbers(server: Postgres, table: str) -> str:
    """'rows|rows whose numbers differ from those of nums', compared as text: amount
    as it is, reading at the 9 places of the type it is read as (the padding is
    exact), and reading as a number too."""
    return server.psql(
        "SELECT count(*) || '|' || count(*) FILTER (WHERE n.amount::text IS DISTINCT FROM "
        "o.amount::text OR round(n.reading, 9)::text IS DISTINCT FROM o.reading::text OR "
        f"n.reading IS DISTINCT FROM o.reading) FROM {table} o JOIN nums n USING (id)")


def test_postgres_numeric_reads_as_exact_decimals_of_one_type(nums, env):
    query = ("SELECT id, amount, reading, CAST(amount AS numeric(50, 20)) AS wide FROM nums "
             "ORDER BY id")
    chunks = list(read_source(nums.url, query, 70))
    assert len(chunks) == 5 and all(chunk.schema == chunks[0].schema for chunk in chunks)
    table = pa.concat_tables(chunks)
    assert table.schema.types[1:] == [*READ_TYPES, pa.decimal256(50, 20)]
    # Every value exactly: its text, padded to the type's places, is PostgreSQL's.
    expected = nums.psql("SELECT concat_ws('|', amount::text, round(reading, 9)::text, "
                         "CAST(amount AS numeric(50, 20))::text) FROM nums ORDER BY id")
    cells = zip(*(table[name].to_pylist() for name in ("amount", "reading", "wide")))
    assert ["|".join(format(v, "f") for v in row if v is not None) for row in cells] \
        == expected.splitlines()
    assert [format(v, "f") if v is not None else None for v in table["reading"][:6].to_pylist()] \
        == ["12345678901234.123456789", "0.100000000", "-7.500000000", "0.000000000",
            "0.000000001", None]
    assert table["amount"].null_count == int(nums.psql("SELECT count(*) FROM nums "
                                                       "WHERE amount IS NULL")) > 0


def test_a_query_the_numeric_probe_cannot_wrap_reads_numeric_as_double(nums, env):
    """A data-modifying query cannot be a subquery: its numeric columns come as
    float64, as before (the read's transaction is rolled back: nothing changes)."""
    before = nums.fingerprint("nums")
    table = read_source_table(nums.url, "UPDATE nums SET x = x WHERE id < 'N00006' "
                                        "RETURNING id, reading")
    assert table.schema.field("reading").type == pa.float64()
    assert sorted(table["reading"].to_pylist(), key=str) == sorted(
        (float(v) if v else None for v in READINGS), key=str)
    assert nums.fingerprint("nums") == before


@pytest.mark.parametrize(("reading", "message"), [
    ("CAST(CASE WHEN id = 'N00003' THEN 'NaN' ELSE amount END AS numeric(12, 2))",
     "holds NaN at row 4, which is not a number vae-anomaly can read; make it NULL in --query "
     "(e.g. NULLIF(reading, 'NaN')) or leave the row out"),
    ("CASE WHEN id = 'N00007' THEN '-Infinity' ELSE reading END",
     "holds -Infinity at row 8, which is not a number vae-anomaly can read; make it NULL in "
     "--query (e.g. NULLIF(reading, '-Infinity')) or leave the row out"),
    ("reading * 1e60", "holds numbers of 74 digits before the point and 9 after, more than the "
     "76 a decimal holds exactly; change it in --query (e.g. round(reading, 2))"),
])
def test_numeric_values_a_decimal_cannot_hold_are_one_line_errors(nums, env, tmp_path, reading,
                                                                  message):
    query = f"SELECT id, amount, {reading} AS reading, x, colour FROM nums ORDER BY id"
    error = one_line_error(invoke("score", nums.url, "--query", query, "-m", nums.model, "-o",
                                  tmp_path / "out.csv"))
    assert error == f"Error: column `reading` of the query on {nums.url} {message}"
    assert not (tmp_path / "out.csv").exists()


def test_numeric_columns_are_written_back_as_numeric_with_their_values(nums, env, tmp_path):
    """numeric(12,2) stays numeric(12,2) and numeric numeric, in create, append and
    replace; the values are the input's, and the scores those of its CSV export."""
    nums.psql("DROP TABLE IF EXISTS nums_out")
    out = ["-m", nums.model, "-o", nums.url, "--output-table", "nums_out", "-q",
           "--chunk-size", 70]
    query = ["--query", "SELECT * FROM nums"]
    assert invoke("score", nums.url, *query, *out).exit_code == 0
    assert column_types(nums, "nums_out") == NUMERIC_TYPES
    assert differing_numbers(nums, "nums_out") == "300|0"
    assert nums.psql("SELECT o.reading::text FROM nums_out o WHERE id = 'N00002'") == "-7.500000000"
    assert invoke("score", nums.url, *query, *out, "--if-exists", "append").exit_code == 0
    assert differing_numbers(nums, "nums_out") == "600|0"  # the appended rows alike
    assert invoke("score", nums.url, *query, *out, "--if-exists", "replace").exit_code == 0
    assert column_types(nums, "nums_out") == NUMERIC_TYPES
    assert differing_numbers(nums, "nums_out") == "300|0"
    assert nums.psql("SELECT count(*) FROM pg_class WHERE relname LIKE 'vae_anomaly_%'") == "0"
    # The scores: those of the CSV that psql exported, bit for bit.
    assert invoke("score", nums.export, "-m", nums.model, "-o", tmp_path / "csv.csv",
                  "-q").exit_code == 0
    expected = pd.read_csv(tmp_path / "csv.csv", dtype=str, keep_default_na=False)
    table = nums.frame("SELECT * FROM nums_out ORDER BY id")
    assert list(table["id"]) == list(expected["id"])
    for column in SCORES:
        assert [float(v) for v in table[column]] == [float(v) for v in expected[column]]


def test_a_csv_export_of_numeric_columns_scores_as_the_table(nums, env, tmp_path):
    """psql's \\copy of the table, fitted on (nums.model): the table's rows score bit
    for bit as the CSV's rows, and keep their numbers' text in a CSV output."""
    for source, name in ((nums.export, "csv"), (nums.url, "table")):
        query = [] if name == "csv" else ["--query", "SELECT * FROM nums ORDER BY id"]
        assert invoke("score", source, *query, "-m", nums.model, "-o",
                      tmp_path / f"{name}.csv", "-q").exit_code == 0
    from_csv, from_table = (pd.read_csv(tmp_path / f"{name}.csv", dtype=str,
                                        keep_default_na=False) for name in ("csv", "table"))
    assert list(from_table["id"]) == list(from_csv["id"])
    for column in SCORES:
        assert list(from_table[column]) == list(from_csv[column])
    assert list(from_table["amount"]) == list(from_csv["amount"])  # numeric(12,2): as written
    assert from_table["reading"][0] == "12345678901234.123456789"


def test_appending_decimals_to_existing_tables(nums, env):
    """An existing table's columns decide: numeric(p,s) and numeric take the exact
    values, double precision (as an earlier version wrote) their doubles, and a
    numeric with fewer places than the values is refused, the table untouched."""
    scores = ", ".join(f"{name} {kind}" for name, kind in SCORE_TYPES.items())
    out = ["-m", nums.model, "-o", nums.url, "-q", "--if-exists", "append", "--query",
           "SELECT * FROM nums"]
    for table, amount, reading in (("nums_typed", "numeric(12, 2)", "numeric"),
                                   ("nums_wider", "numeric(20, 4)", "numeric(30, 12)"),
                                   ("nums_old", "double precision", "double precision"),
                                   ("nums_narrow", "numeric(10, 1)", "numeric")):
        nums.psql(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id text, amount "
                  f"{amount}, reading {reading}, x double precision, colour text, {scores}); "
                  f"ALTER TABLE {table} OWNER TO scorer")
        before = column_types(nums, table)
        result = invoke("score", nums.url, *out, "--output-table", table)
        assert column_types(nums, table) == before
        if table == "nums_narrow":
            error = one_line_error(result)
            assert error == (f"Error: cannot write table nums_narrow in {nums.url}: its column "
                             "`amount` is numeric(10, 1), which would round the rows' values "
                             "(up to 2 places); round them in --query (round(amount, 1)) or "
                             "widen the column")
            assert nums.count(table) == 0
            continue
        assert result.exit_code == 0, result.output
        assert differing_numbers(nums, "nums_typed") == "300|0"
    assert nums.psql("SELECT count(*) FROM nums_wider o JOIN nums n USING (id) WHERE "
                     "o.amount::text IS NOT DISTINCT FROM round(n.amount, 4)::text AND "
                     "o.reading::text IS NOT DISTINCT FROM round(n.reading, 12)::text") == "300"
    assert nums.psql("SELECT count(*) FROM nums_old o JOIN nums n USING (id) WHERE "
                     "o.amount IS NOT DISTINCT FROM n.amount::float8 AND "
                     "o.reading IS NOT DISTINCT FROM n.reading::float8") == "300"


def test_decimals_into_sqlite_and_from_parquet(nums, env, tiny_dir, tiny_model, tmp_path):
    """SQLite has no decimal type: a numeric arrives as REAL (the double of its
    text). A Parquet decimal(12, 2) lands in PostgreSQL as numeric(12,2)."""
    db = tmp_path / "out.db"
    assert invoke("score", nums.url, "--query", "SELECT * FROM nums ORDER BY id", "-m",
                  nums.model, "-o", f"sqlite:///{db}", "--output-table", "flags",
                  "-q").exit_code == 0
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT amount, typeof(amount), reading FROM flags").fetchall()
    cells = numeric_rows()
    assert [row[0] for row in rows] == [float(v) if v else None for v in cells["amount"]]
    assert {row[1] for row in rows} == {"real", "null"}
    assert [row[2] for row in rows] == [float(v) if v else None for v in cells["reading"]]
    import decimal
    import pyarrow.parquet as pq
    frame = pd.read_csv(tiny_dir / "new.csv")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    amounts = [None if pd.isna(v) else decimal.Decimal(f"{v:.2f}") for v in frame["amount"]]
    table = table.set_column(table.schema.get_field_index("amount"), "amount",
                             pa.array(amounts, pa.decimal128(12, 2)))
    pq.write_table(table, tmp_path / "new.parquet")
    nums.psql("DROP TABLE IF EXISTS flags_parquet")
    assert invoke("score", tmp_path / "new.parquet", "-m", tiny_model, "-o", nums.url,
                  "--output-table", "flags_parquet", "-q").exit_code == 0
    assert column_types(nums, "flags_parquet")["amount"] == "numeric(12,2)"
    assert nums.psql("SELECT string_agg(coalesce(amount::text, ''), ',' ORDER BY id) FROM "
                     "flags_parquet") == ",".join("" if v is None else str(v) for v in amounts)


# ----- kill -9 in the middle of the write ----------------------------------------------------
@pytest.mark.parametrize("mode", ["append", "replace"])
def test_kill_9_while_writing_leaves_the_table_as_it_was(shop, kept, mode, tmp_path):
    if shop.psql("SELECT to_regclass('big') IS NULL") == "t":
        make_records(20_000, seed=3).to_csv(tmp_path / "big.csv", index=False)
        shop.load_csv("big", tmp_path / "big.csv", COLUMNS)
        shop.psql("ALTER TABLE big OWNER TO scorer")
    before = shop.fingerprint("kept")
    args = [*kept[:-1], mode, "--chunk-size", 200, "-q"]
    run = subprocess.Popen([sys.executable, "-m", "vae_anomaly", "score", shop.url, "--query",
                            "SELECT * FROM big", *map(str, args)], cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "PGPASSWORD": PASSWORD})
    deadline = time.monotonic() + 180
    # The write has begun once the run's connection has sent a COPY into the table.
    while shop.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'scorer' "
                    "AND query ILIKE 'COPY%'") == "0":
        assert run.poll() is None, f"the run ended before writing: {run.communicate()}"
        assert time.monotonic() < deadline, "the run did not start writing in 180 s"
        time.sleep(0.02)
    os.kill(run.pid, signal.SIGKILL)
    run.wait(timeout=60)
    assert run.returncode == -signal.SIGKILL
    assert shop.fingerprint("kept") == before
    assert shop.psql("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'vae_anomaly_new%'") == "0"


# ----- SQLite columns by their declared type: the sqlite3 shell's .import -------------------
def sqlite_import(db: Path, create: str, header: str, rows: list[str], table: str = "t") -> None:
    """CSV rows into a typed table with the sqlite3 shell's .import, as a user would
    load them: it stores an empty cell as '' text, even in a REAL column."""
    shell = shutil.which("sqlite3")
    if shell is None:
        pytest.skip("the sqlite3 shell is not installed (apt-get install sqlite3); these tests "
                    "load CSV files with its .import")
    csv = db.with_name(f"{table}.csv")
    csv.write_text("\n".join([header, *rows]) + "\n")
    done = subprocess.run([shell, str(db), create, f".import --csv --skip 1 {csv} {table}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and not done.stderr, done.stderr


def bits(values) -> list:
    """Floats as their exact bits (float.hex), None kept: equal only bit for bit."""
    return [None if v is None else float(v).hex() for v in values]


def from_csv(cells: list[str]) -> list:
    """What a CSV's cells mean: Python's float of the text, None for a blank cell."""
    return [float(cell) if cell.strip() else None for cell in cells]


def driver_read(db: Path, query: str) -> pa.Table:
    """The rows as the ADBC driver alone reads them (the path before declared types)."""
    import adbc_driver_sqlite.dbapi as driver

    with driver.connect(str(db)) as connection, connection.cursor() as cursor:
        cursor.execute(query)
        return cursor.fetch_arrow_table()


def test_sqlite_import_reads_each_column_by_its_declared_type_bit_for_bit(tmp_path):
    x = ["0.123456789012", "", "3.14159265358979", "0.30000000000000004", " ", "-2.5e-300",
         "1.0000000000009095"]
    n = ["1", "2", "", "-9007199254740993", "4", "", "7"]  # beyond float64's integers
    flag = ["1", "0", "", "1", "0", "1", "0"]
    colour = ["red", "", "blue", "red", "", "blue", "red"]
    day = ["2024-01-05", "", "2024-01-06", "2024-01-07", "", "2024-01-08", "2024-01-09"]
    sqlite_import(tmp_path / "t.db", "CREATE TABLE t (x REAL, n INTEGER, flag BOOLEAN, "
                  "colour TEXT, day DATE)", "x,n,flag,colour,day",
                  [",".join(row) for row in zip(x, n, flag, colour, day)])
    # What the driver alone made of it: x as text, 7 digits.
    assert driver_read(tmp_path / "t.db", "SELECT x FROM t")["x"][0].as_py() == "1.234568e-01"
    table = read_source_table("sqlite:///" + str(tmp_path / "t.db"), "SELECT * FROM t;\n")
    assert table.schema.types == [pa.float64(), pa.int64(), pa.int64(), pa.string(), pa.string()]
    assert bits(table["x"].to_pylist()) == bits(from_csv(x))
    assert table["n"].to_pylist() == [None if not v else int(v) for v in n]
    assert table["flag"].to_pylist() == [None if not v else int(v) for v in flag]
    # Text and date columns come as the driver reads them.
    assert table.select(["colour", "day"]).equals(
        driver_read(tmp_path / "t.db", "SELECT colour, day FROM t"))


def test_sqlite_real_column_holding_a_word_stays_text_for_the_checks_to_name(
        tmp_path, tiny_dir, tiny_model):
    x = ["0.123456789012", "abc", "", "1e-05", "0.30000000000000004"]
    sqlite_import(tmp_path / "t.db", "CREATE TABLE t (x REAL)", "x", x)
    table = read_source_table("sqlite:///" + str(tmp_path / "t.db"), "SELECT x FROM t")
    assert table.schema.types == [pa.string()]
    text = table["x"].to_pylist()
    assert text[1:3] == ["abc", ""]  # as stored, neither 0 nor null
    numbers = [0, 3, 4]  # in round-trip digits: their floats are the CSV's, bit for bit
    assert bits(float(text[i]) for i in numbers) == bits(float(x[i]) for i in numbers)
    # The run names the bad value, as for the same CSV.
    rows = (tiny_dir / "new.csv").read_text().splitlines()
    header, first = rows[0], rows[1].split(",")
    first[header.split(",").index("x")] = "abc"
    sqlite_import(tmp_path / "shop.db", "CREATE TABLE new (id TEXT, x REAL, y REAL, "
                  "amount REAL, colour TEXT, member TEXT)", header,
                  [",".join(first), *rows[2:]], table="new")
    error = one_line_error(invoke("score", "sqlite:///" + str(tmp_path / "shop.db"),
                                  "--query", "SELECT * FROM new", "-m", tiny_model, "-o",
                                  tmp_path / "out.csv"))
    assert "column `x`" in error and "non-numeric value 'abc' at row 1" in error


@pytest.mark.parametrize("blanks_first", [False, True], ids=["numbers-first", "blanks-first"])
def test_sqlite_blank_cells_past_the_first_batch(tmp_path, blanks_first):
    """The driver types a column by its first batch of rows (1,024): blank cells, or a
    fraction in a column of whole numbers, only after 5,000 rows."""
    numbers = [(repr(1 + i * 2.0**-40), str(i - 2500), str(i)) for i in range(5000)]
    blanks = [("", "", "2.5")] * 40
    rows = [*blanks, *numbers] if blanks_first else [*numbers, *blanks]
    sqlite_import(tmp_path / "t.db", "CREATE TABLE t (x REAL, n INTEGER, w NUMERIC)",
                  "x,n,w", [",".join(row) for row in rows])
    chunks = list(read_source("sqlite:///" + str(tmp_path / "t.db"), "SELECT * FROM t", 700))
    expected = pa.schema([("x", pa.float64()), ("n", pa.int64()), ("w", pa.float64())])
    assert all(chunk.schema == expected for chunk in chunks)
    assert [chunk.num_rows for chunk in chunks] == [700] * 7 + [140]  # streamed, re-cut
    table = pa.concat_tables(chunks)
    assert bits(table["x"].to_pylist()) == bits(from_csv([row[0] for row in rows]))
    assert table["n"].to_pylist() == [int(row[1]) if row[1] else None for row in rows]
    assert bits(table["w"].to_pylist()) == bits(from_csv([row[2] for row in rows]))


def test_sqlite_import_scores_as_the_csv_and_writes_real_columns(
        tiny_dir, tiny_model, tmp_path):
    rows = (tiny_dir / "new.csv").read_text().splitlines()
    db = tmp_path / "shop.db"
    sqlite_import(db, "CREATE TABLE new (id TEXT, x REAL, y REAL, amount REAL, colour TEXT, "
                  "member TEXT)", rows[0], rows[1:], table="new")
    with sqlite3.connect(db) as connection:  # the shell left '' in amount
        assert connection.execute("SELECT count(*) FROM new WHERE amount = ''").fetchone()[0] > 0
    url = "sqlite:///" + str(db)
    result = invoke("score", url, "--query", "SELECT * FROM new", "-m", tiny_model, "-o", url,
                    "--output-table", "flags", "--chunk-size", 7)
    assert result.exit_code == 0, result.output
    expected = csv_scores(tiny_dir, tiny_model, tmp_path)
    with sqlite3.connect(db) as connection:
        table = pd.read_sql("SELECT * FROM flags", connection)
        types = dict(connection.execute(
            "SELECT 'x', group_concat(DISTINCT typeof(x)) FROM flags UNION ALL "
            "SELECT 'amount', group_concat(DISTINCT typeof(amount)) FROM flags WHERE amount "
            "IS NOT NULL UNION ALL SELECT 'score', group_concat(DISTINCT typeof(anomaly_score)) "
            "FROM flags").fetchall())
        blank = connection.execute("SELECT count(*) FROM flags WHERE amount IS NULL").fetchone()[0]
    assert types == {"x": "real", "amount": "real", "score": "real"}
    assert blank == (expected["amount"] == "").sum() > 0
    assert bits(table["amount"].dropna()) == bits(float(v) for v in expected["amount"] if v)
    for column in SCORES:
        assert bits(table[column]) == bits(float(v) for v in expected[column])


def test_sqlite_columns_that_arrive_typed_read_as_before(tmp_path):
    """Tables pandas wrote (INTEGER, REAL with NULLs, TEXT): as the driver reads them."""
    frame = make_records(3000, seed=4).assign(count=range(3000))
    with sqlite3.connect(tmp_path / "typed.db") as connection:
        frame.to_sql("typed", connection, index=False)
    query = "SELECT * FROM typed"
    table = read_source_table("sqlite:///" + str(tmp_path / "typed.db"), query)
    assert table.equals(driver_read(tmp_path / "typed.db", query))
    assert table.schema.field("amount").type == pa.float64() and table["amount"].null_count > 0
