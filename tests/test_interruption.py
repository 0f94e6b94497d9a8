"""Interrupting real runs: cron's `timeout` (SIGTERM), Ctrl-C (SIGINT), the OOM
killer (SIGKILL), and two overlapping runs. Each keeps any earlier output whole.

These start `python -m vae_anomaly` as real processes and signal them once they
have started writing, so they hold on a slow, busy machine: every wait polls for
a file the run creates, with generous time limits.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_records

pytestmark = pytest.mark.skipif(
    os.name != "posix" or not all(hasattr(signal, s) for s in ("SIGTERM", "SIGKILL", "SIGINT")),
    reason="needs POSIX signals (SIGTERM, SIGINT, SIGKILL)")

SENTINEL = b"id,anomaly_score\nprevious,1.0\n"
START_TIMEOUT = 180  # seconds for a run to import torch, load and start writing
RUN_TIMEOUT = 300


def _default_signals():
    # Start from default handlers whatever the test runner ignores, so that Python
    # installs its own SIGINT handler (KeyboardInterrupt) in the child.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def start(*args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vae_anomaly", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_signals)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"the run did not end within {RUN_TIMEOUT}s; stderr: {err}")
    return process.returncode, out, err


def wait_for(process: subprocess.Popen, ready, what: str) -> None:
    """Poll until ready() is true; fail if the process ends first or it takes too long."""
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if process.poll() is not None:
            code, out, err = finish(process)
            pytest.fail(f"the run ended (exit {code}) before {what}; stderr: {err}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no sign of {what} within {START_TIMEOUT}s")
        time.sleep(0.02)


def partials(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.partial"))


def locks(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.lock"))


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory) -> Path:
    """300,000 normal records (~12 MB): long enough to score that a signal lands mid-run."""
    path = tmp_path_factory.mktemp("big") / "big.csv"
    make_records(300_000, seed=5).to_csv(path, index=False)
    return path


@pytest.fixture()
def work(tmp_path, tiny_model) -> Path:
    shutil.copy(tiny_model, tmp_path / "model.vae")
    (tmp_path / "out.csv").write_bytes(SENTINEL)
    return tmp_path


def _start_scoring(work: Path, data: Path) -> subprocess.Popen:
    process = start("score", data, "--model", work / "model.vae", "-o", work / "out.csv",
                    "--chunk-size", 2000, cwd=work)
    # The temporary output appears once the model is loaded and scoring has begun.
    wait_for(process, lambda: partials(work), "the temporary output file")
    time.sleep(1.0)
    assert process.poll() is None, "scoring finished before it could be interrupted"
    return process


def test_sigterm_during_score_exits_130_and_keeps_the_previous_output(work, big_csv):
    process = _start_scoring(work, big_csv)
    process.send_signal(signal.SIGTERM)
    code, out, err = finish(process)
    assert code == 130, err
    assert err.startswith("Error: interrupted") and err.count("\n") == 1, err
    assert "Traceback" not in err and out == ""
    assert (work / "out.csv").read_bytes() == SENTINEL
    assert not partials(work), "the temporary output was left behind"
    assert not locks(work), "the lock file was left behind"


def test_sigkill_during_score_never_leaves_a_partial_destination(work, big_csv, tiny_dir):
    process = _start_scoring(work, big_csv)
    process.kill()
    process.communicate(timeout=RUN_TIMEOUT)
    assert process.returncode == -signal.SIGKILL
    # A leftover hidden temporary file is acceptable after SIGKILL; the destination is not touched.
    assert (work / "out.csv").read_bytes() == SENTINEL
    assert all(p.name.startswith(".out.csv.") for p in partials(work))
    # The dead run's lock does not block the next night's run.
    code, _, err = finish(start("score", tiny_dir / "new.csv", "--model", work / "model.vae",
                                "-o", work / "out.csv", "-q", cwd=work))
    assert code == 0, err
    assert len(pd.read_csv(work / "out.csv")) == 60


def test_sigint_during_fit_exits_130_and_keeps_the_previous_model(work):
    make_records(20_000, seed=6).to_csv(work / "train.csv", index=False)
    before = (work / "model.vae").read_bytes()
    process = start("fit", work / "train.csv", "--model", work / "model.vae", "--epochs", 200,
                    cwd=work)
    wait_for(process, lambda: locks(work), "the model's lock file")
    time.sleep(1.5)  # reading, preparing, training
    assert process.poll() is None, "fit finished before it could be interrupted"
    process.send_signal(signal.SIGINT)
    code, out, err = finish(process)
    assert code == 130, err
    assert err.startswith("Error: interrupted") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert (work / "model.vae").read_bytes() == before
    assert not partials(work) and not locks(work)


def test_two_concurrent_scores_of_one_output_leave_a_whole_file(work):
    make_records(8_000, seed=7).to_csv(work / "medium.csv", index=False)
    (work / "ref").mkdir()
    common = ("--model", work / "model.vae", "--chunk-size", 5000, "-q")
    runs = [start("score", work / "medium.csv", "-o", work / "out.csv", *common, cwd=work)
            for _ in range(2)]
    reference = start("score", work / "medium.csv", "-o", work / "ref" / "out.csv", *common,
                      cwd=work)
    results = [finish(p) for p in runs]
    ref_code, _, ref_err = finish(reference)
    assert ref_code == 0, ref_err
    codes = sorted(code for code, _, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    for code, _, err in results:
        if code == 2:
            assert err.startswith("Error: another vae-anomaly run is writing") \
                and err.count("\n") == 1, err
    assert (work / "out.csv").read_bytes() == (work / "ref" / "out.csv").read_bytes()
    assert len(pd.read_csv(work / "out.csv")) == 8_000
    assert not partials(work) and not locks(work)
