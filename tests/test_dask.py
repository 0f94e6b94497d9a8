"""The Dask engine: `score --engine dask` on a real LocalCluster (2 worker processes).

One cluster serves the module (tests pass --scheduler); one test starts its own,
as a run without --scheduler does. Tests that need Dask skip when the extra is
not installed; the option checks and the missing-Dask message run without it.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import make_records
from vae_anomaly import __version__
from vae_anomaly.engines import score_files
from vae_anomaly.cli import app
from vae_anomaly.distributed import DaskEngineError, score_partition
from vae_anomaly.errors import ModelFileError

runner = CliRunner()
PARTITIONS = ("part-0.csv", "part-1.parquet", "part-2.parquet")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def scheduler():
    """A real two-process cluster: the model bytes really travel to other processes."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address="127.0.0.1:0",
                                  silence_logs=logging.CRITICAL) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_model) -> Path:
    """data/part-0.csv, part-1.parquet and part-2.parquet (40 rows each, some odd), model.vae."""
    folder = tmp_path_factory.mktemp("partitions")
    shutil.copy(tiny_model, folder / "model.vae")
    (folder / "data").mkdir()
    for index, name in enumerate(PARTITIONS):
        frame = make_records(40, seed=20 + index, first_id=1000 * index)
        frame.loc[:2, "y"] = frame.loc[:2, "x"] * -3 + 12  # far off the relation: anomalies
        if name.endswith(".parquet"):
            frame.to_parquet(folder / "data" / name, index=False)
        else:
            frame.to_csv(folder / "data" / name, index=False)
    return folder


def score(data: Path, out: str, *options):
    (data / out).mkdir(exist_ok=True)
    return invoke("score", data / "data" / "part-*", "--model", data / "model.vae",
                  "--output-dir", data / out, *options)


def outputs(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def read_output(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


DRAWS = ["--seed", 3, "--samples", 8, "--explain", 2]


def test_dask_and_local_engines_write_identical_bytes(data, scheduler):
    for chunks in ([], ["--chunk-size", 7]):
        suffix = "-".join(map(str, chunks))
        on_dask = score(data, f"dask{suffix}", "--engine", "dask", "--scheduler", scheduler,
                        *chunks, *DRAWS)
        local = score(data, f"local{suffix}", "--engine", "local", *chunks, *DRAWS)
        assert on_dask.exit_code == 0 and local.exit_code == 0, on_dask.output + local.output
        assert sorted(outputs(data / f"local{suffix}")) == sorted(PARTITIONS)
        assert outputs(data / f"dask{suffix}") == outputs(data / f"local{suffix}"), chunks
    # The seed reaches the workers: another seed gives other scores.
    other = score(data, "dask-other-seed", "--engine", "dask", "--scheduler", scheduler,
                  "--seed", 4, "--samples", 8, "--explain", 2)
    assert other.exit_code == 0, other.output
    assert outputs(data / "dask-other-seed")["part-0.csv"] != outputs(data / "dask")["part-0.csv"]


def test_chunked_and_one_piece_dask_scores_agree(data, scheduler):
    # Parquet outputs written in 7-row chunks have other row groups, hence other
    # bytes: compare the values, exactly.
    whole = score(data, "dask-whole", "--engine", "dask", "--scheduler", scheduler, *DRAWS)
    chunked = score(data, "dask-chunked", "--engine", "dask", "--scheduler", scheduler,
                    "--chunk-size", 7, *DRAWS)
    assert whole.exit_code == 0 and chunked.exit_code == 0, whole.output + chunked.output
    for name in PARTITIONS:
        expected, got = (read_output(data / run / name) for run in ("dask-whole", "dask-chunked"))
        pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_dask_reports_like_local_with_summary_and_exit_codes(data, scheduler):
    result = score(data, "dask-summary", "--engine", "dask", "--scheduler", scheduler,
                   "--summary", data / "run.json", "--fail-on-anomaly")
    assert result.exit_code == 1, result.output  # anomalies found
    lines = result.stderr.splitlines()
    for name in PARTITIONS:  # in input order, with the output path as the user gave it
        assert any(line.startswith("Scored 40 rows") and
                   line.endswith(f"wrote {data / 'dask-summary' / name}") for line in lines)
    summary = json.loads((data / "run.json").read_text())
    assert summary["rows"] == 120 and summary["flagged"] > 0
    assert [Path(f["input"]).name for f in summary["files"]] == list(PARTITIONS)
    quiet = score(data, "dask-quiet", "--engine", "dask", "--scheduler", scheduler, "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_library_entry_point_returns_results_in_input_order(data, scheduler):
    (data / "api-out").mkdir()
    results = score_files(str(data / "data" / "part-*"), data / "model.vae",
                          output_dir=data / "api-out", engine="dask", scheduler=scheduler,
                          samples=4)
    assert [r.input.name for r in results] == list(PARTITIONS)
    assert [r.output for r in results] == [data / "api-out" / name for name in PARTITIONS]
    assert all(r.rows == 40 and r.health["ok"] in (True, False) for r in results)


def test_a_failed_partition_is_named_and_the_others_are_complete(data, scheduler, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(data / "data", folder)
    header = "id,x,y,amount,colour,member\n"
    (folder / "part-3.csv").write_text(header + "R1,0.5,1.0,3.0,red,true\n"
                                                "R2,lots,1.0,3.0,red,false\n")
    (folder / "part-4.csv").write_text(header + "R1,0.5,1.0\n")  # ragged row
    (tmp_path / "out").mkdir()
    result = invoke("score", folder / "part-*", "--model", data / "model.vae", "--engine",
                    "dask", "--scheduler", scheduler, "--output-dir", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert len(result.stderr.splitlines()) == 1
    message = result.stderr.strip()
    assert message.startswith("Error: 2 of 5 partitions failed (the other 3 outputs are complete)")
    assert "part-3.csv has non-numeric value 'lots'" in message
    assert "part-4.csv is not a well-formed CSV" in message
    # The good partitions' outputs are complete: the same bytes as a clean run's,
    # and nothing else (no output or temporary file for the failed ones).
    clean = score(data, "local-reference")
    assert clean.exit_code == 0, clean.output
    assert outputs(tmp_path / "out") == outputs(data / "local-reference")


def test_without_scheduler_a_local_cluster_is_started(data):
    pytest.importorskip("distributed")
    result = score(data, "own-cluster", "--engine", "dask", "--samples", 4, "-q")
    assert result.exit_code == 0, result.output
    reference = score(data, "own-cluster-local", "--samples", 4, "-q")
    assert reference.exit_code == 0, reference.output
    assert outputs(data / "own-cluster") == outputs(data / "own-cluster-local")


def test_missing_dask_is_one_line_saying_what_to_install(data, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    result = score(data, "no-dask", "--engine", "dask")
    assert result.exit_code == 2
    assert result.stderr == ("Error: --engine dask needs Dask, which is not installed; install "
                             "it with: pip install 'vae-anomaly[dask]'\n")


@pytest.mark.parametrize("args, message", [
    (["--engine", "dask"], "--engine dask writes one output per partition; pass --output-dir"),
    (["--engine", "dask", "-o", "x.csv"], "pass --output-dir DIR instead of --output"),
    (["--scheduler", "tcp://127.0.0.1:8786", "-o", "x.csv"],
     "--scheduler only applies to --engine dask"),
    (["--engine", "spark", "-o", "x.csv"], "'spark' is not one of 'local', 'dask'"),
])
def test_engine_options_are_checked(data, args, message):
    result = invoke("score", data / "data" / "part-0.csv", "--model", data / "model.vae", *args)
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1
    assert message in result.stderr


@pytest.mark.parametrize("option, message", [
    (["--chunk-size", "0"], "Error: --chunk-size must be at least 1 (got 0)\n"),
    (["--explain", "-1"], "Error: --explain must be zero or more (got -1)\n"),
])
def test_scoring_options_are_checked_before_any_cluster_is_reached(data, tmp_path, option,
                                                                  message):
    pytest.importorskip("distributed")
    result = invoke("score", data / "data" / "part-0.csv", "--model", data / "model.vae",
                    "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9",  # nothing there
                    "--output-dir", tmp_path, *option)
    assert result.exit_code == 2
    assert result.stderr == message  # the local engine's words, not "N partitions failed"


def test_score_partitions_itself_refuses_inputs_of_one_name(data, tmp_path):
    pytest.importorskip("distributed")
    from vae_anomaly.distributed import score_partitions
    from vae_anomaly.errors import InputError

    two_parts_of_one_name(data, tmp_path)
    with pytest.raises(InputError, match="would both be written to"):
        score_partitions([tmp_path / "a" / "part-0.csv", tmp_path / "b" / "part-0.csv"],
                         data / "model.vae", tmp_path / "out", scheduler="tcp://127.0.0.1:9")


def test_an_unreachable_scheduler_is_one_line(data):
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        result = score(data, "unreachable", "--engine", "dask", "--scheduler",
                       "tcp://127.0.0.1:9")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: cannot connect to the Dask scheduler at "
                                    "tcp://127.0.0.1:9")
    assert len(result.stderr.splitlines()) == 1


def test_a_scheduler_without_workers_is_one_line(data):
    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            distributed.LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0",
                                     silence_logs=logging.CRITICAL) as empty:
        address = empty.scheduler_address
        result = score(data, "no-workers", "--engine", "dask", "--scheduler", address)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: the Dask scheduler at {address} has no workers; "
                                    "start some")
    assert len(result.stderr.splitlines()) == 1


def two_parts_of_one_name(data, folder):
    """folder/a/part-0.csv and folder/b/part-0.csv, and an empty folder/out."""
    for sub in ("a", "b"):
        (folder / sub).mkdir()
        shutil.copy(data / "data" / "part-0.csv", folder / sub / "part-0.csv")
    (folder / "out").mkdir()


def test_inputs_sharing_a_name_are_refused(tmp_path, data):
    pytest.importorskip("distributed")
    two_parts_of_one_name(data, tmp_path)
    result = invoke("score", tmp_path / "*" / "part-0.csv", "--model", data / "model.vae",
                    "--engine", "dask", "--output-dir", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr == (f"Error: {tmp_path}/a/part-0.csv and {tmp_path}/b/part-0.csv would "
                             f"both be written to {tmp_path}/out/part-0.csv; score them in "
                             "separate runs or give them different names\n")


def test_a_bad_model_fails_before_any_cluster_starts(data, tmp_path):
    pytest.importorskip("distributed")
    bad = tmp_path / "bad.vae"
    bad.write_bytes(b"\x80\x04not a model, maybe a pickle")
    (tmp_path / "out").mkdir()
    result = invoke("score", data / "data" / "part-0.csv", "--model", bad, "--engine", "dask",
                    "--scheduler", "tcp://127.0.0.1:9", "--output-dir", tmp_path / "out")
    assert result.exit_code == 2
    assert "bad.vae is not a vae-anomaly model file" in result.stderr


def test_the_worker_task_loads_bytes_with_the_safe_loader(data, tmp_path):
    """What each worker runs, called here: bytes in, the checked loader, score_file."""
    payload = (data / "model.vae").read_bytes()
    partition = str(data / "data" / "part-0.csv")
    tampered = payload[:-16] + bytes(16)  # weights no longer match their checksum
    with pytest.raises(ModelFileError, match="fail the checksum"):
        score_partition(partition, str(tmp_path / "x.csv"), tampered, "model.vae", __version__,
                        {})
    with pytest.raises(DaskEngineError, match="install the same version on every worker"):
        score_partition(partition, str(tmp_path / "x.csv"), payload, "model.vae", "0.0.0", {})
    result = score_partition(partition, str(tmp_path / "x.csv"), payload, "model.vae",
                             __version__, {"samples": 4})
    assert result.rows == 40 and (tmp_path / "x.csv").exists()
