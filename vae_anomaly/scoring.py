"""The anomaly score: a Monte Carlo negative ELBO over K draws of eps.

    score(x) = mean_k [ -log p(x | z_k) ] + KL(q(z|x) || N(0, I)),   z_k = mu + sigma * eps_k

The draws are tied to the row, not to the batch: eps for row r, draw k is a
pure function of (seed, r, k), computed with a counter-based hash. Scoring a
file in one piece, in chunks, or spread over workers gives identical scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .model import TabularVAE, negative_elbo
from .preprocessing import EncodedBatch

DEFAULT_SAMPLES = 16
_ROWS_PER_PASS = 4096  # bounds memory at K x rows x width activations

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@dataclass
class ScoreParts:
    """Per-row results, as float64 numpy arrays."""

    score: np.ndarray  # anomaly score: reconstruction + kl (higher = more anomalous)
    reconstruction: np.ndarray  # mean over draws of -log p(x|z)
    kl: np.ndarray  # KL(q(z|x) || N(0, I)), closed form
    std_error: np.ndarray  # Monte Carlo standard error of the score (NaN when K = 1)

    @classmethod
    def empty(cls) -> ScoreParts:
        return cls(*(np.zeros(0) for _ in range(4)))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A strong 64-bit mixer (Steele et al.); uint64 arithmetic wraps, as intended."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def row_normals(seed: int, rows: np.ndarray, samples: int, dim: int) -> np.ndarray:
    """Standard normals of shape (samples, len(rows), dim), a pure function of each row id.

    Each 64-bit hash gives two uniforms and, by Box-Muller, two normals.
    """
    pairs = (dim + 1) // 2
    key = _splitmix64(np.array([seed], dtype=np.uint64))[0]
    draw = np.arange(samples, dtype=np.uint64)[:, None, None]
    pair = np.arange(pairs, dtype=np.uint64)[None, None, :]
    row = rows.astype(np.uint64)[None, :, None]
    counter = (row * np.uint64(samples) + draw) * np.uint64(pairs) + pair
    bits = _splitmix64(counter ^ key)
    scale = 1.0 / 2.0**32
    u1 = ((bits >> np.uint64(32)).astype(np.float64) + 0.5) * scale
    u2 = ((bits & np.uint64(0xFFFFFFFF)).astype(np.float64) + 0.5) * scale
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * np.pi * u2
    normals = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)
    return normals[..., :dim].astype(np.float32)


@torch.no_grad()
def score_rows(model: TabularVAE, batch: EncodedBatch, row_ids: np.ndarray, *,
               samples: int = DEFAULT_SAMPLES, seed: int = 0,
               device: str | torch.device = "cpu") -> ScoreParts:
    """Score every row of ``batch``; row i uses the draws of row id ``row_ids[i]``."""
    if len(batch) == 0:
        return ScoreParts.empty()
    model.eval()
    parts = [
        _score_pass(model, batch, row_ids, start, min(start + _ROWS_PER_PASS, len(batch)),
                    samples, seed, device)
        for start in range(0, len(batch), _ROWS_PER_PASS)
    ]
    return ScoreParts(*(np.concatenate(column) for column in zip(*parts)))


def _score_pass(model, batch: EncodedBatch, row_ids: np.ndarray, start: int, stop: int,
                samples: int, seed: int, device) -> tuple[np.ndarray, ...]:
    def tensor(array):
        return torch.from_numpy(array[start:stop]).to(device)

    eps = row_normals(seed, row_ids[start:stop], samples, model.config.latent_dim)
    eps = torch.from_numpy(eps).to(device)
    reconstruction, kl = negative_elbo(model, tensor(batch.numeric), tensor(batch.indicators),
                                       tensor(batch.categories), eps)
    reconstruction = reconstruction.double()
    mean = reconstruction.mean(0)
    if samples > 1:
        std_error = reconstruction.std(0) / samples**0.5
    else:
        std_error = torch.full_like(mean, float("nan"))
    kl = kl.double()
    return tuple(t.cpu().numpy() for t in (mean + kl, mean, kl, std_error))
