"""The model file: round trip, and refusal of anything else without executing it."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save as save_safetensors

from conftest import rewrite_metadata
from vae_anomaly import ModelFileError, load
from vae_anomaly.artifact import FORMAT_VERSION, model_from_bytes
from vae_anomaly.calibration import calibration_source


def test_model_file_round_trip_gives_identical_scores(tiny_model, tiny_dir, tmp_path):
    detector = load(tiny_model)
    copy = tmp_path / "copy.vae"
    detector.save(copy)
    again = load(copy)
    frame = pd.read_csv(tiny_dir / "new.csv")
    pd.testing.assert_frame_equal(detector.score(frame), again.score(frame))
    assert again.threshold_ == detector.threshold_
    np.testing.assert_array_equal(again.validation_scores_, detector.validation_scores_)
    assert again.summary_.history == detector.summary_.history


def test_model_file_holds_everything_needed_to_rebuild(tiny_model):
    meta = load(tiny_model).metadata_
    assert meta["format_version"] == FORMAT_VERSION
    assert {"config", "params", "preprocessing", "threshold", "training", "versions"} <= set(meta)
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["training"]["rows"] == 400
    assert len(meta["training"]["history"]) == meta["training"]["epochs_run"]
    assert meta["training"]["validation_rows"] == 120  # 30% of 400: below 200 rows


class _Exploit:
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/vae_anomaly_pwned",))


def test_a_pickle_payload_is_refused_without_being_executed(tmp_path):
    marker = "/tmp/vae_anomaly_pwned"
    import os
    if os.path.exists(marker):
        os.unlink(marker)
    path = tmp_path / "evil.vae"
    path.write_bytes(pickle.dumps({"weights": _Exploit()}))
    with pytest.raises(ModelFileError) as error:
        load(path)
    assert "not a vae-anomaly model file" in str(error.value)
    assert not os.path.exists(marker)


def test_a_torch_save_file_is_refused(tmp_path):
    path = tmp_path / "torch.vae"
    torch.save({"model": torch.zeros(3)}, path)
    with pytest.raises(ModelFileError, match="not a vae-anomaly model file"):
        load(path)


@pytest.mark.parametrize("cut", [4, 40, -10])
def test_truncated_files_are_refused(tiny_model, tmp_path, cut):
    payload = tiny_model.read_bytes()
    path = tmp_path / "cut.vae"
    path.write_bytes(payload[:cut])
    with pytest.raises(ModelFileError, match="truncated|not a vae-anomaly"):
        load(path)


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "noise.vae"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ModelFileError, match="not a vae-anomaly model file"):
        load(path)


def test_a_flipped_weight_byte_fails_the_checksum(tiny_model, tmp_path):
    payload = bytearray(tiny_model.read_bytes())
    payload[-3] ^= 0xFF
    with pytest.raises(ModelFileError, match="checksum"):
        model_from_bytes(bytes(payload), name="m.vae")


def test_a_foreign_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "foreign.vae"
    path.write_bytes(save_safetensors({"w": torch.zeros(2)}, metadata={"x": "1"}))
    with pytest.raises(ModelFileError, match="safetensors file from elsewhere"):
        load(path)


def test_a_newer_format_version_is_refused_with_upgrade_advice(tiny_model, tmp_path):
    path = tmp_path / "newer.vae"
    path.write_bytes(rewrite_metadata(tiny_model.read_bytes(),
                                       lambda m: m.update(format_version=FORMAT_VERSION + 1)))
    with pytest.raises(ModelFileError) as error:
        load(path)
    assert str(error.value) == (f"newer.vae uses model format {FORMAT_VERSION + 1}, newer than "
                                f"this vae-anomaly reads ({FORMAT_VERSION}); upgrade with "
                                "`pip install -U vae-anomaly`")


def test_a_format_2_file_from_before_the_calibration_fits_loads_and_says_so(tiny_model,
                                                                            tmp_path):
    def as_format_2(meta):
        meta["format_version"] = 2
        del meta["params"]["calibration_fits"]
        del meta["training"]["calibration_rows"], meta["training"]["calibration_fits"]

    path = tmp_path / "format2.vae"
    path.write_bytes(rewrite_metadata(tiny_model.read_bytes(), as_format_2))
    old, new = load(path), load(tiny_model)
    assert old.threshold_ == new.threshold_
    assert old.calibration_fits == 0  # as it was fitted
    assert calibration_source(vars(old.summary_)) == "set on 120 held-out scores"


def test_a_missing_model_file_says_how_to_make_one(tmp_path):
    with pytest.raises(ModelFileError) as error:
        load(tmp_path / "none.vae")
    assert "train one with `vae-anomaly fit DATA.csv` or pass --model PATH" in str(error.value)
