"""Shared fixtures: tiny mixed-type data and a model fitted on it, all on CPU in seconds."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vae_anomaly.api import fit_file

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DATA = ROOT / "sample_data"
# Without the extra calibration fits, which only set the threshold: tests of them
# are in test_trust.py.
FAST_FIT = {"epochs": 15, "seed": 0, "calibration_fits": 0}


def make_records(n: int, seed: int = 0, first_id: int = 0) -> pd.DataFrame:
    """Normal records: y depends on x, colour on the sign of x, some missing cells."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    frame = pd.DataFrame({
        "id": [f"R{first_id + i:06d}" for i in range(n)],
        "x": x.round(4),
        "y": (2 * x + rng.normal(scale=0.1, size=n)).round(4),
        "amount": rng.lognormal(3, 1, size=n).round(2),
        "colour": np.where(x > 0, "red", "blue"),
        "member": rng.random(n) < 0.3,
    })
    frame.loc[rng.random(n) < 0.05, "amount"] = np.nan
    return frame


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A folder with train.csv (400 normal rows) and new.csv (60 rows, some odd)."""
    folder = tmp_path_factory.mktemp("tiny")
    make_records(400, seed=1).to_csv(folder / "train.csv", index=False)
    new = make_records(60, seed=2, first_id=1000)
    new.loc[:4, "y"] = new.loc[:4, "x"] * -2  # broken relationship
    new.to_csv(folder / "new.csv", index=False)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_dir) -> Path:
    """A model fitted once on tiny train.csv; tests must not modify it."""
    path = tiny_dir / "model.vae"
    fit_file(tiny_dir / "train.csv", path, **FAST_FIT)
    return path


@pytest.fixture(scope="session")
def sample_model(tmp_path_factory) -> Path:
    """sample_data/train.csv fitted once through the CLI with default settings, but
    for the extra calibration fits (they would triple the suite's longest fit)."""
    from typer.testing import CliRunner

    from vae_anomaly.cli import app

    model = tmp_path_factory.mktemp("sample") / "model.vae"
    result = CliRunner().invoke(app, ["fit", str(SAMPLE_DATA / "train.csv"), "--model",
                                      str(model), "--seed", "0", "--calibration-fits", "0",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    return model


def run_together_with_two_torch_threads(callers) -> int:
    """Run the callables in Python threads at once, torch set to 2 threads; the torch
    thread count they leave behind (the caller's setting is restored after)."""
    import threading

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        threads = [threading.Thread(target=caller) for caller in callers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def rewrite_metadata(payload: bytes, change) -> bytes:
    """A copy of a model file whose JSON metadata went through ``change``."""
    (length,) = struct.unpack("<Q", payload[:8])
    header = json.loads(payload[8:8 + length])
    meta = json.loads(header["__metadata__"]["vae_anomaly"])
    change(meta)
    header["__metadata__"]["vae_anomaly"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + payload[8 + length:]
