"""The CUDA path. Skipped where no GPU is present (as in CI); run on a GPU machine
with `python -m pytest tests/test_gpu.py`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_records
from vae_anomaly import training
from vae_anomaly import VAEAnomalyDetector
from vae_anomaly.model import TabularVAE, VAEConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
REAL_TRAINING_STEP = training.training_step


def _fit_on_gpu(monkeypatch, capture: bool):
    """Train one tiny network on the GPU; return its epoch history and the step used."""
    used = []

    def recording_step(model, config, batch_size, device):
        step = REAL_TRAINING_STEP(model, config, batch_size, device)
        if not capture:   # same capturable Adam, steps launched one by one
            step = training.TrainingStep(model, step.optimiser, config, device)
        used.append(step)
        return step

    monkeypatch.setattr(training, "training_step", recording_step)
    device = torch.device("cuda")
    rows = torch.Generator().manual_seed(0)
    data = training.Tensors(torch.randn(1000, 3, generator=rows).to(device),
                            torch.zeros(1000, 1, device=device),
                            torch.randint(1, 4, (1000, 1), generator=rows).to(device))
    torch.manual_seed(0)
    model = TabularVAE(VAEConfig(n_numeric=3, n_indicators=1, category_sizes=[4])).to(device)
    result = training.train(model, data, data, training.TrainingConfig(epochs=6, batch_size=96),
                            torch.Generator(device=device).manual_seed(0))
    return [(h.train_loss, h.val_loss) for h in result.history], used[0]


def test_the_captured_gpu_step_trains_like_steps_launched_one_by_one(monkeypatch):
    captured, step = _fit_on_gpu(monkeypatch, capture=True)
    assert isinstance(step, training.CudaGraphStep)
    assert isinstance(step.graph, torch.cuda.CUDAGraph)   # it really was captured
    uncaptured, _ = _fit_on_gpu(monkeypatch, capture=False)
    # 1,000 rows at 96 a batch: 10 full batches and one of 40 an epoch, so the
    # history covers warm-up, replayed and uncaptured steps.
    np.testing.assert_allclose(captured, uncaptured, rtol=1e-4)
    assert captured[-1][1] < captured[0][1]


def test_a_model_trained_on_the_gpu_scores_the_same_on_the_cpu():
    frame = make_records(2000, seed=3)
    detector = VAEAnomalyDetector(epochs=8, device="cuda", seed=0).fit(frame)
    on_gpu = detector.score(frame, device="cuda")
    on_cpu = detector.score(frame, device="cpu")
    np.testing.assert_allclose(on_cpu["anomaly_score"], on_gpu["anomaly_score"],
                               rtol=1e-4, atol=1e-3)
    assert (on_cpu["is_anomaly"] == on_gpu["is_anomaly"]).all()
