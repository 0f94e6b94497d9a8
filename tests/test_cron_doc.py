"""docs/cron.md quotes real error lines; each is reproduced here, so the page
cannot drift from what a cron log will actually show."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vae_anomaly.cli import app
from vae_anomaly.data import exclusive_lock

CRON_MD = Path(__file__).resolve().parent.parent / "docs" / "cron.md"
runner = CliRunner()


@pytest.fixture
def night(tmp_path, tiny_dir, tiny_model):
    """A folder holding the files the page's examples name."""
    shutil.copy(tiny_model, tmp_path / "model.vae")
    good = (tiny_dir / "new.csv").read_text()
    header, first, second, *rest = good.splitlines()
    (tmp_path / "new.csv").write_text(good)
    (tmp_path / "big.csv").write_text(good)
    columns = header.split(",")
    amount = columns.index("amount")
    (tmp_path / "nocol.csv").write_text(
        "\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != amount)
                  for line in good.splitlines()) + "\n")
    cells = rest[1].split(",")
    cells[amount] = "n/a?"
    (tmp_path / "badval.csv").write_text("\n".join([header, first, second, ",".join(cells)]) + "\n")
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "semi.csv").write_text(good.replace(",", ";"))
    (tmp_path / "trunc.vae").write_bytes((tmp_path / "model.vae").read_bytes()[:2000])
    (tmp_path / "same.csv").write_text(good)
    long = (good + "".join(good.split("\n", 1)[1] for _ in range(40))).encode()
    packed = gzip.compress(long)
    (tmp_path / "txns.csv.gz").write_bytes(packed[:len(packed) // 2])  # cut off mid-stream
    (tmp_path / "gz.csv").write_bytes(gzip.compress(good.encode()))
    return tmp_path


def _error_line(night: Path, *arguments: str) -> str:
    result = runner.invoke(app, ["score", *arguments])
    assert result.exit_code == 2, result.output
    return result.stderr.strip().replace(str(night) + "/", "")


@pytest.mark.parametrize("arguments", [
    ["nocol.csv"], ["badval.csv"], ["empty.csv"], ["semi.csv"],
    ["new.csv", "--model", "nope.vae"], ["new.csv", "--model", "trunc.vae"],
    ["same.csv", "-o", "same.csv"], ["txns.csv.gz"], ["gz.csv"],
])
def test_each_quoted_exit_2_error_is_what_score_prints(night, arguments, monkeypatch):
    monkeypatch.chdir(night)
    line = _error_line(night, *arguments, "--quiet")
    assert line.startswith("Error: ")
    assert line in CRON_MD.read_text(), f"docs/cron.md does not quote: {line}"


def test_missing_folder_and_lock_errors_are_quoted(night, monkeypatch):
    monkeypatch.chdir(night)
    text = CRON_MD.read_text()
    missing = _error_line(night, "new.csv", "-o", str(night / "nodir" / "x.csv"))
    assert missing.replace("nodir", "/tmp/docchk/nodir") in text, missing
    with exclusive_lock(night / "big.scored.csv"):
        locked = _error_line(night, "big.csv")
    assert locked in text, locked


def test_usage_errors_are_quoted():
    text = CRON_MD.read_text()
    for arguments in (["score", "x.csv", "--bogus"], ["score"]):
        result = runner.invoke(app, arguments)
        assert result.exit_code == 2
        assert result.stderr.strip() in text, result.stderr
