"""Each command imports only what it uses (issue 27): `--help`, `--version`, usage
errors and importing the CLI load none of torch, pandas, scikit-learn, scipy or
pyarrow; `info` loads no torch; `score` loads no scikit-learn or scipy. Structural,
not timed: each case runs in a fresh interpreter and lists what it imported.
docs/benchmarks.md ("Start-up") has the times, from bench/startup.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "pandas", "sklearn", "scipy", "pyarrow")

# Runs the CLI's entry point in-process, then prints which heavy packages it imported.
_PROBE = """
import json, sys
sys.argv = ["vae-anomaly", *json.loads(sys.argv[1])]
code = 0
try:
    {body}
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 0
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r}))
print(json.dumps({{"code": code, "loaded": loaded}}), file=sys.__stdout__)
"""


# app(), not main(): main() ends the process at once, before the probe could report.
def imported_by(args: list[str], body: str = "from vae_anomaly.cli import app; app()",
                cwd: Path | None = None) -> dict:
    script = _PROBE.format(body=body, heavy=HEAVY)
    result = subprocess.run([sys.executable, "-c", script, json.dumps(args)],
                            capture_output=True, text=True, cwd=cwd, timeout=300)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("args", "code"), [
    (["--help"], 0), (["--version"], 0), (["fit", "--help"], 0), (["score", "--help"], 0),
    (["info", "--help"], 0), (["score", "--no-such-option"], 2),
    ([], 2),  # no command: the help, as a usage error
])
def test_help_version_and_usage_errors_import_no_heavy_package(args, code):
    outcome = imported_by(args)
    assert outcome["loaded"] == [], f"`vae-anomaly {' '.join(args)}` imported {outcome['loaded']}"
    assert outcome["code"] == code


def test_importing_the_cli_and_the_package_imports_no_heavy_package():
    outcome = imported_by([], body="import vae_anomaly, vae_anomaly.cli")
    assert outcome["loaded"] == []


def test_the_package_still_offers_the_detector_and_load():
    outcome = imported_by([], body="from vae_anomaly import VAEAnomalyDetector, load; "
                                   "assert callable(load) and VAEAnomalyDetector.fit")
    assert outcome["code"] == 0 and "torch" in outcome["loaded"]


def test_info_loads_no_torch(model_folder: Path):
    outcome = imported_by(["info", "model.vae", "--json"], cwd=model_folder)
    assert outcome["code"] == 0
    assert not {"torch", "pandas", "sklearn", "scipy"} & set(outcome["loaded"]), outcome


def test_info_still_refuses_a_damaged_model_without_torch(model_folder: Path):
    payload = (model_folder / "model.vae").read_bytes()
    # One flipped byte in the weights: the checksum, computed with numpy, must catch it.
    (model_folder / "flipped.vae").write_bytes(payload[:-9] + bytes([payload[-9] ^ 1])
                                               + payload[-8:])
    outcome = imported_by(["info", "flipped.vae"], cwd=model_folder)
    assert outcome["code"] == 2 and "torch" not in outcome["loaded"]


def test_score_loads_no_scikit_learn_or_scipy(model_folder: Path):
    outcome = imported_by(["score", "new.csv", "--model", "model.vae", "-o", "out.csv", "-q"],
                          cwd=model_folder)
    assert outcome["code"] == 0
    assert (model_folder / "out.csv").stat().st_size > 0
    assert not {"sklearn", "scipy"} & set(outcome["loaded"]), outcome


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tiny_dir, tiny_model) -> Path:
    """conftest's tiny model and data, copied where each probe runs."""
    folder = tmp_path_factory.mktemp("startup")
    for source in (tiny_model, tiny_dir / "new.csv"):
        shutil.copy(source, folder / source.name)
    return folder
