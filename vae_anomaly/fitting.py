"""The fit of one split: preprocessing and network learned on some rows, others held out.

``fit_split`` is one fit of ``Detector.fit``: the main fit, or one of the
extra calibration fits (calibration.py). Its held-out rows give the scores that set
the threshold; the rows robust training judges anomalous, of both parts, are the
training file's outliers. ``FitSummary`` (fit_summary.py) describes the whole fit of
a detector, all its splits together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from .defaults import DEFAULT_DRAWS
from .fit_summary import FitSummary, TrainingOutliers
from .known import near_confirmed
from .model import TabularVAE, VAEConfig
from .preprocessing import EncodedBatch, Preprocessor
from .rejection import MAX_CONTAMINATION
from .scoring import ScoreParts, row_keys, score_rows
from .training import (EpochStats, Tensors, TrainingCallback, TrainingConfig, TrainingResult,
                       row_losses, train)


@dataclass
class Exposure:
    """Confirmed anomalies for one fit: all of them (``confirmed``, whose neighbours
    among the held-out rows the threshold treats apart), and the row numbers of those
    it trains against and of those it scores afterwards (the main fit: all of them; a
    calibration fit: the block it held out, for an honest count of how many a model
    flags without having seen them)."""

    confirmed: pa.Table
    trained: np.ndarray
    judged: np.ndarray
    source: str


@dataclass
class Dismissal:
    """Confirmed normals for one fit: ``in_data``, True for the rows of the data with a
    dismissed row's values (those among the fit's training rows are pulled down, those
    held out stay calibration rows), and ``outside``, the dismissed rows no row of the
    data has (from a scored batch), which join the training rows. The preprocessing is
    learned from the data's own rows alone: dismissed rows were picked for standing
    out, and the scaling should describe the rows as they come."""

    in_data: np.ndarray
    outside: pa.Table
    source: str


@dataclass
class SplitFit:
    """What ``fit_split`` learned and judged."""

    preprocessor: Preprocessor
    model: TabularVAE
    result: TrainingResult
    heldout: ScoreParts  # every held-out row: they set the threshold
    outliers: TrainingOutliers | None  # None for a calibration fit
    known: ScoreParts | None = None  # the scores of the exposure's judged rows
    # True for the held-out rows with a confirmed row among their nearest neighbours
    # (known.near_confirmed); None without confirmed rows.
    heldout_near_known: np.ndarray | None = None
    # True for the held-out rows confirmed normal (they stay calibration rows whatever
    # their neighbours); None without confirmed normals.
    heldout_dismissed: np.ndarray | None = None


def fit_split(frame: pa.Table, train_index: np.ndarray, val_index: np.ndarray, *, seed: int,
              device, callbacks: Sequence[TrainingCallback], source: str,
              categorical: list[str], exclude: list[str], latent_dim: int | None,
              training: TrainingConfig, samples: int, score_seed: int,
              outlier_kind: str | None, exposure: Exposure | None = None,
              dismissal: Dismissal | None = None) -> SplitFit:
    """Preprocessor and network learned from ``train_index`` (training stops early on
    ``val_index``), the model on the CPU; the scores of the ``val_index`` rows, and the
    rows of both judged anomalous.

    ``seed`` seeds the weights and the training; ``samples`` and ``score_seed`` are
    the detector's scoring settings, ``outlier_kind`` the score the outliers keep
    (None for a calibration fit, whose held-out scores are all that is kept).
    ``exposure``: confirmed anomalies to train against and to score; ``dismissal``:
    confirmed normals to train as normal and pull down.
    """
    # Held-out rows calibrate the threshold, so nothing may be fitted on them, the
    # scaling included: the quantile map's density would favour its own rows.
    preprocessor = Preprocessor().fit(frame, categorical=categorical, exclude=exclude,
                                      source=source, rows=train_index)
    encoded = preprocessor.transform(frame, source=source)
    preprocessor.note_heldout_unseen(encoded, val_index)
    layout = preprocessor.layout
    config = VAEConfig.sized_for(layout.n_numeric, layout.n_indicators,
                                 layout.category_sizes, latent_dim, layout.sizing_inputs)
    # The initial weights come from the seed; the caller's random stream is left as
    # it was (training draws from its own generator, below).
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        model = TabularVAE(config)
    model = model.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    val_data = _tensors(encoded, val_index, device)
    confirmed = (None if exposure is None
                 else preprocessor.transform(exposure.confirmed, source=exposure.source))
    exposed = _rows(confirmed, exposure and exposure.trained)
    train_data, dismissed = _training_rows(encoded, train_index, preprocessor, dismissal,
                                           device)
    result = train(model, train_data, val_data, training,
                   generator, callbacks,
                   known=None if exposed is None else _tensors(exposed, slice(None), device),
                   dismissed=dismissed)

    def score(part: EncodedBatch) -> ScoreParts:
        # Rows get their content's draws and the scoring seed, so these scores equal
        # what `score` gives them.
        return score_rows(model, part, row_keys(part), samples=samples, seed=score_seed,
                          device=device, draws=DEFAULT_DRAWS)

    def scores(rows: np.ndarray) -> ScoreParts:
        return score(encoded.rows(rows))

    # Every held-out row sets the threshold, those judged anomalous included: taking
    # them out put the false-positive rate on clean files with a far tail of rare rows
    # (campaign) at 2.6%, and on the benchmark's dirty files it found too few planted
    # rows to help (docs/method.md, "Dirty training files").
    heldout = scores(val_index)
    outliers = None
    if outlier_kind is not None:
        # The dismissed rows from outside the data come last and are never rejected.
        rejected = (train_index[result.rejected.numpy()[:len(train_index)]]
                    if result.rejected is not None else train_index[:0])
        held_out = _heldout_outliers(model, val_data, result, training.beta, generator)
        if dismissal is not None:  # a person said these are normal
            held_out &= ~dismissal.in_data[val_index]
        rows = np.concatenate([rejected, val_index[held_out]])
        row_scores = np.concatenate([scores(rejected).score(outlier_kind),
                                     heldout.score(outlier_kind)[held_out]])
        order = np.argsort(rows, kind="stable")
        outliers = TrainingOutliers(rows[order], row_scores[order])
    judged = _rows(confirmed, exposure and exposure.judged)
    known = None if judged is None else score(judged)
    near = None if confirmed is None else near_confirmed(
        encoded.rows(val_index), encoded.rows(train_index), confirmed,
        layout.category_sizes, seed)
    return SplitFit(preprocessor, model.cpu(), result, heldout, outliers, known, near,
                    None if dismissal is None else dismissal.in_data[val_index])


def _training_rows(encoded: EncodedBatch, train_index: np.ndarray,
                   preprocessor: Preprocessor, dismissal: Dismissal | None,
                   device) -> tuple[Tensors, torch.Tensor | None]:
    """The rows training learns from (the data's ``train_index`` rows, then the
    dismissed rows from outside the data) and the positions among them of the confirmed
    normals; None without any."""
    rows = encoded.rows(train_index)
    if dismissal is None:
        return _tensors(rows, slice(None), device), None
    added = 0
    if dismissal.outside.num_rows:
        outside = preprocessor.transform(dismissal.outside, source=dismissal.source)
        rows = EncodedBatch(*(np.concatenate([getattr(rows, name), getattr(outside, name)])
                              for name in ("numeric", "indicators", "categories",
                                           "nll_offset")))
        added = len(outside)
    positions = np.r_[np.flatnonzero(dismissal.in_data[train_index]),
                      len(train_index) + np.arange(added)]
    if not len(positions):
        return _tensors(rows, slice(None), device), None
    return (_tensors(rows, slice(None), device),
            torch.from_numpy(positions.astype(np.int64)).to(device))


def _rows(confirmed: EncodedBatch | None, index: np.ndarray | None) -> EncodedBatch | None:
    """The encoded confirmed rows at ``index`` (an exposure's ``trained`` or
    ``judged``); None when there are none."""
    if confirmed is None or len(index) == 0:
        return None
    return confirmed.rows(index)


def _heldout_outliers(model: TabularVAE, val_data: Tensors, result: TrainingResult, beta: float,
                      generator: torch.Generator) -> np.ndarray:
    """Which held-out rows robust training would have rejected: those whose loss is past
    its cut, at most MAX_CONTAMINATION of them (the highest)."""
    outlier = np.zeros(len(val_data), dtype=bool)
    if result.rejected is None or not result.rejected.any():
        return outlier
    losses = row_losses(model, val_data, beta, generator)
    count = min(int(np.sum(losses > result.loss_cut)), int(MAX_CONTAMINATION * len(val_data)))
    if count:
        outlier[np.argsort(losses, kind="stable")[len(losses) - count:]] = True
    return outlier


def _tensors(encoded: EncodedBatch, index: np.ndarray, device) -> Tensors:
    part = encoded.rows(index)
    return Tensors(torch.from_numpy(part.numeric).to(device),
                   torch.from_numpy(part.indicators).to(device),
                   torch.from_numpy(part.categories).to(device))


class FitLabel:
    """Passes epochs on to ``callback`` marked with the fit they belong to."""

    def __init__(self, callback: TrainingCallback, fit: int, calibration_fits: int):
        self.callback, self.fit, self.calibration_fits = callback, fit, calibration_fits

    def on_epoch_end(self, stats: EpochStats) -> None:
        self.callback.on_epoch_end(dataclasses.replace(
            stats, fit=self.fit, calibration_fits=self.calibration_fits))


def unlabelled(epoch: dict) -> dict:
    """An epoch's record without the fit labels (they only matter to live callbacks)."""
    return {key: value for key, value in epoch.items() if key not in ("fit", "calibration_fits")}
