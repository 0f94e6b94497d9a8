"""The anomaly score: a Monte Carlo negative ELBO over K draws of eps, or the
importance-weighted (IWAE) estimate of -log p(x) from the same draws.

    elbo(x) = mean_k [ -log p(x | z_k) ] + KL(q(z|x) || N(0, I)),   z_k = mu + sigma * eps_k
    iwae(x) = -log mean_k w_k,   w_k = p(x | z_k) p(z_k) / q(z_k | x)

By Jensen's inequality iwae(x) <= mean_k [-log w_k], the Monte Carlo negative
ELBO of the same draws: a tighter bound on -log p(x).

The draws are randomized quasi-Monte Carlo (``draws="sobol"``, what a fit records):
the K draws of a row are R independent randomizations of the first P points of a
Sobol sequence (``sobol_plan``), each a random digital shift of the points' bits,
taken to normals through the inverse normal CDF. Every draw is still N(0, I), so the
mean is an unbiased estimate of the expected reconstruction NLL, and the points of
one randomization fill the latent space more evenly than independent draws: at the
same K its variance is lower (docs/method.md, "The Monte Carlo error"). The points of
one randomization are not independent, so the standard error comes from the spread
of the R randomizations' means, not from the spread of the K draws. Model files from
before it (``draws="iid"``) keep their K independent draws.

The draws are tied to the row's content, not to its place or its batch: eps for
row r, draw k is a pure function of (seed, r's encoded values, k): a hash of the
encoded row (``row_keys``) picks its draws (``iid``) or its shifts (``sobol``) from
a fixed table drawn from the seed (see ``row_normals``, ``row_sobol_normals``). The
arithmetic is fixed too (see ``score_rows``), so scoring a file in one piece, in
chunks, in any order, as a subset, on any number of threads or spread over workers
gives identical scores: a record's score depends only on the record, the model and
the seed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .defaults import (DEFAULT_DRAWS, DEFAULT_SAMPLES, DRAW_SCHEMES, MAX_SAMPLES,
                       SCORE_KINDS, draw_plan, sobol_plan)
from .model import TabularVAE, gaussian_kl, reconstruction_nll, reparameterize
from .preprocessing import EncodedBatch

_ROWS_PER_PASS = 1024  # K x rows x width activations: small enough to stay in cache
# Above 64 draws a pass holds fewer rows, so its K x rows stays at 64 x 1,024: at the
# top of the --samples range (65,536) a pass of 1,024 rows needed tens of GB.
_DRAWS_PER_PASS = 64 * _ROWS_PER_PASS

_MASK32 = 0xFFFFFFFF
_TABLE_SIZE = MAX_SAMPLES  # distinct draws per row from the noise table
# Distinct odd constants that give each stream its own 32-bit key.
_STREAM_KEYS = (0x9E3779B9, 0x85EBCA6B, 0xC2B2AE35, 0x27D4EB2F)


@dataclass
class ScoreParts:
    """Per-row results, as float64 numpy arrays."""

    elbo: np.ndarray  # Monte Carlo negative ELBO: reconstruction + kl
    reconstruction: np.ndarray  # mean over draws of -log p(x|z)
    kl: np.ndarray  # KL(q(z|x) || N(0, I)), closed form
    std_error: np.ndarray  # Monte Carlo standard error of elbo (NaN when K = 1)
    iwae: np.ndarray  # importance-weighted estimate of -log p(x) from the same draws
    iwae_std_error: np.ndarray  # its delta-method standard error (NaN when K = 1)

    @classmethod
    def empty(cls) -> ScoreParts:
        return cls(*(np.zeros(0) for _ in range(6)))

    def __len__(self) -> int:
        return len(self.elbo)

    def score(self, kind: str) -> np.ndarray:
        """The anomaly score of ``kind``: 'elbo' or 'iwae'."""
        return {"elbo": self.elbo, "iwae": self.iwae}[kind]

    def score_std_error(self, kind: str) -> np.ndarray:
        return {"elbo": self.std_error, "iwae": self.iwae_std_error}[kind]


_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)


def row_keys(batch: EncodedBatch) -> np.ndarray:
    """One 63-bit key per row, a hash of its encoded values (numbers, missing
    indicators and category codes): equal rows get equal keys, hence equal draws."""
    n = len(batch)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    words = np.concatenate([
        np.ascontiguousarray(batch.numeric, dtype=np.float32).view(np.uint32).reshape(n, -1),
        np.ascontiguousarray(batch.indicators, dtype=np.float32).view(np.uint32).reshape(n, -1),
        np.ascontiguousarray(batch.categories, dtype=np.int64).view(np.uint32).reshape(n, -1),
    ], axis=1).astype(np.uint64)
    keys = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    for column in words.T:  # FNV-1a over 32-bit words; uint64 products wrap
        keys = (keys ^ column) * _FNV_PRIME
    keys ^= keys >> np.uint64(33)  # fold the high bits, which the products mixed, down
    return (keys >> np.uint64(1)).astype(np.int64)


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser on uint32 values held in int64 (products wrap;
    the mask keeps the low 32 bits, which is exactly uint32 arithmetic)."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _MASK32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _MASK32
    return x ^ (x >> 16)


def _key(seed: int, stream: int) -> int:
    mixed = _fmix32(torch.tensor([(seed ^ (seed >> 32) ^ _STREAM_KEYS[stream]) & _MASK32]))
    return int(mixed.item())


@functools.lru_cache(maxsize=8)
def _noise_table(seed: int, dim: int, device: str) -> torch.Tensor:
    """2**16 standard-normal vectors drawn once from ``seed`` (on the CPU, so every
    device gets the same table)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(_TABLE_SIZE, dim, generator=generator).to(device)


def row_normals(seed: int, rows, samples: int, dim: int,
                device: str | torch.device = "cpu") -> torch.Tensor:
    """Standard normals of shape (samples, len(rows), dim), a pure function of
    (seed, row id, draw): the same row always gets the same draws.

    Each row hashes to a start and an odd stride in a table of normal vectors;
    its draws are table[(start + k * stride) mod 2**16], distinct for every k < 2**16.
    Two hashes per row instead of one per number keep this cheap beside the model.
    """
    if samples > _TABLE_SIZE:
        raise ValueError(f"at most {_TABLE_SIZE} draws per row")
    table = _noise_table(seed, dim, str(torch.device(device)))
    rows = torch.as_tensor(rows, dtype=torch.int64, device=table.device)
    return table[_table_index(seed, rows, samples)]


def draw_count(samples: int, draws: str = DEFAULT_DRAWS) -> int:
    """Decoder passes a row gets for K = ``samples`` under ``draws``."""
    points, randomizations = draw_plan(samples, draws)
    return points * randomizations


# Coordinates carry the top _BITS bits of the Sobol points and their shifts: exact
# integers in float32, and the normals reach about 5.3 (an iid draw goes further once
# in 10 million).
_BITS = 23


@functools.lru_cache(maxsize=8)
def _sobol_bits(points: int, dim: int) -> torch.Tensor:
    """The first ``points`` points of the (unscrambled) Sobol sequence in ``dim``
    dimensions, as _BITS-bit integers: point p's coordinate j is about
    bits[p, j] / 2**_BITS."""
    from torch.quasirandom import SobolEngine

    unit = SobolEngine(dim, scramble=False).draw(points, dtype=torch.float64)
    return (unit * 2.0**_BITS).to(torch.int32)


@functools.lru_cache(maxsize=8)
def _shift_table(seed: int, dim: int, device: str) -> torch.Tensor:
    """2**16 vectors of _BITS-bit digital shifts drawn once from ``seed`` (on the CPU)."""
    generator = torch.Generator().manual_seed(seed ^ _STREAM_KEYS[2])
    return torch.randint(0, 1 << _BITS, (_TABLE_SIZE, dim), generator=generator,
                         dtype=torch.int32).to(device)


def _table_index(seed: int, rows: torch.Tensor, count: int) -> torch.Tensor:
    """(count, len(rows)) places in a 2**16 table: row r's k-th is
    (start + k * stride) mod 2**16, start and odd stride hashed from (seed, r)."""
    start = _fmix32((rows & _MASK32) ^ _fmix32((rows >> 32) ^ _key(seed, 0)))
    stride = _fmix32(start ^ _key(seed, 1)) | 1
    draw = torch.arange(count, dtype=torch.int64, device=rows.device)[:, None]
    return (start[None, :] + draw * stride[None, :]) & (_TABLE_SIZE - 1)


def row_sobol_normals(seed: int, rows, samples: int, dim: int,
                      device: str | torch.device = "cpu") -> torch.Tensor:
    """Randomized quasi-Monte Carlo normals of shape (P * R, len(rows), dim), a pure
    function of (seed, row id, draw): draw r * P + p is Sobol point p under the row's
    r-th digital shift (an XOR of the point's bits with a shift from the seed's
    table), through the inverse normal CDF. Each shift makes every point uniform on
    the cube, so each draw is N(0, I); the R shifts are independent."""
    points, randomizations = sobol_plan(samples)
    if randomizations > _TABLE_SIZE:
        raise ValueError(f"at most {_TABLE_SIZE} randomizations per row")
    table = _shift_table(seed, dim, str(torch.device(device)))
    rows = torch.as_tensor(rows, dtype=torch.int64, device=table.device)
    shifts = table[_table_index(seed, rows, randomizations)]  # (R, n, dim)
    bits = _sobol_bits(points, dim).to(table.device)[None, :, None, :] ^ shifts[:, None]
    # Each cell's centre as 2u - 1, exact in float32 and never -1 or 1 (whose normals
    # are infinite); the normal is erfinv(2u - 1) * sqrt(2), 5 times as fast as ndtri(u).
    centred = (bits.to(torch.float32) - (2.0**(_BITS - 1) - 0.5)) * 2.0**(1 - _BITS)
    return (torch.erfinv(centred) * math.sqrt(2.0)).reshape(points * randomizations,
                                                             len(rows), dim)


def score_rows(model: TabularVAE, batch: EncodedBatch, row_ids: np.ndarray,
               *, samples: int = DEFAULT_SAMPLES, seed: int = 0,
               device: str | torch.device = "cpu", draws: str = DEFAULT_DRAWS,
               iwae: bool = True) -> ScoreParts:
    """Score every row of ``batch``; row i uses the draws of row id ``row_ids[i]``
    (callers pass ``row_keys(batch)``, so that the draws follow the row's content).

    A row's score is bit-for-bit the same however the file is chunked and however
    many threads or workers run: every pass has the same shape (the last one is
    padded), and on the CPU each pass runs on one thread, so the floating-point
    operations for a row never change. Passes run side by side instead.

    ``draws``: "sobol" (randomized quasi-Monte Carlo, at most K decoder passes:
    ``draw_count``) or "iid" (K independent draws, the model files from before it).
    ``iwae`` False leaves the IWAE estimate and its error NaN, for callers that
    score with the ELBO alone (3% of a pass); the other parts are the same.
    """
    if draws not in DRAW_SCHEMES:
        raise ValueError(f"draws must be one of {DRAW_SCHEMES} (got {draws!r})")
    if len(batch) == 0:
        return ScoreParts.empty()
    model.eval()
    run_pass = functools.partial(_score_pass, model, batch, row_ids, samples=samples,
                                 seed=seed, device=device, draws=draws, iwae=iwae)
    with _pass_map(device) as map_passes:
        parts = list(map_passes(run_pass, range(0, len(batch), rows_per_pass(samples))))
    return ScoreParts(*(np.concatenate(column) for column in zip(*parts)))


# torch's thread count is process-wide: callers scoring on CPU from several threads
# at once (a threaded Dask worker, a web service) take turns, so that none sees
# another's setting in the middle of its passes.
_CPU_SCORING = threading.Lock()


def rows_per_pass(samples: int) -> int:
    """Rows scored together: fixed by K alone, so a row's arithmetic never depends on
    the chunk or the file it came in."""
    return max(1, min(_ROWS_PER_PASS, _DRAWS_PER_PASS // samples))


@contextlib.contextmanager
def _pass_map(device) -> Iterator[Callable]:
    """A map over passes: on the CPU, one torch thread per pass and as many passes at
    once as torch had threads; elsewhere (a GPU), one after another."""
    if torch.device(device).type != "cpu":
        yield map
        return
    with _CPU_SCORING:
        threads = torch.get_num_threads()
        if threads == 1:
            yield map
            return
        torch.set_num_threads(1)
        try:
            with concurrent.futures.ThreadPoolExecutor(threads) as pool:
                yield pool.map
        finally:
            torch.set_num_threads(threads)


@torch.inference_mode()  # per thread: passes may run on pool threads
def _score_pass(model: TabularVAE, batch: EncodedBatch, row_ids: np.ndarray, start: int, *,
                samples: int, seed: int, device, draws: str,
                iwae: bool = True) -> tuple[np.ndarray, ...]:
    size = rows_per_pass(samples)
    n = min(size, len(batch) - start)

    def padded(array):
        part = array[start:start + n]
        if n < size:  # same shape every pass: same arithmetic for every row
            part = np.concatenate([part, np.zeros((size - n, *part.shape[1:]),
                                                  dtype=part.dtype)])
        return torch.from_numpy(part).to(device)

    numeric, indicators, codes, rows = (padded(batch.numeric), padded(batch.indicators),
                                        padded(batch.categories), padded(row_ids))
    mu, logvar = model.encode(model.inputs(numeric, indicators, codes))
    eps = pass_draws(draws, seed, rows, samples, model.config.latent_dim, device)
    z = reparameterize(mu, logvar, eps)
    if draws == "iid":  # model files from before the quasi-Monte Carlo draws: as they were
        reconstruction = reconstruction_nll(model.decode(z), numeric, indicators, codes,
                                            model.config.category_sizes).total()
    else:
        reconstruction = model.output_nll(model.decoder_output(z), numeric, indicators, codes)
    return pass_results(reconstruction, mu, logvar, eps, z,
                        points=draw_plan(samples, draws)[0],
                        offset=batch.nll_offset[start:start + n].sum(-1), iwae=iwae)


def pass_draws(draws: str, seed: int, rows: torch.Tensor, samples: int, dim: int,
               device) -> torch.Tensor:
    """A pass's eps, (passes, rows, dim), under ``draws``."""
    if draws == "iid":
        return row_normals(seed, rows, samples, dim, device)
    return row_sobol_normals(seed, rows, samples, dim, device)


def pass_results(reconstruction: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                 eps: torch.Tensor, z: torch.Tensor, *, points: int,
                 offset: np.ndarray, iwae: bool = True) -> tuple[np.ndarray, ...]:
    """ScoreParts' columns for a pass's first len(offset) rows, from the draws'
    reconstruction NLLs (passes, rows) in draws of ``points`` a randomization (the
    IWAE columns NaN unless ``iwae``)."""
    n = len(offset)
    reconstruction = reconstruction.double()
    kl = gaussian_kl(mu, logvar).double()
    mean = reconstruction.mean(0)
    if iwae:
        # log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x); the log(2 pi) terms cancel.
        log_prior_ratio = 0.5 * (logvar + eps.pow(2) - z.pow(2)).sum(-1).double()
        log_weights = -reconstruction + log_prior_ratio
        iwae_score = -(torch.logsumexp(log_weights, 0) - math.log(len(eps)))
        std_error, iwae_std_error = _standard_errors(reconstruction, log_weights, points)
    else:
        std_error = _standard_errors(reconstruction, None, points)[0]
        iwae_score = iwae_std_error = torch.full_like(mean, float("nan"))
    mean, kl, std_error, iwae_score, iwae_std_error = (
        t[:n].cpu().numpy() for t in (mean, kl, std_error, iwae_score, iwae_std_error))
    # The offset turns densities of the scaled numbers into densities of the numbers
    # themselves (a change of variables). It is the same for every draw, so it shifts
    # the ELBO and the IWAE alike and leaves their standard errors as they are.
    return (mean + offset + kl, mean + offset, kl, std_error, iwae_score + offset,
            iwae_std_error)


def _standard_errors(reconstruction: torch.Tensor, log_weights: torch.Tensor | None,
                     points: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The standard errors of the two estimates (the IWAE's None without
    ``log_weights``) from the spread of the independent randomizations' means
    (``points`` draws each; 1 for independent draws): the draws within a
    randomization are not independent, so their own spread would not do."""
    randomizations = len(reconstruction) // points
    if randomizations == 1:
        nan = torch.full_like(reconstruction[0], float("nan"))
        return nan, nan

    def means(draws: torch.Tensor) -> torch.Tensor:
        return draws if points == 1 else draws.reshape(randomizations, points, -1).mean(1)

    elbo_se = means(reconstruction).std(0) / randomizations**0.5
    if log_weights is None:
        return elbo_se, None
    # Delta method: se(log mean w) = sd(w) / (mean(w) sqrt(R)), on weights scaled by max.
    weights = means(torch.exp(log_weights - log_weights.max(0).values))
    return elbo_se, weights.std(0) / (weights.mean(0) * randomizations**0.5)
