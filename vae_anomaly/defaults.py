"""Defaults and limits that `--help`, the parameter checks and `info` need, in a
module that imports nothing: those commands answer without loading torch, pandas
or pyarrow (docs/benchmarks.md, "Start-up"). The modules that use each value
import it from here."""

from __future__ import annotations

# The KL weight users get. 0.25 rather than 0.5: on the 16 benchmark sets it lifted
# cardio from 0.910 to 0.926 ROC-AUC and churn from 0.686 to 0.703, with the mean
# over all 16 unchanged, and kept sample_data's broken relations (0.994); 0.1 went
# further on cardio but lost satellite and sample_data (docs/benchmarks.md, "Tried and dropped").
DEFAULT_BETA = 0.25
DEFAULT_FPR = 0.01
# Rows read, scored and written at a time (data.py). `score` holds about three chunks
# (one encoded ahead, one scored, one written behind): at 50,000 rows a 1M-row score
# peaked at 630 MiB against 776 MiB at 100,000, no slower (docs/benchmarks.md, "Speed").
DEFAULT_CHUNK_ROWS = 50_000
# Decoder passes a row: with randomized quasi-Monte Carlo draws (scoring.py), 8 give
# about the Monte Carlo error that 16 independent draws gave (docs/method.md, "The
# Monte Carlo error"), and `score` twice the rows a second (docs/benchmarks.md, "Speed").
DEFAULT_SAMPLES = 8
DRAW_SCHEMES = ("sobol", "iid")  # randomized quasi-Monte Carlo, independent draws
DEFAULT_DRAWS = "sobol"  # the draws a fit records; model files without one: "iid"
SCORE_KINDS = ("elbo", "iwae")  # the anomaly scores: negative ELBO, IWAE estimate
# Distinct draws per row from the scoring noise table (scoring.py's _TABLE_SIZE).
MAX_SAMPLES = 1 << 16
# Sobol points per randomization, at most. More points integrate better (the variance
# of one randomization's mean, against 16 independent draws, on sample_data's model:
# 2.0 at 4 points, 0.68 at 8, 0.23 at 16), but a row's standard error comes from its
# randomizations, and 8 keeps K = 16 at two of them and K = 64 at eight.
MAX_SOBOL_POINTS = 8


def sobol_plan(samples: int) -> tuple[int, int]:
    """(points P, randomizations R) of scoring's Sobol draws for K = ``samples``: P
    the largest power of two up to K / 2 (and MAX_SOBOL_POINTS), R = K // P, so at
    least two randomizations for a standard error whenever K >= 2. A row gets P * R
    decoder passes: K itself when K is 1, a power of two or three times one, else
    the largest such below it."""
    if samples == 1:
        return 1, 1
    points = min(MAX_SOBOL_POINTS, 1 << ((samples // 2).bit_length() - 1))
    return points, samples // points


def draw_plan(samples: int, draws: str) -> tuple[int, int]:
    """(points a randomization, randomizations) of a row's draws for K = ``samples``:
    sobol_plan's for "sobol", and K randomizations of one point for "iid" (independent
    draws, each its own)."""
    return (1, samples) if draws == "iid" else sobol_plan(samples)
