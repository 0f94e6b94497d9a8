"""The files people really have: compressed CSV in and out, CSV through pipes, and
output cells that keep the input's text as it was written."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import subprocess
import sys
import threading

import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from conftest import FAST_FIT
from vae_anomaly import load
from vae_anomaly.api import default_output_path, evaluate_file, fit_file, score_file
from vae_anomaly.cli import app
from vae_anomaly.data import read_batches

runner = CliRunner()
CODECS = {".gz": gzip.compress, ".bz2": bz2.compress,
          ".zst": lambda data: pa.compress(data, "zstd", asbytes=True)}
DECOMPRESS = {".gz": gzip.decompress, ".bz2": bz2.decompress,
              ".zst": lambda data: pa.CompressedInputStream(pa.BufferReader(data), "zstd").read()}


def invoke(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def compressed_copy(source, folder, suffix):
    path = folder / f"{source.stem}.csv{suffix}"
    path.write_bytes(CODECS[suffix](source.read_bytes()))
    return path


@pytest.mark.parametrize("suffix", sorted(CODECS))
def test_compressed_input_scores_byte_identically(tmp_path, tiny_dir, tiny_model, suffix):
    plain = score_file(tiny_dir / "new.csv", tiny_model, output=tmp_path / "plain.csv")
    packed = compressed_copy(tiny_dir / "new.csv", tmp_path, suffix)
    result = score_file(packed, tiny_model, output=tmp_path / "from_packed.csv")
    assert (tmp_path / "from_packed.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()
    assert (result.rows, result.flagged) == (plain.rows, plain.flagged) == (60, plain.flagged)


@pytest.mark.parametrize("suffix", sorted(CODECS))
def test_output_named_with_a_codec_is_written_compressed(tmp_path, tiny_dir, tiny_model, suffix):
    score_file(tiny_dir / "new.csv", tiny_model, output=tmp_path / "plain.csv")
    score_file(tiny_dir / "new.csv", tiny_model, output=tmp_path / f"out.csv{suffix}")
    raw = (tmp_path / f"out.csv{suffix}").read_bytes()
    assert raw != (tmp_path / "plain.csv").read_bytes()
    assert DECOMPRESS[suffix](raw) == (tmp_path / "plain.csv").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv" + suffix, "plain.csv"]


def test_default_output_keeps_the_input_compression(tmp_path):
    assert default_output_path(tmp_path / "today.csv.gz") == tmp_path / "today.scored.csv.gz"
    assert default_output_path(tmp_path / "a.b.csv.zst") == tmp_path / "a.b.scored.csv.zst"
    assert default_output_path(tmp_path / "new.csv") == tmp_path / "new.scored.csv"
    assert default_output_path(tmp_path / "x.parquet") == tmp_path / "x.scored.parquet"


def test_fit_and_evaluate_read_compressed_files(tmp_path, tiny_dir, tiny_model):
    packed = compressed_copy(tiny_dir / "train.csv", tmp_path, ".gz")
    fit_file(packed, tmp_path / "model.vae", **FAST_FIT)
    assert load(tmp_path / "model.vae").threshold_ == load(tiny_model).threshold_
    labelled = pd.read_csv(tiny_dir / "new.csv")
    labelled["label"] = (labelled.index < 5).astype(int)
    labelled.to_csv(tmp_path / "labelled.csv", index=False)
    zst = compressed_copy(tmp_path / "labelled.csv", tmp_path, ".zst")
    from_plain = evaluate_file(tmp_path / "labelled.csv", tiny_model, label_column="label")
    from_zst = evaluate_file(zst, tiny_model, label_column="label")
    assert from_zst["roc_auc"] == from_plain["roc_auc"] and from_zst["rows"] == 60


def test_compressed_files_stream_in_chunks(tmp_path, tiny_dir):
    packed = compressed_copy(tiny_dir / "new.csv", tmp_path, ".bz2")
    sizes = [table.num_rows for table in read_batches(packed, chunk_rows=25)]
    assert sizes == [25, 25, 10]


# ----- pipes ----------------------------------------------------------------------------
def test_score_reads_stdin_and_writes_stdout(tmp_path, tiny_dir, tiny_model):
    score_file(tiny_dir / "new.csv", tiny_model, output=tmp_path / "plain.csv")
    result = invoke("score", "-", "--model", tiny_model, "-o", "-",
                    input=(tiny_dir / "new.csv").read_bytes())
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == (tmp_path / "plain.csv").read_bytes()
    assert "Scored 60 rows" in result.stderr and "wrote stdout" in result.stderr


def test_fit_reads_stdin(tmp_path, tiny_dir, tiny_model):
    result = invoke("fit", "-", "--model", tmp_path / "m.vae", "--epochs", 15,
                    "--calibration-fits", 0, "--quiet",
                    input=(tiny_dir / "train.csv").read_bytes())
    assert result.exit_code == 0, result.stderr
    assert load(tmp_path / "m.vae").threshold_ == load(tiny_model).threshold_


def test_health_warnings_name_standard_input(tmp_path, tiny_dir, tiny_model):
    new = pd.read_csv(tiny_dir / "new.csv")
    new.loc[:20, "colour"] = "purple"
    result = invoke("score", "-", "--model", tiny_model, "-o", tmp_path / "out.csv",
                    "--summary", tmp_path / "run.json", input=new.to_csv(index=False))
    assert result.exit_code == 0, result.stderr
    assert "Warning: standard input: column `colour` has categories never seen" in result.stderr
    summary = pd.read_json(tmp_path / "run.json", typ="series")
    assert summary["files"][0]["input"] == "-" and summary["rows"] == 60


@pytest.mark.parametrize("argv, stdin, message", [
    (["score", "-"], b"x\n1\n", "Error: scoring standard input (-) needs an output: pass -o "
                                "PATH, or -o - to write CSV to standard output"),
    (["score", "-", "--output-dir", "."], b"x\n1\n",
     "Error: standard input (-) has no file name to write into --output-dir; pass -o PATH, or "
     "-o - to write CSV to standard output"),
    (["score", "-", "-o", "-"], b"", "Error: standard input is empty; expected a CSV file with "
                                     "a header row"),
    (["score", "-", "-o", "-"], gzip.compress(b"x,y\n1,2\n"),
     "Error: standard input is gzip-compressed; decompress it in the pipe, e.g. zcat "
     "today.csv.gz | vae-anomaly score - -o -"),
    (["fit", "-"], b"PAR1\x00\x00", "Error: standard input holds a Parquet file, which cannot "
                                    "be read from a pipe; pass its path instead of -"),
])
def test_stdin_misuse_is_one_line(tmp_path, tiny_model, argv, stdin, message):
    result = invoke(*argv, "--model", tiny_model if argv[0] == "score" else tmp_path / "m.vae",
                    input=stdin)
    assert result.exit_code == 2
    assert result.stderr == message + "\n"


def _command():
    return [sys.executable, "-m", "vae_anomaly"]


def test_a_real_pipeline_streams_rows_before_stdin_ends(tmp_path, tiny_dir, tiny_model):
    """`producer | vae-anomaly score - -o - | consumer`: scored rows come out while the
    producer is still writing, so memory does not hold the whole stream. (The CSV
    reader hands on a block of 1 MiB once the next one has begun, so the producer
    writes a few MiB before it waits.)"""
    header, body = (tiny_dir / "new.csv").read_text().split("\n", 1)
    repeats = 1000
    first_part = (header + "\n" + body * repeats).encode()  # ~3.6 MB
    process = subprocess.Popen(_command() + ["score", "-", "-o", "-", "--model", str(tiny_model),
                                             "--chunk-size", "1000", "--quiet"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    first_rows_seen, producer_waited_out = threading.Event(), threading.Event()

    def produce():
        process.stdin.write(first_part)
        process.stdin.flush()
        if not first_rows_seen.wait(timeout=60):  # the rest only once output came back
            producer_waited_out.set()
        process.stdin.write(body.encode())
        process.stdin.close()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    out_header = process.stdout.readline().decode()
    first_row = process.stdout.readline().decode()
    first_rows_seen_in_time = not producer_waited_out.is_set()
    first_rows_seen.set()
    rest = process.stdout.read().decode()
    process.wait(timeout=120)
    producer.join(timeout=10)
    assert process.returncode == 0, process.stderr.read()
    assert out_header.startswith(header + ",anomaly_score,")
    assert first_row.startswith(body.split("\n", 1)[0] + ",")
    assert first_rows_seen_in_time
    assert rest.count("\n") + 1 == (repeats + 1) * 60


def test_closed_stdout_in_a_pipeline_is_one_line(tiny_dir, tiny_model):
    data = (tiny_dir / "new.csv").read_text()
    header, body = data.split("\n", 1)
    big = (header + "\n" + body * 300).encode()
    shell = (f"{' '.join(_command())} score - -o - --model {tiny_model} --chunk-size 500 "
             "| head -n 2 > /dev/null")
    done = subprocess.run(["bash", "-o", "pipefail", "-c", shell], input=big,
                          capture_output=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.decode().startswith("Error: standard output was closed before every "
                                           "row was written")


# ----- text kept as written ---------------------------------------------------------------
def test_output_cells_keep_the_input_text(tmp_path, tiny_dir, tiny_model):
    """Unquoted input cells stay unquoted; a cell is quoted only for a comma, a quote
    or a line break, exactly as Python's csv module would quote it."""
    new = pd.read_csv(tiny_dir / "new.csv", dtype=str, keep_default_na=False)
    new["note"] = "plain"
    new.loc[1, "note"] = 'a "quoted", word'
    new.loc[2, "note"] = "two\nlines"
    new.loc[3, "id"] = " R001003 "
    source = tmp_path / "in.csv"
    new.to_csv(source, index=False, lineterminator="\n")
    score_file(source, tiny_model, output=tmp_path / "out.csv")
    rows_in = list(csv.reader(io.StringIO(source.read_text(), newline="")))
    text_out = (tmp_path / "out.csv").read_text()
    expected_prefix = io.StringIO()
    csv.writer(expected_prefix, lineterminator="\n").writerows(rows_in)
    out_lines = _records(text_out)
    for line_in, line_out in zip(_records(expected_prefix.getvalue()), out_lines, strict=True):
        assert line_out.startswith(line_in + ","), (line_in, line_out)
    assert '"' not in out_lines[0] and out_lines[4].startswith(" R001003 ,")
    assert 'a ""quoted"", word' in out_lines[2] and '"two\nlines"' in out_lines[3]


def _records(text: str) -> list[str]:
    """The CSV text's records (a quoted line break stays inside its record)."""
    records, current = [], ""
    for line in text.split("\n")[:-1]:
        current = line if not current else current + "\n" + line
        if current.count('"') % 2 == 0:
            records.append(current)
            current = ""
    return records
