"""Hostile inputs through the command line, as cron would meet them.

The contract: exit 0 ok, 1 anomalies (--fail-on-anomaly), 2 bad input / model /
output / usage, 3 drift (--fail-on-drift), 4 internal error (never, for any
input), 130 interrupted. Every error is ONE line on stderr, ``Error: <problem>;
<fix>``, never a traceback, and no output or model file is created or clobbered:
each case below runs in a folder holding sentinel "previous" outputs and checks
that every file in it is byte-identical afterwards, with no ``*.partial`` or
``*.lock`` file left behind.

The last part trains on extreme but valid numbers and checks that no weight or
score becomes NaN or infinite.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save as save_safetensors
from typer.testing import CliRunner

from conftest import rewrite_metadata
from vae_anomaly import load
from vae_anomaly.api import fit_file, score_file
from vae_anomaly.artifact import FORMAT_VERSION
from vae_anomaly.cli import app

runner = CliRunner()
SENTINEL = b"previous output: must survive a failed run byte for byte\n"
FEATURES = ["x", "y", "amount", "colour", "member"]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine two
    spinning threads make each fit several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file under ``folder`` (names relative to it) with its bytes; None for folders."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*")
            if p.name.endswith(".partial") or p.name.endswith(".lock")]


def assert_one_line_error(result, code: int) -> str:
    """The run failed with ``code`` and said so in exactly one ``Error: `` line."""
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    assert result.stderr.startswith("Error: "), result.stderr
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""
    return result.stderr.rstrip("\n")


@pytest.fixture()
def work(tmp_path, tiny_dir, tiny_model):
    """A private folder: copies of the tiny data and model, plus sentinel earlier outputs."""
    for name in ("train.csv", "new.csv"):
        shutil.copy(tiny_dir / name, tmp_path / name)
    shutil.copy(tiny_model, tmp_path / "model.vae")
    (tmp_path / "out.csv").write_bytes(SENTINEL)
    (tmp_path / "out.vae").write_bytes(SENTINEL)
    (tmp_path / "summary.json").write_bytes(SENTINEL)
    return tmp_path


# ----- building hostile files -------------------------------------------------------
def new_text(w: Path) -> str:
    return (w / "new.csv").read_text()


def write(w: Path, name: str, content: str | bytes) -> Path:
    path = w / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def edited(w: Path, name: str, change: Callable[[pd.DataFrame], pd.DataFrame | None],
           source: str = "new.csv") -> Path:
    """``source`` read as text cells, changed, and written back as ``name``."""
    frame = pd.read_csv(w / source, dtype=str, keep_default_na=False)
    changed = change(frame)
    (frame if changed is None else changed).to_csv(w / name, index=False)
    return w / name


def edited_model(w: Path, change) -> Path:
    """A copy of the work folder's model, its metadata passed through ``change``."""
    return write(w, "edited.vae", rewrite_metadata(model_bytes(w), change))


def column_state(meta: dict, name: str) -> dict:
    """The saved description of column ``name`` in a model file's metadata."""
    return next(c for c in meta["preprocessing"]["columns"] if c.get("name") == name)


def two_inputs_named_alike(w: Path) -> None:
    """d1/x.csv and d2/x.csv (different rows), and an empty output folder sc."""
    for folder, rows in (("d1", 60), ("d2", 20)):
        (w / folder).mkdir()
        edited(w, f"{folder}/x.csv", lambda f, n=rows: f.head(n))
    (w / "sc").mkdir()


def parquet_with_list_column(w: Path) -> Path:
    frame = pd.read_csv(w / "new.csv")
    frame["tags"] = [[1, 2]] * len(frame)
    frame.to_parquet(w / "tags.parquet")
    return w / "tags.parquet"


def mkdir(path: Path, then):
    """Create the folder ``path``, then return ``then`` (for one-line cases)."""
    path.mkdir()
    return then


def cell(column: str, row: int, value: str):
    """A change that sets one cell (``row`` is 0-based; messages count rows from 1)."""
    def change(frame):
        frame.loc[row, column] = value
    return change


def with_line(w: Path, name: str, index: int, edit: Callable[[str], str]) -> Path:
    lines = new_text(w).splitlines()
    lines[index] = edit(lines[index])
    return write(w, name, "\n".join(lines) + "\n")


def latin1(w: Path, name: str, old: str, new: str) -> Path:
    return write(w, name, new_text(w).replace(old, new, 1).encode("latin-1"))


def model_bytes(w: Path) -> bytes:
    return (w / "model.vae").read_bytes()


def score(w: Path, data, *extra, model=None, output=None):
    return ["score", data, "--model", model or w / "model.vae",
            "-o", output or w / "out.csv", *extra]


def fit(w: Path, data, *extra, model=None):
    return ["fit", data, "--model", model or w / "out.vae", "--epochs", 1, "-q", *extra]


# ----- the catalogue ------------------------------------------------------------------
@dataclass
class Case:
    """argv(w) builds the files it needs in the work folder w and returns the arguments.
    ``message`` is the whole Error line (exact=True) or key phrases it must contain;
    ``{w}`` in it stands for the work folder."""

    argv: Callable[[Path], list]
    code: int
    message: str | tuple[str, ...]
    exact: bool = True


def case(id_, argv, code, message, exact=True):
    return pytest.param(Case(argv, code, message, exact), id=id_)


NOT_A_MODEL = "is not a vae-anomaly model file; pass a file written by `vae-anomaly fit`"

CASES = [
    # --- files ---------------------------------------------------------------------
    case("score-missing-file", lambda w: score(w, w / "nope.csv"), 2,
         "Error: file not found: {w}/nope.csv; check the path"),
    case("score-a-directory", lambda w: mkdir(w / "folder.csv", score(w, w / "folder.csv")), 2,
         "Error: {w}/folder.csv is a directory, not a data file; pass a file path"),
    case("score-empty-file", lambda w: score(w, write(w, "empty.csv", b"")), 2,
         "Error: empty.csv is empty (0 bytes); expected a CSV file with a header row"),
    case("score-blank-first-line", lambda w: score(w, write(w, "blank.csv", "\n")), 2,
         "Error: blank.csv has no header row; the first line must name the columns"),
    case("fit-missing-file", lambda w: fit(w, w / "nope.csv"), 2,
         "Error: file not found: {w}/nope.csv; check the path"),
    case("fit-a-directory", lambda w: mkdir(w / "folder.csv", fit(w, w / "folder.csv")), 2,
         "Error: {w}/folder.csv is a directory, not a data file; pass a file path"),
    case("fit-empty-file", lambda w: fit(w, write(w, "empty.csv", b"")), 2,
         "Error: empty.csv is empty (0 bytes); expected a CSV file with a header row"),
    case("fit-header-only",
         lambda w: fit(w, write(w, "header.csv", new_text(w).splitlines()[0] + "\n")), 2,
         "Error: header.csv has 0 row(s); fit needs at least 10 rows of normal records"),
    # --- malformed CSV ---------------------------------------------------------------
    case("score-duplicate-column-names",
         lambda w: score(w, write(w, "dup.csv", new_text(w).replace("amount", "x", 1))), 2,
         "Error: column `x` appears twice in the header of dup.csv; "
         "give every column a unique name"),
    case("fit-duplicate-column-names",
         lambda w: fit(w, write(w, "dup.csv", new_text(w).replace("amount", "x", 1))), 2,
         "Error: column `x` appears twice in the header of dup.csv; "
         "give every column a unique name"),
    case("score-ragged-row-extra-field",
         lambda w: score(w, with_line(w, "ragged.csv", 6, lambda line: line + ",surplus")), 2,
         ("Error: ragged.csv is not a well-formed CSV", "Expected 6 columns, got 7",
          "; fix the file"), False),
    case("score-ragged-row-missing-field",
         lambda w: score(w, with_line(w, "short.csv", 6, lambda line: line.rsplit(",", 1)[0])),
         2, ("Error: short.csv is not a well-formed CSV", "Expected 6 columns, got 5"), False),
    case("fit-ragged-row",
         lambda w: fit(w, with_line(w, "ragged.csv", 6, lambda line: line + ",surplus")), 2,
         ("Error: ragged.csv is not a well-formed CSV", "Expected 6 columns, got 7"), False),
    case("score-semicolon-separated",
         lambda w: score(w, write(w, "semi.csv", new_text(w).replace(",", ";"))), 2,
         "Error: semi.csv seems to be separated by ';', not commas; "
         "save it as a comma-separated CSV"),
    case("score-tab-separated",
         lambda w: score(w, write(w, "tabs.csv", new_text(w).replace(",", "\t"))), 2,
         "Error: tabs.csv seems to be separated by tabs, not commas; "
         "save it as a comma-separated CSV"),
    case("fit-semicolon-separated",
         lambda w: fit(w, write(w, "semi.csv", new_text(w).replace(",", ";"))), 2,
         "Error: semi.csv seems to be separated by ';', not commas; "
         "save it as a comma-separated CSV"),
    case("score-latin1-byte-in-a-value",
         lambda w: score(w, latin1(w, "latin.csv", "red", "r\xe9d")), 2,
         ("Error: latin.csv is not UTF-8 text", "; re-save it as UTF-8"), False),
    case("score-latin1-byte-in-the-header",
         lambda w: score(w, latin1(w, "latin.csv", "colour", "colo\xe9r")), 2,
         ("Error: latin.csv is not UTF-8 text", "; re-save it as UTF-8"), False),
    case("score-latin1-byte-deep-in-a-big-file",  # past the first read buffer: Arrow's check
         lambda w: score(w, _latin1_deep(w)), 2,
         ("Error: deep.csv is not UTF-8 text", "; re-save it as UTF-8"), False),
    case("fit-latin1-byte-in-a-value",
         lambda w: fit(w, latin1(w, "latin.csv", "red", "r\xe9d")), 2,
         ("Error: latin.csv is not UTF-8 text", "; re-save it as UTF-8"), False),
    # --- bad values --------------------------------------------------------------------
    case("score-text-in-numeric-column",
         lambda w: score(w, edited(w, "bad.csv", cell("amount", 11, "about 40"))),
         2, "Error: column `amount` in bad.csv has non-numeric value 'about 40' at row 12; "
            "fix the value or mark it missing"),
    # Row numbers count from the top of the file, not of the chunk being scored.
    case("score-text-in-numeric-column-in-a-later-csv-chunk",
         lambda w: score(w, edited(w, "bad.csv", cell("amount", 11, "about 40")),
                         "--chunk-size", 5),
         2, "Error: column `amount` in bad.csv has non-numeric value 'about 40' at row 12; "
            "fix the value or mark it missing"),
    case("score-text-in-numeric-column-in-a-later-chunk",
         lambda w: score(w, _parquet(w, "bad.parquet", "x", 24, "twelve"), "--chunk-size", 10),
         2, "Error: column `x` in bad.parquet has non-numeric value 'twelve' at row 25; "
            "fix the value or mark it missing"),
    case("score-inf-in-a-later-chunk",
         lambda w: score(w, _parquet(w, "inf.parquet", "y", 24, math.inf), "--chunk-size", 10),
         2, "Error: column `y` in inf.parquet has an infinite value at row 25; "
            "replace it with a finite number or leave the cell empty"),
    case("score-inf", lambda w: score(w, edited(w, "inf.csv", cell("x", 2, "inf"))), 2,
         "Error: column `x` in inf.csv has an infinite value at row 3; "
         "replace it with a finite number or leave the cell empty"),
    case("score-minus-inf", lambda w: score(w, edited(w, "inf.csv", cell("y", 40, "-inf"))), 2,
         "Error: column `y` in inf.csv has an infinite value at row 41; "
         "replace it with a finite number or leave the cell empty"),
    case("score-Infinity-spelt-out",
         lambda w: score(w, edited(w, "inf.csv", cell("amount", 5, "-Infinity"))), 2,
         "Error: column `amount` in inf.csv has an infinite value at row 6; "
         "replace it with a finite number or leave the cell empty"),
    case("score-overflowing-literal",  # parses to inf: as bad as writing inf
         lambda w: score(w, edited(w, "inf.csv", cell("x", 9, "1e999"))), 2,
         ("Error: column `x` in inf.csv has", "at row 10"), False),
    case("fit-inf", lambda w: fit(w, edited(w, "inf.csv", cell("x", 7, "inf"), source="train.csv")),
         2, ("Error: column `x`", "has an infinite value at row 8",
             "; replace it with a finite number or leave the cell empty"), False),
    # --- awkward shapes ----------------------------------------------------------------
    case("fit-single-row",
         lambda w: fit(w, write(w, "one.csv", "\n".join(new_text(w).splitlines()[:2]) + "\n")),
         2, "Error: one.csv has 1 row(s); fit needs at least 10 rows of normal records"),
    case("fit-only-an-id-column",
         lambda w: fit(w, edited(w, "ids.csv", lambda f: f[["id"]], source="train.csv")), 2,
         ("Error: no feature columns are left in ids.csv",), False),
    case("score-missing-model-column",
         lambda w: score(w, edited(w, "cut.csv", lambda f: f.drop(columns=["colour"]))), 2,
         "Error: column `colour` is missing from cut.csv (the model was trained with it)"),
    # --- model files -------------------------------------------------------------------
    case("model-missing", lambda w: score(w, w / "new.csv", model=w / "none.vae"), 2,
         "Error: model file not found: {w}/none.vae; train one with "
         "`vae-anomaly fit DATA.csv` or pass --model PATH"),
    case("model-is-a-directory",
         lambda w: mkdir(w / "dir.vae", score(w, w / "new.csv", model=w / "dir.vae")), 2,
         "Error: {w}/dir.vae is a directory, not a model file; pass the file's path"),
    case("model-empty", lambda w: score(w, w / "new.csv", model=write(w, "empty.vae", b"")), 2,
         "Error: empty.vae is empty (0 bytes); fit the model again"),
    case("model-truncated-to-half",
         lambda w: score(w, w / "new.csv",
                         model=write(w, "half.vae", model_bytes(w)[:len(model_bytes(w)) // 2])),
         2, "Error: half.vae is truncated or corrupt; fit the model again"),
    case("model-random-bytes",
         lambda w: score(w, w / "new.csv",
                         model=write(w, "noise.vae", np.random.default_rng(0).bytes(5000))),
         2, "Error: noise.vae " + NOT_A_MODEL),
    case("model-newer-format-version",
         lambda w: score(w, w / "new.csv", model=write(w, "newer.vae", rewrite_metadata(
             model_bytes(w), lambda m: m.update(format_version=FORMAT_VERSION + 1)))), 2,
         f"Error: newer.vae uses model format {FORMAT_VERSION + 1}, newer than this "
         f"vae-anomaly reads ({FORMAT_VERSION}); upgrade with `pip install -U vae-anomaly`"),
    case("model-format-version-not-a-number",
         lambda w: score(w, w / "new.csv", model=write(w, "odd.vae", rewrite_metadata(
             model_bytes(w), lambda m: m.update(format_version="1")))), 2,
         "Error: odd.vae has no valid format version; fit the model again"),
    case("model-metadata-missing-a-key",
         lambda w: score(w, w / "new.csv", model=write(w, "gutted.vae", rewrite_metadata(
             model_bytes(w), lambda m: m.pop("preprocessing")))), 2,
         ("Error: gutted.vae has inconsistent contents", "; fit the model again"), False),
    # Hand-edited or damaged metadata fails when the file is loaded, never mid-scoring.
    case("model-fpr-out-of-range",
         lambda w: score(w, w / "new.csv", model=edited_model(
             w, lambda m: m["params"].update(fpr=5))), 2,
         "Error: edited.vae has an invalid setting (--fpr must be between 0 and 1 (got 5)); "
         "fit the model again"),
    case("model-samples-out-of-range",
         lambda w: score(w, w / "new.csv", model=edited_model(
             w, lambda m: m["params"].update(samples=10**6))), 2,
         "Error: edited.vae has an invalid setting (--samples must be between 1 and 65536 "
         "(got 1000000)); fit the model again"),
    case("model-column-without-a-name",
         lambda w: score(w, w / "new.csv", model=edited_model(
             w, lambda m: column_state(m, "x").pop("name"))), 2,
         "Error: edited.vae has inconsistent contents (a column description has no name); "
         "fit the model again"),
    case("model-column-of-an-unknown-kind",
         lambda w: score(w, w / "new.csv", model=edited_model(
             w, lambda m: column_state(m, "x").update(kind="bogus"))), 2,
         "Error: edited.vae has inconsistent contents (column `x` has an unknown kind "
         "'bogus'); fit the model again"),
    case("model-columns-not-descriptions",
         lambda w: score(w, w / "new.csv", model=edited_model(
             w, lambda m: m["preprocessing"].update(columns=[1]))), 2,
         "Error: edited.vae has inconsistent contents (a column description has no name); "
         "fit the model again"),
    case("model-scaling-not-a-number",
         lambda w: ["info", edited_model(w, lambda m: column_state(m, "amount").update(
             spread="wide"))], 2,
         "Error: edited.vae has inconsistent contents (column `amount` has a scaling figure "
         "that is not a number); fit the model again"),
    case("model-calibration-tail-out-of-range",
         lambda w: score(w, w / "new.csv", model=edited_model(
             w, lambda m: m["training"].update(calibration_tail=2))), 2,
         "Error: edited.vae has inconsistent contents (its calibration tail share 2 is not "
         "between 0 and 0.5); fit the model again"),
    case("model-categorical-level-added",
         lambda w: score(w, w / "new.csv", model=edited_model(
             w, lambda m: column_state(m, "colour")["levels"].append("ultraviolet"))), 2,
         "Error: edited.vae has inconsistent contents (its column descriptions do not match "
         "its network's inputs); fit the model again"),
    case("model-format-version-true",
         lambda w: score(w, w / "new.csv", model=edited_model(
             w, lambda m: m.update(format_version=True))), 2,
         "Error: edited.vae has no valid format version; fit the model again"),
    case("model-format-version-negative",
         lambda w: score(w, w / "new.csv", model=edited_model(
             w, lambda m: m.update(format_version=-7))), 2,
         "Error: edited.vae has no valid format version; fit the model again"),
    case("model-torch-save-file",
         lambda w: torch.save({"model": torch.zeros(3)}, w / "torch.vae")
         or score(w, w / "new.csv", model=w / "torch.vae"), 2,
         "Error: torch.vae " + NOT_A_MODEL),
    case("model-foreign-safetensors",
         lambda w: score(w, w / "new.csv", model=write(
             w, "foreign.vae", save_safetensors({"w": torch.zeros(2)}, metadata={"x": "1"}))), 2,
         "Error: foreign.vae is not a vae-anomaly model file (a safetensors file from "
         "elsewhere?); pass a file written by `vae-anomaly fit`"),
    case("model-a-csv-file", lambda w: score(w, w / "new.csv", model=w / "train.csv"), 2,
         "Error: train.csv " + NOT_A_MODEL),
    case("info-truncated-model",
         lambda w: ["info", write(w, "half.vae", model_bytes(w)[:len(model_bytes(w)) // 2])], 2,
         "Error: half.vae is truncated or corrupt; fit the model again"),
    # --- output ------------------------------------------------------------------------
    case("output-folder-missing", lambda w: score(w, w / "new.csv", output=w / "nope" / "o.csv"),
         2, "Error: output folder {w}/nope does not exist; create it first"),
    case("output-in-proc", lambda w: score(w, w / "new.csv", output="/proc/out.csv"), 2,
         ("Error: cannot write in folder /proc", "; choose another location"), False),
    case("output-folder-under-proc-missing",
         lambda w: score(w, w / "new.csv", output="/proc/vae-test/out.csv"), 2,
         "Error: output folder /proc/vae-test does not exist; create it first"),
    case("fit-model-in-proc", lambda w: fit(w, w / "train.csv", model="/proc/m.vae"), 2,
         ("Error: cannot write in folder /proc", "; choose another location"), False),
    case("output-is-the-input", lambda w: score(w, w / "new.csv", output=w / "new.csv"), 2,
         "Error: --output {w}/new.csv is the input file itself; "
         "choose another path so the input is not overwritten"),
    case("output-is-the-input-by-another-name",
         lambda w: mkdir(w / "sub", score(w, w / "new.csv", output=w / "sub" / ".." / "new.csv")),
         2,
         ("is the input file itself; choose another path so the input is not overwritten",),
         False),
    case("output-is-a-symlink-to-the-input",
         lambda w: (w / "link.csv").symlink_to(w / "new.csv")
         or score(w, w / "new.csv", output=w / "link.csv"), 2,
         ("is the input file itself; choose another path so the input is not overwritten",),
         False),
    case("output-is-an-existing-directory",
         lambda w: mkdir(w / "outdir", score(w, w / "new.csv", output=w / "outdir")), 2,
         "Error: {w}/outdir is a directory; pass a file path to write"),
    case("summary-folder-missing",
         lambda w: score(w, w / "new.csv", "--summary", w / "nope" / "s.json"), 2,
         "Error: output folder {w}/nope does not exist; create it first"),
    case("summary-is-a-directory",
         lambda w: mkdir(w / "sdir", score(w, w / "new.csv", "--summary", w / "sdir")), 2,
         "Error: {w}/sdir is a directory; pass a file path to write"),
    case("output-dir-missing",
         lambda w: ["score", w / "new.csv", "--model", w / "model.vae",
                    "--output-dir", w / "nope"], 2,
         "Error: output folder {w}/nope does not exist; create it first"),
    # Neither --output nor --summary may land on the input, the model or each other.
    case("output-is-the-model", lambda w: score(w, w / "new.csv", output=w / "model.vae"), 2,
         ("Error: --output {w}/model.vae",), False),
    case("summary-is-the-input",
         lambda w: score(w, w / "new.csv", "--summary", w / "new.csv"), 2,
         ("Error: --summary {w}/new.csv",), False),
    case("summary-is-the-output",
         lambda w: score(w, w / "new.csv", "--summary", w / "out.csv"), 2,
         ("Error: --summary {w}/out.csv",), False),
    case("summary-is-the-output-about-to-be-written",  # not there yet: still refused
         lambda w: score(w, w / "new.csv", "--summary", w / "fresh.csv", output=w / "fresh.csv"),
         2, "Error: --summary {w}/fresh.csv is the output file itself; choose another path so "
            "the output is not overwritten"),
    case("summary-is-an-output-in-the-output-dir",
         lambda w: mkdir(w / "sc", ["score", w / "new.csv", "--model", w / "model.vae",
                                    "--output-dir", w / "sc", "--summary", w / "sc" / "new.csv"]),
         2, "Error: --summary {w}/sc/new.csv is the output file itself; choose another path so "
            "the output is not overwritten"),
    case("glob-inputs-of-one-name-into-one-output-dir",  # the second would replace the first
         lambda w: two_inputs_named_alike(w) or [
             "score", str(w / "d*" / "x.csv"), "--model", w / "model.vae",
             "--output-dir", w / "sc"], 2,
         "Error: {w}/d1/x.csv and {w}/d2/x.csv would both be written to {w}/sc/x.csv; score "
         "them in separate runs or give them different names"),
    case("report-output-is-the-model",
         lambda w: ["report", w / "model.vae", "-o", w / "model.vae"], 2,
         "Error: --output {w}/model.vae is the model file itself; choose another path so the "
         "model is not overwritten"),
    case("report-output-is-the-scored-file",
         lambda w: ["report", w / "model.vae", w / "new.csv", "-o", w / "new.csv"], 2,
         "Error: --output {w}/new.csv is the input file itself; choose another path so the "
         "input is not overwritten"),
    case("summary-to-standard-output",
         lambda w: score(w, w / "new.csv", "--summary", "-"), 2,
         "Error: --summary needs a file path, not - (standard output carries the scored rows "
         "with -o -); pass e.g. --summary run.json"),
    case("summary-is-the-model",
         lambda w: score(w, w / "new.csv", "--summary", w / "model.vae"), 2,
         ("Error: --summary {w}/model.vae",), False),
    case("fit-model-is-the-data", lambda w: fit(w, w / "train.csv", model=w / "train.csv"), 2,
         "Error: --model {w}/train.csv is the input file itself; "
         "choose another path so the input is not overwritten"),
    case("fit-model-is-a-directory",
         lambda w: mkdir(w / "mdir", fit(w, w / "train.csv", model=w / "mdir")), 2,
         "Error: {w}/mdir is a directory; pass a file path to write"),
    case("fit-model-folder-missing",
         lambda w: fit(w, w / "train.csv", model=w / "nope" / "m.vae"), 2,
         "Error: output folder {w}/nope does not exist; create it first"),
    # --- options and clashes -------------------------------------------------------------
    case("score-input-already-has-anomaly_score",
         lambda w: score(w, edited(w, "scored.csv", lambda f: f.assign(anomaly_score="1"))), 2,
         "Error: scored.csv already has a column `anomaly_score` (is it an output of score?); "
         "rename or drop that column"),
    case("score-samples-0", lambda w: score(w, w / "new.csv", "--samples", 0), 2,
         "Error: --samples must be between 1 and 65536 (got 0)"),
    case("score-samples-negative", lambda w: score(w, w / "new.csv", "--samples", -3), 2,
         "Error: --samples must be between 1 and 65536 (got -3)"),
    case("score-samples-beyond-the-noise-table",  # must be a usage error, not exit 4
         lambda w: score(w, w / "new.csv", "--samples", 100_000), 2, ("Error: --samples",), False),
    case("score-threshold-nan",  # would flag nothing, so --fail-on-anomaly could never fire
         lambda w: score(w, w / "new.csv", "--threshold", "nan", "--fail-on-anomaly"), 2,
         ("Error: --threshold",), False),
    case("score-explain-negative", lambda w: score(w, w / "new.csv", "--explain", -1), 2,
         "Error: --explain must be zero or more (got -1)"),
    case("score-seed-beyond-64-bits", lambda w: score(w, w / "new.csv", "--seed", 2**64), 2,
         ("Error: --seed",), False),
    case("fit-negative-seed", lambda w: fit(w, w / "train.csv", "--seed", -1), 2,
         ("Error: --seed",), False),
    case("fit-seed-beyond-64-bits", lambda w: fit(w, w / "train.csv", "--seed", 2**64), 2,
         ("Error: --seed",), False),
    case("score-chunk-size-0", lambda w: score(w, w / "new.csv", "--chunk-size", 0), 2,
         "Error: --chunk-size must be at least 1 (got 0)"),
    case("fit-fpr-1.5", lambda w: fit(w, w / "train.csv", "--fpr", 1.5), 2,
         "Error: --fpr must be between 0 and 1 (got 1.5)"),
    case("fit-fpr-0", lambda w: fit(w, w / "train.csv", "--fpr", 0), 2,
         "Error: --fpr must be between 0 and 1 (got 0.0)"),
    case("fit-epochs-0", lambda w: fit(w, w / "train.csv", "--epochs", 0), 2,
         "Error: --epochs must be at least 1"),
    case("fit-batch-size-0", lambda w: fit(w, w / "train.csv", "--batch-size", 0), 2,
         "Error: --batch-size must be at least 1"),
    case("fit-latent-dim-0", lambda w: fit(w, w / "train.csv", "--latent-dim", 0), 2,
         "Error: --latent-dim must be between 1 and 1024 (got 0)"),
    case("fit-negative-beta", lambda w: fit(w, w / "train.csv", "--beta", -1), 2,
         "Error: --beta must be zero or more (got -1.0)"),
    case("fit-unknown-exclude-column",
         lambda w: fit(w, w / "train.csv", "--exclude", "nope"), 2,
         ("Error: column `nope` named in --categorical/--exclude is not in train.csv",), False),
    case("score-glob-matching-nothing",
         lambda w: score(w, str(w / "incoming" / "*.csv")), 2,
         ("Error: no files match", "; check the pattern"), False),
    case("score-parquet-list-column-to-csv",  # a CSV cell cannot hold a list
         lambda w: score(w, parquet_with_list_column(w)), 2,
         "Error: column `tags` holds list<element: int64> values, which a CSV output cannot "
         "hold; write a .parquet output or drop the column"),
    case("score-gzip-content-named-csv",
         lambda w: score(w, write(w, "gz.csv", gzip.compress(new_text(w).encode()))), 2,
         "Error: gz.csv is gzip-compressed but its name does not end in .gz; rename it to "
         "gz.csv.gz (or decompress it)"),
    case("score-truncated-gzip",
         lambda w: score(w, write(w, "cut.csv.gz", _cut_in_half(gzip.compress(_long_text(w))))),
         2, "Error: cut.csv.gz is not valid gzip data (Truncated compressed stream); check the "
            "file or export it again"),
    case("score-plain-text-named-gz",
         lambda w: score(w, write(w, "plain.csv.gz", new_text(w).encode())), 2,
         "Error: plain.csv.gz is not valid gzip data (zlib inflate failed: incorrect header "
         "check); check the file or export it again"),
    case("fit-corrupt-gzip",
         lambda w: ("fit", write(w, "bad.csv.gz", b"\x1f\x8b" + b"garbage" * 50), "--model",
                    w / "model.vae"), 2,
         ("Error: bad.csv.gz is not valid gzip data (zlib inflate failed",
          "; check the file or export it again"), False),
    case("score-truncated-zstd",
         lambda w: score(w, write(w, "cut.csv.zst", _cut_in_half(
             pa.compress(_long_text(w), "zstd", asbytes=True)))), 2,
         "Error: cut.csv.zst is not valid zstd data (Truncated compressed stream); check the "
         "file or export it again"),
    case("score-corrupt-parquet",
         lambda w: score(w, write(w, "bad.parquet", b"PAR1 not really parquet")), 2,
         ("Error: bad.parquet is not a readable Parquet file",), False),
    # Usage errors are errors too: one line, no help box (cron mails stderr verbatim).
    case("usage-non-integer-samples", lambda w: score(w, w / "new.csv", "--samples", "many"), 2,
         ("Error: ", "--samples"), False),
    case("usage-unknown-option", lambda w: score(w, w / "new.csv", "--bogus"), 2,
         ("Error: ", "--bogus"), False),
]


def _parquet(w: Path, name: str, column: str, row: int, value) -> Path:
    """new.csv as Parquet (numbers typed; ``column`` as text if ``value`` is text)."""
    frame = pd.read_csv(w / "new.csv")
    if isinstance(value, str):
        frame[column] = frame[column].astype(str)
    frame.loc[row, column] = value
    frame.to_parquet(w / name)
    return w / name


def _long_text(w: Path) -> bytes:
    """new.csv many times over: a compressed file long enough to cut mid-stream."""
    text = new_text(w)
    return (text + "".join(text.split("\n", 1)[1] for _ in range(30))).encode()


def _cut_in_half(payload: bytes) -> bytes:
    return payload[:len(payload) // 2]


def _latin1_deep(w: Path) -> Path:
    frame = pd.read_csv(w / "train.csv", dtype=str, keep_default_na=False)
    big = pd.concat([frame] * 12, ignore_index=True)  # ~4800 rows, ~200 kB
    raw = big.to_csv(index=False).encode()
    at = raw.rindex(b"red")  # near the end: a lone latin-1 byte in the last rows
    return write(w, "deep.csv", raw[:at] + "r\xe9d".encode("latin-1") + raw[at + 3:])


@pytest.mark.parametrize("c", CASES)
def test_hostile_input_is_refused_cleanly(work, c: Case):
    argv = c.argv(work)
    before = snapshot(work)
    result = invoke(*argv)
    line = assert_one_line_error(result, c.code)
    if c.exact:
        assert line == c.message.format(w=work)
    else:
        for phrase in c.message:
            assert phrase.format(w=work) in line, line
    assert snapshot(work) == before, "a failed run created, changed or removed a file"
    assert not leftovers(work)


def test_catalogue_is_big_enough():
    assert len(CASES) >= 30


class _Exploit:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("command", ["score", "info"])
def test_pickle_payload_is_refused_without_being_run(work, command):
    marker = work / "pwned"
    (work / "evil.vae").write_bytes(pickle.dumps({"weights": _Exploit(marker)}))
    before = snapshot(work)
    if command == "score":
        result = invoke(*score(work, work / "new.csv", model=work / "evil.vae"))
    else:
        result = invoke("info", work / "evil.vae")
    assert assert_one_line_error(result, 2) == "Error: evil.vae " + NOT_A_MODEL
    assert not marker.exists(), "loading the model file executed code"
    assert snapshot(work) == before


# ----- inputs that must work ----------------------------------------------------------
def scored(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def scores(path: Path) -> np.ndarray:
    return pd.read_csv(path)["anomaly_score"].to_numpy(dtype=float)


def test_header_only_score_is_a_normal_night(work):
    header = new_text(work).splitlines()[0]
    write(work, "header.csv", header + "\n")
    result = invoke(*score(work, work / "header.csv"))
    assert result.exit_code == 0, result.stderr
    assert "Note: header.csv has no rows; wrote a header-only output" in result.stderr
    lines = (work / "out.csv").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith(header + ",anomaly_score,is_anomaly")
    assert not leftovers(work)


def test_a_header_with_no_line_break_after_it_is_a_normal_night_too(work):
    header = new_text(work).splitlines()[0]
    write(work, "header.csv", header)  # no "\n": some exporters end the file so
    result = invoke(*score(work, work / "header.csv"))
    assert result.exit_code == 0, result.stderr
    lines = (work / "out.csv").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith(header + ",anomaly_score,is_anomaly")


def test_a_quiet_parquet_night_keeps_the_column_types(work):
    typed = pd.read_csv(work / "new.csv")
    typed.iloc[:0].to_parquet(work / "none.parquet")
    typed.to_parquet(work / "some.parquet")
    for name in ("none", "some"):
        result = invoke(*score(work, work / f"{name}.parquet", output=work / f"{name}.out.parquet"))
        assert result.exit_code == 0, result.stderr
    quiet, busy = (pq.read_schema(work / f"{n}.out.parquet") for n in ("none", "some"))
    assert quiet.names == busy.names
    for name in typed.columns:
        assert quiet.field(name).type == busy.field(name).type, name
    assert pa.types.is_floating(quiet.field("x").type)


def test_a_parquet_column_with_no_values_at_all_scores_as_all_missing(work):
    frame = pd.read_csv(work / "new.csv")
    frame["amount"] = None  # pandas writes this as Arrow type null
    frame.to_parquet(work / "nulls.parquet")
    assert pa.types.is_null(pq.read_schema(work / "nulls.parquet").field("amount").type)
    result = invoke(*score(work, work / "nulls.parquet"))
    assert result.exit_code == 0, result.stderr
    assert "column `amount` is missing in 100.0% of rows" in result.stderr
    assert len(pd.read_csv(work / "out.csv")) == len(frame)


def test_a_file_name_with_glob_characters_is_that_file(work):
    shutil.copy(work / "new.csv", work / "data[1].csv")
    result = invoke(*score(work, work / "data[1].csv"))
    assert result.exit_code == 0, result.stderr
    expected = invoke(*score(work, work / "new.csv", output=work / "plain.csv"))
    assert expected.exit_code == 0
    assert (work / "out.csv").read_bytes() == (work / "plain.csv").read_bytes()


def test_a_reader_that_stops_early_gets_one_line_and_no_traceback(work):
    big = pd.concat([pd.read_csv(work / "new.csv")] * 400, ignore_index=True)
    # ~3 MB of output: more than a pipe holds even when grown to Linux's largest size
    # (pipe-max-size, 1 MiB), so the command cannot finish before the reader leaves.
    big.to_csv(work / "big.csv", index=False)
    process = subprocess.Popen(
        [sys.executable, "-m", "vae_anomaly", "score", str(work / "big.csv"),
         "--model", str(work / "model.vae"), "-o", "-", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.readline()
    process.stdout.close()  # as `| head -1` does
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 2
    assert stderr == ("Error: standard output was closed before every row was written (the "
                      "command reading it stopped early); write to a file with -o to keep "
                      "every row\n")


def test_an_output_path_that_is_a_symlink_loop_is_replaced_like_any_file(work):
    (work / "loop.csv").symlink_to(work / "loop.csv")
    result = invoke(*score(work, work / "new.csv", output=work / "loop.csv"))
    assert result.exit_code == 0, result.stderr
    assert not (work / "loop.csv").is_symlink()
    assert len(pd.read_csv(work / "loop.csv")) == 60


def test_a_pattern_too_long_to_be_a_file_name_matches_nothing(work):
    pattern = str(work / ("x" * 300 + "*.csv"))
    result = invoke(*score(work, pattern))
    line = assert_one_line_error(result, 2)
    assert line.startswith("Error: no files match")


def test_no_arguments_prints_help_and_no_empty_error_line():
    result = invoke()
    assert "Usage:" in result.stdout
    assert "Error" not in result.stderr


def test_utf8_bom_is_read_as_plain_utf8(work):
    write(work, "bom.csv", b"\xef\xbb\xbf" + (work / "new.csv").read_bytes())
    result = invoke(*score(work, work / "bom.csv"))
    assert result.exit_code == 0, result.stderr
    raw = (work / "out.csv").read_bytes()
    assert raw.startswith(b"id,x,y,amount,colour,member,anomaly_score"), raw[:60]
    assert invoke(*score(work, work / "new.csv", output=work / "plain.csv")).exit_code == 0
    np.testing.assert_array_equal(scores(work / "out.csv"), scores(work / "plain.csv"))

    write(work, "bom_train.csv", b"\xef\xbb\xbf" + (work / "train.csv").read_bytes())
    result = invoke(*fit(work, work / "bom_train.csv", model=work / "bom.vae"))
    assert result.exit_code == 0, result.stderr
    info = json.loads(invoke("info", work / "bom.vae", "--json").stdout)
    assert [c["name"] for c in info["columns"]] == FEATURES
    assert list(info["ignored_columns"]) == ["id"]
    assert invoke(*score(work, work / "new.csv", model=work / "bom.vae",
                         output=work / "o2.csv")).exit_code == 0


def test_quoted_newlines_inside_values_work_for_fit_and_score(work):
    notes = ["plain", 'two\nlines', 'comma, "quoted"\nand more', "trailing\n"]
    train = pd.read_csv(work / "train.csv", dtype=str, keep_default_na=False)
    train["note"] = [notes[i % 4] for i in range(len(train))]
    train.to_csv(work / "qtrain.csv", index=False)
    result = invoke(*fit(work, work / "qtrain.csv", model=work / "q.vae"))
    assert result.exit_code == 0, result.stderr
    info = json.loads(invoke("info", work / "q.vae", "--json").stdout)
    assert {"name": "note", "kind": "categorical"}.items() <= \
        next(c for c in info["columns"] if c["name"] == "note").items()

    new = pd.read_csv(work / "new.csv", dtype=str, keep_default_na=False)
    new["note"] = [notes[(i + 1) % 4] for i in range(len(new))]
    new.loc[3, "id"] = "multi\nline id"
    new.to_csv(work / "qnew.csv", index=False)
    result = invoke(*score(work, work / "qnew.csv", model=work / "q.vae"))
    assert result.exit_code == 0, result.stderr
    out = scored(work / "out.csv")
    assert len(out) == len(new) == 60
    pd.testing.assert_frame_equal(out[new.columns], new)
    assert np.isfinite(out["anomaly_score"].astype(float)).all()


def test_1e308_scores_finite_and_is_flagged(work):
    def change(frame):
        frame.loc[2, "x"] = "1e308"
        frame.loc[3, "y"] = "-1e308"
        frame.loc[4, "amount"] = "1.7976931348623157e308"
        frame.loc[5, "amount"] = "5e-324"
    edited(work, "huge.csv", change)
    result = invoke(*score(work, work / "huge.csv"))
    assert result.exit_code == 0, result.stderr
    out = pd.read_csv(work / "out.csv")
    for column in ("anomaly_score", "reconstruction_nll", "kl_divergence"):
        assert np.isfinite(out[column]).all(), out[column]
    assert out.loc[2:4, "is_anomaly"].tolist() == [1, 1, 1]


def test_all_missing_column_at_fit_is_ignored_with_a_note(work):
    edited(work, "empty_col.csv", lambda f: f.assign(nothing=""), source="train.csv")
    result = invoke("fit", work / "empty_col.csv", "--model", work / "e.vae", "--epochs", 1)
    assert result.exit_code == 0, result.stderr
    assert "Note: column `nothing` is ignored: it is empty in every row" in result.stderr
    info = json.loads(invoke("info", work / "e.vae", "--json").stdout)
    assert [c["name"] for c in info["columns"]] == FEATURES
    # Scoring works with the empty column and without it.
    assert invoke(*score(work, work / "new.csv", model=work / "e.vae")).exit_code == 0
    edited(work, "new_empty.csv", lambda f: f.assign(nothing="x"))
    assert invoke(*score(work, work / "new_empty.csv", model=work / "e.vae",
                         output=work / "o2.csv")).exit_code == 0


@pytest.mark.parametrize("column", ["amount", "colour"])
def test_all_missing_column_at_score_works_and_is_drift(work, column):
    edited(work, "blank.csv", lambda f: f.assign(**{column: ""}))
    result = invoke(*score(work, work / "blank.csv"))
    assert result.exit_code == 0, result.stderr
    assert f"Warning: blank.csv: column `{column}` is missing in 100.0% of rows" in result.stderr
    out = pd.read_csv(work / "out.csv")
    assert len(out) == 60 and np.isfinite(out["anomaly_score"]).all()

    (work / "out.csv").write_bytes(SENTINEL)
    drift = invoke(*score(work, work / "blank.csv", "--fail-on-drift"))
    assert drift.exit_code == 3, drift.stderr
    assert len(pd.read_csv(work / "out.csv")) == 60  # the output is still written, whole
    assert not leftovers(work)


def test_constant_column_fits_and_a_change_in_it_scores_higher(work):
    edited(work, "const.csv", lambda f: f.assign(level="7", site="north"), source="train.csv")
    result = invoke("fit", work / "const.csv", "--model", work / "c.vae", "--epochs", 15, "-q")
    assert result.exit_code == 0, result.stderr
    base = pd.read_csv(work / "new.csv", dtype=str, keep_default_na=False).iloc[[7]]

    def score_of(name, **cells):
        base.assign(**cells).to_csv(work / f"{name}.csv", index=False)  # always row 1
        r = invoke(*score(work, work / f"{name}.csv", model=work / "c.vae",
                          output=work / f"{name}_out.csv"))
        assert r.exit_code == 0, r.stderr
        return float(scores(work / f"{name}_out.csv")[0])

    same = score_of("same", level="7", site="north")
    assert score_of("level8", level="8", site="north") > same
    assert score_of("level1000", level="1000", site="north") > same
    assert score_of("south", level="7", site="south") > same


def test_wide_table_10000_numeric_columns_fits_quickly_or_fails_cleanly(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(30, 10_000)).round(3),
                         columns=[f"c{i}" for i in range(10_000)])
    frame.to_csv(tmp_path / "wide.csv", index=False)
    started = time.perf_counter()
    result = invoke("fit", tmp_path / "wide.csv", "--model", tmp_path / "wide.vae",
                    "--epochs", 1, "-q")
    seconds = time.perf_counter() - started
    if result.exit_code == 0:
        assert (tmp_path / "wide.vae").exists()
    else:
        assert_one_line_error(result, 2)
        assert not (tmp_path / "wide.vae").exists()
    assert seconds < 60, f"fit of 10,000 columns x 30 rows took {seconds:.0f}s"


def test_text_column_with_a_distinct_value_per_row_is_excluded_with_a_note(work):
    edited(work, "comments.csv",
           lambda f: f.assign(comment=[f"free text nº{i} – ü" for i in range(len(f))]),
           source="train.csv")
    result = invoke("fit", work / "comments.csv", "--model", work / "t.vae", "--epochs", 1)
    assert result.exit_code == 0, result.stderr
    assert "Note: column `comment` is ignored: it has a distinct value in every row" \
        in result.stderr
    info = json.loads(invoke("info", work / "t.vae", "--json").stdout)
    assert "comment" in info["ignored_columns"]
    assert [c["name"] for c in info["columns"]] == FEATURES


def test_extra_unknown_column_is_passed_through_unchanged(work):
    assert invoke(*score(work, work / "new.csv", output=work / "plain.csv")).exit_code == 0

    def add(frame):
        frame.insert(2, "comment", [f"note, \"{i}\"" if i % 3 else "" for i in range(len(frame))])
        return frame
    extra = edited(work, "extra.csv", add)
    result = invoke(*score(work, extra))
    assert result.exit_code == 0, result.stderr
    original = pd.read_csv(extra, dtype=str, keep_default_na=False)
    out = scored(work / "out.csv")
    assert list(out.columns[:len(original.columns)]) == list(original.columns)
    pd.testing.assert_frame_equal(out[original.columns], original)
    np.testing.assert_array_equal(scores(work / "out.csv"), scores(work / "plain.csv"))


def test_columns_in_another_order_give_the_same_scores(work):
    assert invoke(*score(work, work / "new.csv", output=work / "plain.csv")).exit_code == 0
    reordered = edited(work, "reordered.csv", lambda f: f[list(reversed(f.columns))])
    result = invoke(*score(work, reordered))
    assert result.exit_code == 0, result.stderr
    out = scored(work / "out.csv")
    assert list(out.columns[:6]) == ["member", "colour", "amount", "y", "x", "id"]
    np.testing.assert_array_equal(scores(work / "out.csv"), scores(work / "plain.csv"))


# ----- numerical safety -----------------------------------------------------------------
def _fit_and_check(tmp_path: Path, train: pd.DataFrame, new: pd.DataFrame) -> np.ndarray:
    """Fit on ``train``, then check every weight, the threshold and the scores of ``new``
    are finite. Returns the scores."""
    train.to_csv(tmp_path / "train.csv", index=False)
    new.to_csv(tmp_path / "new.csv", index=False)
    fit_file(tmp_path / "train.csv", tmp_path / "m.vae", epochs=5, seed=0)
    detector = load(tmp_path / "m.vae")
    for name, tensor in detector.model_.state_dict().items():
        assert torch.isfinite(tensor).all(), f"weight {name} is not finite"
    assert math.isfinite(detector.threshold_)
    assert np.isfinite(detector.validation_scores_).all()
    score_file(tmp_path / "new.csv", tmp_path / "m.vae", output=tmp_path / "out.csv")
    out = pd.read_csv(tmp_path / "out.csv")
    assert len(out) == len(new)
    for column in ("anomaly_score", "reconstruction_nll", "kl_divergence", "p_value"):
        assert np.isfinite(out[column]).all(), (column, out[column][~np.isfinite(out[column])])
    return out["anomaly_score"].to_numpy()


def test_huge_values_with_tiny_variance_train_and_score_finitely(tmp_path):
    def frame(n, seed):
        r = np.random.default_rng(seed)
        return pd.DataFrame({"big": 1e200 * (1 + 1e-12 * r.normal(size=n)),
                             "small": r.normal(size=n),
                             "group": r.choice(["a", "b"], size=n)})
    new = frame(30, 2)
    new.loc[0, "big"], new.loc[1, "big"], new.loc[2, "big"] = 1.1e200, -1e200, 0.0
    new.loc[3, "big"] = np.nan
    found = _fit_and_check(tmp_path, frame(300, 1), new)
    assert found[:3].min() > np.median(found[4:])


def test_mixed_scales_from_1e_minus_300_to_1e300_train_and_score_finitely(tmp_path):
    def frame(n, seed):
        r = np.random.default_rng(seed)
        return pd.DataFrame({
            "tiny": 1e-300 * r.normal(size=n),
            "huge": 1e300 * r.normal(size=n),
            "mixed": r.choice([-1, 1], size=n) * 10.0 ** r.uniform(-300, 300, size=n),
            "plain": r.normal(size=n),
        })
    new = frame(30, 2)
    new.loc[0, ["tiny", "huge", "mixed"]] = [1e300, 1e-300, 0.0]
    new.loc[1, ["tiny", "huge", "mixed"]] = [-1.7e308, 1.7e308, 5e-324]
    new.loc[2, ["tiny", "huge", "mixed", "plain"]] = np.nan
    _fit_and_check(tmp_path, frame(300, 1), new)


def test_values_near_the_float64_limit_with_missing_cells_train_and_score_finitely(tmp_path):
    """Medians, spreads and means of numbers near 1.8e308 overflow if computed naively."""
    def frame(n, seed):
        r = np.random.default_rng(seed)
        near_max = r.uniform(1.5e308, 1.79e308, size=n)
        spread = r.choice([-1.79e308, 1.79e308], size=n) * r.uniform(0.9, 1, size=n)
        f = pd.DataFrame({"near_max": near_max, "both_ends": spread, "plain": r.normal(size=n)})
        f.loc[r.random(n) < 0.1, ["near_max", "both_ends"]] = np.nan
        return f
    _fit_and_check(tmp_path, frame(300, 1), frame(30, 2))


def test_a_column_constant_at_the_float64_maximum_scores_finitely_and_quietly(tmp_path):
    """Through the real command: with --quiet a good run prints nothing at all (no numpy
    RuntimeWarning lines in cron's mail), and every score is a number."""

    top = np.finfo(np.float64).max
    rng = np.random.default_rng(0)
    pd.DataFrame({"level": [top] * 50, "plain": rng.normal(size=50)}).to_csv(
        tmp_path / "train.csv", index=False)
    pd.DataFrame({"level": [top, -top, 0.0, np.nan], "plain": [0.0] * 4}).to_csv(
        tmp_path / "new.csv", index=False)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "vae_anomaly", *map(str, args), "-q"],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)

    fitted = run("fit", tmp_path / "train.csv", "--model", tmp_path / "m.vae", "--epochs", 3)
    assert (fitted.returncode, fitted.stderr) == (0, "")
    scored_run = run("score", tmp_path / "new.csv", "--model", tmp_path / "m.vae",
                     "-o", tmp_path / "out.csv")
    assert (scored_run.returncode, scored_run.stderr) == (0, "")
    out = pd.read_csv(tmp_path / "out.csv")
    assert np.isfinite(out["anomaly_score"]).all(), out
    assert out["is_anomaly"].tolist()[1:3] == [1, 1]  # -max and 0 are far from a constant max
