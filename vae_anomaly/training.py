"""The training loop: Adam on index-drawn mini-batches (its rate decaying over the
second half of the epoch bound), KL warm-up, gradient clipping, early stopping on
validation loss with the best weights restored. On a GPU each step is replayed
from a captured CUDA graph (CudaGraphStep); on a CPU the parameters live in one
flat buffer while training (FlatStep), stepped by FlatAdam on one torch thread.
With robust training (TrainingConfig.contamination) each row's loss is noted as it
trains, and after each epoch rows far out in the tail leave the next epoch's
gradient (_RowRejection; the rule is rejection.py's). With confirmed anomalies
(``known``, outlier exposure) each step also draws some of them and adds a hinge
that pushes their score above the batch's normal rows' (TrainingStep._exposure).
With confirmed normals (``dismissed``: training rows a person dismissed) the same
steps draw some of them and add a hinge that pulls their score below the batch's
threshold quantile (TrainingStep._dismissal); robust training never rejects them.

Display is not done here: progress reaches the caller through callbacks.
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Protocol

import numpy as np
import torch
from torch import nn

from .errors import TrainingError
from .model import TabularVAE, negative_elbo
from .rejection import loss_cut

# Large batches. A step of these small networks is mostly fixed overhead: on 2 CPU
# cores one of 1,024 rows took about twice as long as one of 64, so a row costs
# about an eighth as much (docs/benchmarks.md, "Fit time").
_MIN_BATCH, _MAX_BATCH = 64, 1024
# The rate grows with the batch so that rate / batch, the noise each step adds, stays
# near that of the small-batch fits these replaced: 1e-3 at n/64 rows a batch, 96 to
# 256 (1.07e-2 at 1,024 rows of a file under 6,144 rows, 4e-3 above 16,384). Less
# noise lost detection: over 3 seeds pendigits reached ROC-AUC 0.969 with a floor of
# 128 (8e-3; 500,000 rows seen), 0.978 with 96 and 0.982 with 64 (the old fits: 0.980),
# but 64 cost sample_data (0.985 against 0.987) and put satellite's false-positive
# rate at 0.45%.
_BASE_LEARNING_RATE = 1e-3
_MIN_REFERENCE_BATCH, _MAX_REFERENCE_BATCH = 96, 256
# Rows seen bound the fit: 400,000 of them, in 20 to 300 epochs. On the benchmark sets
# detection stopped gaining well before the old bound of 12,900 steps of 64 rows
# (825,000 rows): over the 16 sets x 3 seeds the mean ROC-AUC was 0.888 against 0.886,
# in 14% of the fit time. sample_data, still improving at its bound, reaches 0.987 in
# its 148 epochs (0.994 in 300 epochs of 64 rows before, at 5 times the cost).
# Large files get at least 50 epochs while that is at most 10M rows seen: a default fit
# of 200,000 rows reached a validation loss of -9.05 in 48.7 s (the old 55 epochs of 512
# rows: -8.63 in 60.0 s), where 20 epochs reached only -2.73. Early stopping ends many
# runs sooner.
_ROW_BUDGET = 400_000
_MIN_EPOCHS, _MAX_EPOCHS = 20, 300
_LARGE_FILE_EPOCHS, _LARGE_FILE_ROW_BUDGET = 50, 10_000_000
_EVAL_ROWS = 16_384  # validation rows per forward pass, to bound memory
# The learning rate stays at its start for the first half of the epoch bound, then
# falls along a half cosine to this fraction of it at the bound: late, smaller
# steps settle into a lower validation loss than a constant rate in the same
# epochs (docs/benchmarks.md, "Tried and dropped"). Runs that stop early never reach the decay.
_FINAL_LEARNING_RATE_FRACTION = 0.05
# Outlier exposure: every _EXPOSURE_EVERY-th step draws up to _EXPOSURE_ROWS confirmed
# anomalies (with replacement, so one row is drawn every time) and adds _EXPOSURE_WEIGHT
# times the mean hinge max(0, margin - score) over them, where score is the negative
# ELBO the detector scores with (beta 1) and the margin is the _EXPOSURE_QUANTILE
# quantile of the batch's normal rows' scores plus _EXPOSURE_MARGIN nats. The hinge
# stops pushing once a row clears the margin, and its gradient is scaled down to at most
# _EXPOSURE_GRADIENT_SHARE of the normal rows' gradient norm, so a single row still
# counts every time and a few hundred cannot take training over. Uncapped, one or two
# confirmed rows stalled the validation loss and training stopped early (vowels 0.911 to
# 0.815 at weight 1); on cardio, pendigits, vowels and glass (seed 0, 10% of the planted
# rows confirmed) weight 1, 0.3 and 0.1 (every step) gave 0.872, 0.897 and 0.920 against
# 0.780 without them (docs/method.md, "Confirmed anomalies"). A margin at the 95th
# percentile plus 5 nats left the confirmed rows at the 95th to 98th percentile of the
# held-out scores, below the threshold; the 99th plus 20 nats raised 8 sets by 0.008 on
# average, none by less than 0.001 (plus 10 nats: 0.006; a cap at the whole normal
# gradient: 0.005, or 0.010 with spambase -0.005; docs/benchmarks.md).
# The exposure pass costs about as much as the step's own on these small networks
# (kernel launches, not rows): run every step, it made training 1.5 times as long. So
# it runs every _EXPOSURE_EVERY-th step, and the steps in between add its latest
# gradient again, capped against their own normal gradient. Pushing only every other
# step lost 0.007 of the mean ROC-AUC at S = 0.1; pushing twice as hard every other
# step made single fits swing (musk with one confirmed row: 0.905 against 0.975
# without; docs/benchmarks.md, "Tried and dropped").
_EXPOSURE_EVERY = 2
_EXPOSURE_ROWS = 64
_EXPOSURE_WEIGHT = 0.1
_EXPOSURE_QUANTILE = 0.99
_EXPOSURE_MARGIN = 20.0
_EXPOSURE_GRADIENT_SHARE = 0.5
# Dismissals (confirmed normals), in the form of active anomaly discovery (Das et al.,
# ICDM 2016: confirmed normals below the tau-quantile): on the exposure's steps, up to
# _DISMISSAL_ROWS of them are drawn (with replacement) and the step adds
# _DISMISSAL_WEIGHT times the mean over them of min(max(0, score - bound),
# _DISMISSAL_HINGE_CAP), where the bound is the threshold's quantile
# (TrainingConfig.normal_quantile, 1 - fpr) of the batch's normal scores less
# _DISMISSAL_MARGIN nats. A mean of a fixed-size draw weighs three dismissals as much as
# three thousand (every training row dismissed left a toy's broken rows flagged as
# before: 0.71 against 0.71). The gradient shares the exposure's cap against the normal
# one (_EXPOSURE_GRADIENT_SHARE), so dismissals steer the step and never take it over.
# The weight is half the exposure's. At the exposure's 0.1, twenty dismissed top flags
# of one scored batch pulled a learned group of anomalies down with them (the
# benchmark's nightly variant, cover: ROC-AUC 0.793 -> 0.571; without the hinge 0.787).
# At 0.02 the normals next to a dismissed row were flagged 29 -> 16 of 102 times over
# 16 sets x 3 seeds, short of halving; at 0.05 29 -> 8, the mean ROC-AUC 0.838 -> 0.834
# (cover 0.785 -> 0.721 against 0.781 at 0.02: it pays for the others) and the review
# loop's unchanged (docs/benchmarks.md, "Review queue"). The toy below: 0.28 -> 0.07,
# 0.43 -> 0.11 (seeds 0, 1). The margin: the
# batch's scores are training scores, below the held-out ones that set the threshold,
# and look-alikes of a dismissed row score above the row itself. On a toy (1,000 normal
# rows, 12 of a rare normal pattern, 5 of them dismissed, 3 seeds) the pattern's fresh
# rows were flagged at 0.30 without dismissals, 0.15 with a margin of 0, 0.07 with 5 and
# 0.09 with 10.
# The per-row cap: a row that stands more than the cap above the bound (a broken record
# dismissed by mistake) stops pulling rather than drag the network to it, and trains as
# one normal row among the rest. With 5 broken rows dismissed by mistake, fresh broken
# rows were flagged at 0.63 (cap 10), 0.44 (20) and 0.37 (50, or none) against 0.65
# without them; the rare pattern's halving was the same for every cap, its rows lying a
# few nats from the threshold. 20 nats, the exposure margin's scale, leaves room for
# wider data, whose scores spread further (docs/method.md, "Dismissed rows").
_DISMISSAL_ROWS = 64
_DISMISSAL_WEIGHT = 0.05
_DISMISSAL_MARGIN = 5.0
_DISMISSAL_HINGE_CAP = 20.0


@dataclass
class TrainingConfig:
    """Knobs of the loop. ``None`` means "choose from the data size"."""

    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    beta: float = 1.0
    patience: int = 15
    warmup_epochs: int | None = None
    grad_clip_norm: float = 5.0
    # Training rows whose loss stands out leave the gradient: "auto" or a fixed share
    # (rejection.py); 0 trains on every row.
    contamination: float | str = 0.0
    # The quantile of the normal scores that the threshold sits at (1 - fpr): the
    # dismissal term pulls confirmed normals below it (see _DISMISSAL_WEIGHT).
    normal_quantile: float = 0.99

    @property
    def rejects_rows(self) -> bool:
        return self.contamination == "auto" or self.contamination > 0

    def resolved_batch_size(self, n_rows: int) -> int:
        if self.batch_size is not None:
            return self.batch_size
        # _MAX_BATCH rows, or every row of a smaller file (one step an epoch).
        return int(min(_MAX_BATCH, max(_MIN_BATCH, n_rows)))

    def resolved_learning_rate(self, batch_size: int, n_rows: int) -> float:
        """1e-3 times the batch over the reference batch of ``n_rows`` (n/64 rows, 96
        to 256), and at least 1e-3."""
        if self.learning_rate is not None:
            return self.learning_rate
        reference = min(_MAX_REFERENCE_BATCH, max(_MIN_REFERENCE_BATCH, n_rows / 64))
        return _BASE_LEARNING_RATE * max(1.0, batch_size / reference)

    def resolved_epochs(self, n_rows: int) -> int:
        if self.epochs is not None:
            return self.epochs
        rows = max(n_rows, 1)
        large_file = min(_LARGE_FILE_EPOCHS, _LARGE_FILE_ROW_BUDGET // rows)
        return int(min(_MAX_EPOCHS, max(_MIN_EPOCHS, large_file, _ROW_BUDGET // rows)))

    def resolved_warmup(self, epochs: int) -> int:
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return max(1, min(10, epochs // 10))


@dataclass
class EpochStats:
    epoch: int  # 1-based
    epochs: int  # the bound
    beta: float  # the warm-up's beta this epoch
    train_loss: float
    train_reconstruction: float
    train_kl: float
    val_loss: float
    val_reconstruction: float
    val_kl: float
    seconds: float
    # Which fit of a model this epoch belongs to: 0 is the model's own; 1 to
    # ``calibration_fits`` are the extra fits that help set its threshold.
    fit: int = 0
    calibration_fits: int = 0
    # Training rows left out of the gradient in the next epoch (robust training).
    rejected_rows: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class TrainingCallback(Protocol):
    def on_epoch_end(self, stats: EpochStats) -> None: ...


@dataclass
class Tensors:
    """One split of the encoded data, already on the training device."""

    numeric: torch.Tensor
    indicators: torch.Tensor
    codes: torch.Tensor

    def __len__(self) -> int:
        return len(self.numeric)

    def rows(self, index: torch.Tensor) -> Tensors:
        # index_select, not x[index]: half the time on a CPU for a batch's rows.
        return Tensors(self.numeric.index_select(0, index), self.indicators.index_select(0, index),
                       self.codes.index_select(0, index))


@dataclass
class TrainingResult:
    history: list[EpochStats]
    best_epoch: int
    stopped_early: bool
    # The best epoch's judgement of the training rows: those whose loss passed the cut
    # (none without robust training), and the cut itself, a loss (inf: none).
    rejected: torch.Tensor | None = None
    loss_cut: float = math.inf


def train(model: TabularVAE, train_data: Tensors, val_data: Tensors, config: TrainingConfig,
          generator: torch.Generator, callbacks: Sequence[TrainingCallback] = (),
          known: Tensors | None = None, dismissed: torch.Tensor | None = None) -> TrainingResult:
    """Fit ``model`` in place and leave it holding the best weights seen on validation.
    ``known``: confirmed anomalies, whose scores training pushes up (outlier exposure);
    ``dismissed``: the index of the training rows confirmed as normal, whose scores it
    pulls down and which robust training never rejects."""
    epochs = config.resolved_epochs(len(train_data))
    batch_size = config.resolved_batch_size(len(train_data))
    device = train_data.numeric.device
    with _training_threads(device):
        step = training_step(model, config, batch_size, device, len(train_data))
        step.known, step.dismissed = known, dismissed
        try:
            history, best_epoch, best = _run_epochs(step, train_data, val_data, config,
                                                    epochs, batch_size, generator, callbacks)
            if best is not None:
                step.restore(best.weights)
        finally:
            step.finish()
    result = TrainingResult(history, best_epoch or len(history), len(history) < epochs)
    if best is not None and best.rejected is not None:
        result.rejected, result.loss_cut = best.rejected.cpu(), best.loss_cut
    return result


@dataclass
class _BestEpoch:
    weights: object  # step.snapshot()
    rejected: torch.Tensor | None
    loss_cut: float


class _RowRejection:
    """The per-epoch judgement of robust training: from the rows' losses in the
    epoch just run (averaged with the epochs before, as each is one noisy draw),
    the cut above which a row leaves the gradient of the next epoch. A row that
    falls back under the cut comes back."""

    def __init__(self, step: TrainingStep, contamination: float | str):
        self.step, self.contamination = step, contamination
        self.smoothed: torch.Tensor | None = None
        self.cut = math.inf

    def update(self) -> int:
        losses = self.step.row_loss
        self.smoothed = (losses.clone() if self.smoothed is None
                         else self.smoothed.mul_(0.5).add_(losses, alpha=0.5))
        self.cut = loss_cut(self.smoothed.cpu().numpy(), self.contamination)
        rejected = self.smoothed > self.cut
        if self.step.dismissed is not None:  # a person said these rows are normal
            rejected.index_fill_(0, self.step.dismissed, False)
        self.step.row_weights.copy_((~rejected).to(self.step.row_weights.dtype))
        count = int(rejected.sum())
        self.step.weighted = self.step.weighted or count > 0
        return count

    def rejected(self) -> torch.Tensor:
        return self.step.row_weights == 0


class _OneTrainingThread:
    """One torch thread while any fit trains on a CPU; the caller's count again once
    the last one ends (torch's count is process-wide, so fits in several Python
    threads share one saved value instead of each restoring the other's setting).

    A step is a few hundred small kernels. Split over two threads they gained a
    little alone (a 30-epoch fit: 7.3 s on 2 threads, 8.8 s on 1) and lost badly
    beside a second fit (28.1 s against 14.2 s): each op's worker threads spin
    waiting for a core the other process holds."""

    def __init__(self):
        self.lock, self.active, self.saved = threading.Lock(), 0, 1

    @contextlib.contextmanager
    def __call__(self, device: torch.device) -> Iterator[None]:
        if device.type != "cpu":
            yield
            return
        with self.lock:
            if self.active == 0:
                self.saved = torch.get_num_threads()
                torch.set_num_threads(1)
            self.active += 1
        try:
            yield
        finally:
            with self.lock:
                self.active -= 1
                if self.active == 0:
                    torch.set_num_threads(self.saved)


_training_threads = _OneTrainingThread()


def _run_epochs(step: TrainingStep, train_data: Tensors, val_data: Tensors,
                config: TrainingConfig, epochs: int, batch_size: int, generator: torch.Generator,
                callbacks: Sequence[TrainingCallback]
                ) -> tuple[list[EpochStats], int, _BestEpoch | None]:
    """The epochs until the bound or early stopping: the history, the best epoch and
    a snapshot of its weights (None if no epoch counted)."""
    model, warmup = step.model, config.resolved_warmup(epochs)
    rate = config.resolved_learning_rate(batch_size, len(train_data))
    schedule = HoldThenCosine(step.optimiser, rate,
                              epochs * math.ceil(len(train_data) / batch_size))
    # One fixed draw of eps for validation, so epochs are compared on equal terms.
    val_eps = torch.randn(1, len(val_data), model.config.latent_dim, generator=generator,
                          device=generator.device)
    rejection = _RowRejection(step, config.contamination) if config.rejects_rows else None
    history: list[EpochStats] = []
    best_loss, best_epoch, best, waited = math.inf, 0, None, 0
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        beta = config.beta * min(1.0, epoch / warmup)
        train_terms = _train_epoch(step, schedule, train_data, batch_size, beta, generator, epoch)
        rejected_rows = rejection.update() if rejection is not None else 0
        cut = rejection.cut if rejection is not None else math.inf
        # Validation rows are as dirty as the training rows: as large a share of them
        # leaves its mean, or early stopping would reward learning their anomalies.
        val_terms = evaluate_loss(model, val_data, val_eps, config.beta,
                                  rejected_rows / len(train_data))
        stats = EpochStats(epoch, epochs, beta, *train_terms, *val_terms,
                           time.perf_counter() - started, rejected_rows=rejected_rows)
        history.append(stats)
        for callback in callbacks:
            callback.on_epoch_end(stats)
        if epoch >= warmup and _improves(stats.val_loss, best_loss):
            best_loss, best_epoch, waited = stats.val_loss, epoch, 0
            best = _BestEpoch(step.snapshot(),
                              rejection.rejected().clone() if rejection is not None else None,
                              cut)
        elif epoch >= warmup:
            waited += 1
            if waited >= config.patience:
                break
    return history, best_epoch, best


class HoldThenCosine:
    """Per-step learning rate: the start rate for the first half of ``total_steps``
    (the epoch bound's steps), then a half cosine down to _FINAL_LEARNING_RATE_FRACTION
    of it. Works on a float rate or on a device tensor (the CUDA-graph step's), which
    it fills in place without reading the device."""

    def __init__(self, optimiser: torch.optim.Optimizer, learning_rate: float,
                 total_steps: int):
        self.optimiser, self.learning_rate = optimiser, learning_rate
        self.half = max(1, total_steps) / 2
        self.steps = 0
        self._apply()

    def factor(self, step: int) -> float:
        floor = _FINAL_LEARNING_RATE_FRACTION
        progress = min(1.0, max(0.0, step - self.half) / self.half)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def step(self) -> None:
        self.steps += 1
        self._apply()

    def _apply(self) -> None:
        rate = self.learning_rate * self.factor(self.steps)
        for group in self.optimiser.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(rate)
            else:
                group["lr"] = rate


class TrainingStep:
    """One optimiser step on a batch - forward, backward, gradient clipping, Adam -
    adding the batch's loss terms (times its rows) to ``totals``. Nothing in it
    reads a value back from the device, so a GPU never waits on the host."""

    def __init__(self, model: TabularVAE, optimiser: torch.optim.Optimizer,
                 config: TrainingConfig, device: torch.device, train_rows: int = 0):
        self.model, self.optimiser, self.config = model, optimiser, config
        self.totals = torch.zeros(3, device=device)
        self.beta = torch.zeros((), device=device)
        # Robust training: each row's weight in the gradient (1 or 0) and its loss
        # (reconstruction + beta * KL at the full beta) in the latest epoch.
        # Rows are weighted only once one is rejected: until then the arithmetic is
        # that of training on every row, bit for bit. Every row's loss is noted,
        # rejected rows included, so that they can come back.
        self.row_weights = self.row_loss = None
        self.weighted = False
        self.known: Tensors | None = None  # confirmed anomalies (outlier exposure)
        self.dismissed: torch.Tensor | None = None  # training rows confirmed normal
        # The exposure term's gradient in its latest step (before its cap), which the
        # steps between exposures add again (see _EXPOSURE_EVERY).
        self.last_exposure = None
        if config.rejects_rows:
            self.row_weights = torch.ones(train_rows, device=device)
            self.row_loss = torch.zeros(train_rows, device=device)

    def start_epoch(self, beta: float) -> None:
        self.model.train()
        self.totals.zero_()
        self.beta.fill_(beta)

    def run(self, data: Tensors, index: torch.Tensor, eps: torch.Tensor,
            known: tuple[torch.Tensor, torch.Tensor] | None = None,
            dismissed: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """One step on the rows ``index`` with draws ``eps``; ``known``, the index and
        draws of the confirmed anomalies this step exposes the model to; ``dismissed``,
        those of the confirmed normals it pulls down."""
        batch = data.rows(index)
        reconstruction, kl = negative_elbo(self.model, batch.numeric, batch.indicators,
                                           batch.codes, eps)
        # Training draws one eps per row: its reconstruction NLL is row 0, a view.
        per_row = reconstruction[0] if len(reconstruction) == 1 else reconstruction.mean(0)
        row_kl = kl
        if self.row_loss is not None:
            self.row_loss.index_copy_(0, index, (per_row + self.config.beta * kl).detach())
        if self.weighted:
            reconstruction, kl = self._kept_means(per_row, kl, index)
        else:
            reconstruction, kl = reconstruction.mean(), kl.mean()
        loss = reconstruction + self.beta * kl
        # Zeroed in place, not set to None: a captured CUDA graph keeps writing the
        # gradients where they were when it was captured.
        self.optimiser.zero_grad(set_to_none=False)
        loss.backward()
        if known is not None or dismissed is not None:
            self._add_exposure_gradient(self._feedback(data, per_row + row_kl, known, dismissed))
        elif self.last_exposure is not None:
            self._add_last_exposure()
        self.clip_gradients()
        self.optimiser.step()
        self.totals += torch.stack([loss.detach(), reconstruction.detach(), kl.detach()]) * len(index)

    def _feedback(self, data: Tensors, normal_scores: torch.Tensor,
                  known: tuple[torch.Tensor, torch.Tensor] | None,
                  dismissed: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """The verdicts' terms this step: the exposure hinge on the drawn confirmed
        anomalies (see _EXPOSURE_WEIGHT), the capped dismissal hinge on the drawn
        confirmed normals (see _DISMISSAL_WEIGHT), or their sum. Both kinds are scored
        in one pass: a pass costs its kernel launches, not its rows (with confirmed
        anomalies alone, the exposure's arithmetic as it was)."""
        rows, eps, known_rows = self._feedback_rows(data, known, dismissed)
        scores = self._scores(rows, eps)
        # The quantiles the hinges need, in one call: it sorts the batch's scores once.
        wanted = ([_EXPOSURE_QUANTILE] if known is not None else []) + (
            [self.config.normal_quantile] if dismissed is not None else [])
        levels = list(torch.quantile(normal_scores.detach(),
                                     torch.tensor(wanted, device=scores.device)))
        term = None
        if known is not None:
            margin = levels.pop(0) + _EXPOSURE_MARGIN
            term = _EXPOSURE_WEIGHT * torch.relu(margin - scores[:known_rows]).mean()
        if dismissed is not None:
            bound = levels.pop(0) - _DISMISSAL_MARGIN
            hinge = torch.clamp(torch.relu(scores[known_rows:] - bound), max=_DISMISSAL_HINGE_CAP)
            dismissal = _DISMISSAL_WEIGHT * hinge.mean()
            term = dismissal if term is None else term + dismissal
        return term

    def _feedback_rows(self, data: Tensors, known: tuple[torch.Tensor, torch.Tensor] | None,
                       dismissed: tuple[torch.Tensor, torch.Tensor] | None
                       ) -> tuple[Tensors, torch.Tensor, int]:
        """The step's drawn verdict rows, confirmed anomalies first, their draws of eps,
        and how many are confirmed anomalies."""
        parts = []
        if known is not None:
            parts.append((self.known.rows(known[0]), known[1]))
        if dismissed is not None:
            parts.append((data.rows(self.dismissed.index_select(0, dismissed[0])), dismissed[1]))
        if len(parts) == 1:
            rows, eps = parts[0]
        else:
            rows = Tensors(*(torch.cat([getattr(part, name) for part, _ in parts])
                             for name in ("numeric", "indicators", "codes")))
            eps = torch.cat([draws for _, draws in parts], 1)
        return rows, eps, 0 if known is None else len(known[0])

    def _scores(self, rows: Tensors, eps: torch.Tensor) -> torch.Tensor:
        """The rows' negative ELBO (beta 1, the score the detector scores with)."""
        reconstruction, kl = negative_elbo(self.model, rows.numeric, rows.indicators,
                                           rows.codes, eps)
        return reconstruction.mean(0) + kl

    def _add_exposure_gradient(self, exposure: torch.Tensor) -> None:
        """Add the exposure term's gradient, scaled down where needed to at most
        _EXPOSURE_GRADIENT_SHARE of the normal rows' gradient norm: however few the
        confirmed rows and however far below the margin, they steer the step without
        taking it over (and the validation loss that stops training early keeps
        improving)."""
        # Its own gradient, apart from the normal one already in .grad.
        self.last_exposure = list(torch.autograd.grad(
            exposure, list(self.model.parameters()), materialize_grads=True))
        self._add_last_exposure()

    def _add_last_exposure(self) -> None:
        """Add the latest exposure gradient, capped against this step's normal one."""
        grads = [p.grad for p in self.model.parameters()]
        scale = _exposure_scale(_norm(grads), _norm(self.last_exposure))
        torch._foreach_add_(grads, torch._foreach_mul(self.last_exposure, scale))

    def _kept_means(self, reconstruction: torch.Tensor, kl: torch.Tensor,
                    index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's mean terms over the rows that keep their weight."""
        weights = self.row_weights.index_select(0, index)
        kept = weights.sum().clamp_min(1.0)
        return (weights * reconstruction).sum() / kept, (weights * kl).sum() / kept

    def clip_gradients(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip_norm,
                                       foreach=True)

    def snapshot(self) -> object:
        """A copy of the weights now, for ``restore``."""
        return copy.deepcopy(self.model.state_dict())

    def restore(self, snapshot: object) -> None:
        self.model.load_state_dict(snapshot)

    def finish(self) -> None:
        """Called once training ends; the model is left as an ordinary module."""


class FlatStep(TrainingStep):
    """TrainingStep on a CPU, with every parameter and gradient a view into one
    buffer.

    The step's fixed costs are paid once, not once per parameter tensor. Zeroing
    the gradients is one fill. Clipping is one norm and one multiply. Adam updates
    one tensor, so little of its Python runs. Backward adds each gradient into its
    view in place. A snapshot of the weights is one copy of the buffer. The
    arithmetic is the same as per-parameter Adam with clipping, up to float
    rounding (tests/test_model_math.py). It saved 5-8% of a training step
    (measured in commit d68ef4a; see docs/benchmarks.md in its history).
    """

    def __init__(self, model: TabularVAE, config: TrainingConfig, device: torch.device,
                 train_rows: int = 0):
        self.parameter_views = list(model.parameters())
        self.flat = nn.Parameter(torch.cat([p.detach().reshape(-1)
                                            for p in self.parameter_views]))
        self.flat.grad = torch.zeros_like(self.flat)
        offset = 0
        for parameter in self.parameter_views:
            size = parameter.numel()
            parameter.data = self.flat.data[offset:offset + size].view_as(parameter)
            parameter.grad = self.flat.grad[offset:offset + size].view_as(parameter)
            offset += size
        super().__init__(model, FlatAdam(self.flat), config, device, train_rows)

    def clip_gradients(self) -> None:
        # The same rule as clip_grad_norm_: scale by max_norm / (norm + 1e-6) when below 1.
        norm = torch.linalg.vector_norm(self.flat.grad)
        self.flat.grad.mul_(torch.clamp(self.config.grad_clip_norm / (norm + 1e-6), max=1.0))

    def _add_exposure_gradient(self, exposure: torch.Tensor) -> None:
        # As TrainingStep's, kept as one flat vector like the gradient.
        grads = torch.autograd.grad(exposure, self.parameter_views, materialize_grads=True)
        self.last_exposure = torch.cat([g.reshape(-1) for g in grads])
        self._add_last_exposure()

    def _add_last_exposure(self) -> None:
        scale = _exposure_scale(torch.linalg.vector_norm(self.flat.grad),
                                torch.linalg.vector_norm(self.last_exposure))
        self.flat.grad.add_(self.last_exposure * scale)

    def snapshot(self) -> torch.Tensor:
        return self.flat.detach().clone()

    def restore(self, snapshot: torch.Tensor) -> None:
        with torch.no_grad():
            self.flat.copy_(snapshot)

    def finish(self) -> None:
        # Each parameter gets its own storage back: a model file cannot hold tensors
        # that share memory, and the model should not keep the buffer alive.
        for parameter in self.parameter_views:
            parameter.data = parameter.data.clone()
            parameter.grad = None


class FlatAdam:
    """Adam on one flat parameter: torch.optim.Adam's arithmetic (single-tensor form,
    betas 0.9 and 0.999, eps 1e-8, no weight decay), its rate in ``param_groups``.

    Not torch.optim.Adam itself: the first step of any torch.optim optimiser imports
    torch._dynamo, which took 4.4-5.5 s on 2 busy cores - more than the whole
    training of a small file now takes. On one flat tensor the update is a handful
    of whole-buffer operations, as cheap as the fused kernel."""

    def __init__(self, parameter: torch.Tensor, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.parameter, self.betas, self.eps = parameter, betas, eps
        self.param_groups = [{"lr": 0.0}]
        self.exp_avg = torch.zeros_like(parameter, memory_format=torch.preserve_format)
        self.exp_avg_sq = torch.zeros_like(parameter, memory_format=torch.preserve_format)
        self.steps = 0

    def zero_grad(self, set_to_none: bool = False) -> None:
        self.parameter.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        beta1, beta2 = self.betas
        grad, rate = self.parameter.grad, self.param_groups[0]["lr"]
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        correction1, correction2 = 1 - beta1 ** self.steps, 1 - beta2 ** self.steps
        denominator = (self.exp_avg_sq.sqrt() / math.sqrt(correction2)).add_(self.eps)
        self.parameter.addcdiv_(self.exp_avg, denominator, value=-rate / correction1)


class CudaGraphStep(TrainingStep):
    """TrainingStep on a GPU, captured once as a CUDA graph and replayed.

    A step of these small networks is a few hundred tiny kernels; launched one by
    one from Python they leave the GPU idle most of the time (6.1 ms a step on an
    H100 against 0.6 ms replayed; docs/benchmarks.md, "Speed on a GPU"). The graph reads its batch
    through fixed index and eps buffers. The first steps run uncaptured on a side
    stream, as capture requires; an epoch's last, smaller batch runs uncaptured.
    """

    _WARMUP_STEPS = 3

    def __init__(self, model: TabularVAE, optimiser: torch.optim.Optimizer,
                 config: TrainingConfig, device: torch.device, batch_size: int,
                 train_rows: int = 0):
        super().__init__(model, optimiser, config, device, train_rows)
        # The captured graph keeps the branch it was captured with: weighted from the
        # start, since rows may be rejected after capture.
        self.weighted = self.row_weights is not None
        self.index = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.eps = torch.zeros(1, batch_size, model.config.latent_dim, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.capture_failed = False
        self.warmup_steps_run = 0

    def run(self, data: Tensors, index: torch.Tensor, eps: torch.Tensor,
            known: tuple[torch.Tensor, torch.Tensor] | None = None,
            dismissed: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        # With verdicts every step runs uncaptured: the graph holds neither the
        # confirmed rows nor the feedback gradient that the steps between exposures add.
        if (len(index) != len(self.index) or self.capture_failed or self.known is not None
                or self.dismissed is not None):
            return super().run(data, index, eps, known, dismissed)
        if self.graph is None and self.warmup_steps_run < self._WARMUP_STEPS:
            self.warmup_steps_run += 1
            return self._on_side_stream(partial(super().run, data, index, eps))
        if self.graph is None:
            self.graph = self._capture(data)
            if self.graph is None:
                return super().run(data, index, eps)
        self.index.copy_(index)
        self.eps.copy_(eps)
        self.graph.replay()

    @staticmethod
    def _on_side_stream(work) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            work()
        torch.cuda.current_stream().wait_stream(side)

    def _capture(self, data: Tensors) -> torch.cuda.CUDAGraph | None:
        """The captured step (recorded, not run), or None when this PyTorch or driver
        can't capture it: the steps then run uncaptured, slower, same arithmetic."""
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                super().run(data, self.index, self.eps)
        except RuntimeError:
            self.capture_failed = True
            return None
        return graph


def training_step(model: TabularVAE, config: TrainingConfig, batch_size: int,
                  device: torch.device, train_rows: int = 0) -> TrainingStep:
    """Adam and the step that drives it: a CUDA graph on a GPU; elsewhere plain calls
    on one flat buffer of parameters."""
    if device.type == "cuda":
        # A capturable Adam keeps its step count on the GPU; its rate is a GPU tensor
        # that the schedule fills in place, so replays see each step's rate.
        optimiser = torch.optim.Adam(model.parameters(), lr=torch.tensor(0.0, device=device),
                                     capturable=True, foreach=True)
        return CudaGraphStep(model, optimiser, config, device, batch_size, train_rows)
    return FlatStep(model, config, device, train_rows)


def _improves(loss: float, best: float) -> bool:
    """A real improvement: lower by more than a relative 1e-4 (noise is not progress)."""
    return math.isinf(best) or loss < best - 1e-4 * abs(best)


def _train_epoch(step: TrainingStep, schedule: HoldThenCosine, data: Tensors, batch_size: int,
                 beta: float, generator: torch.Generator, epoch: int) -> tuple[float, float, float]:
    step.start_epoch(beta)
    latent_dim = step.model.config.latent_dim
    order = torch.randperm(len(data), generator=generator, device=generator.device)
    for start in range(0, len(data), batch_size):
        index = order[start:start + batch_size]
        eps = torch.randn(1, len(index), latent_dim, generator=generator, device=generator.device)
        feedback = schedule.steps % _EXPOSURE_EVERY == 0
        # Off the feedback steps, or without such verdicts, nothing is drawn: the
        # generator's stream stays as it was without them.
        known = _feedback_draw(len(step.known) if feedback and step.known is not None
                               else None, _EXPOSURE_ROWS, latent_dim, generator)
        dismissed = _feedback_draw(len(step.dismissed) if feedback and step.dismissed is not None
                                   else None, _DISMISSAL_ROWS, latent_dim, generator)
        step.run(data, index, eps, known, dismissed)
        schedule.step()
    # Checked once an epoch, not every step: reading a GPU value stalls the device, and a
    # non-finite step loss leaves the epoch's sum non-finite anyway.
    mean_loss, mean_reconstruction, mean_kl = (step.totals / len(data)).tolist()
    if not math.isfinite(mean_loss):
        raise TrainingError(
            f"training diverged: the loss became {mean_loss} in epoch {epoch}; "
            "check the data for extreme values or lower the learning rate")
    return mean_loss, mean_reconstruction, mean_kl


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


def _exposure_scale(normal_norm: torch.Tensor, exposure_norm: torch.Tensor) -> torch.Tensor:
    """The factor that brings the exposure gradient to at most _EXPOSURE_GRADIENT_SHARE
    of the normal one's norm (a tensor: nothing is read back from the device)."""
    return torch.clamp(_EXPOSURE_GRADIENT_SHARE * normal_norm / (exposure_norm + 1e-12),
                       max=1.0)


def _feedback_draw(rows: int | None, most: int, latent_dim: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Positions among ``rows`` verdict rows for a step (at most ``most``, drawn with
    replacement) and their eps; None, drawing nothing from the generator, when there
    are none (no such verdicts, or not a feedback step)."""
    if rows is None:
        return None
    count = min(rows, most)
    index = torch.randint(rows, (count,), generator=generator, device=generator.device)
    eps = torch.randn(1, count, latent_dim, generator=generator, device=generator.device)
    return index, eps


@torch.no_grad()
def evaluate_loss(model: TabularVAE, data: Tensors, eps: torch.Tensor, beta: float,
                  trim_share: float = 0.0) -> tuple[float, float, float]:
    """Mean loss, reconstruction NLL and KL over ``data`` for fixed draws ``eps``,
    leaving out the ``trim_share`` of rows with the highest losses."""
    model.eval()
    if len(data) == 0:
        return math.nan, math.nan, math.nan
    terms = [_row_terms(model, data.rows(index), eps[:, index])
             for index in _eval_chunks(len(data), eps.device)]
    reconstruction = torch.cat([r for r, _ in terms])
    kl = torch.cat([k for _, k in terms])
    trimmed = int(round(trim_share * len(data)))
    if trimmed:
        kept = torch.argsort(reconstruction + beta * kl)[:len(data) - trimmed]
        reconstruction, kl = reconstruction[kept], kl[kept]
    reconstruction, kl = reconstruction.mean().item(), kl.mean().item()
    return reconstruction + beta * kl, reconstruction, kl


def _eval_chunks(rows: int, device: torch.device) -> Iterator[torch.Tensor]:
    for start in range(0, rows, _EVAL_ROWS):
        yield torch.arange(start, min(start + _EVAL_ROWS, rows), device=device)


def _row_terms(model: TabularVAE, part: Tensors,
               eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row reconstruction NLL (averaged over the draws) and KL."""
    reconstruction, kl = negative_elbo(model, part.numeric, part.indicators, part.codes, eps)
    return reconstruction.mean(0), kl


@torch.no_grad()
def row_losses(model: TabularVAE, data: Tensors, beta: float,
               generator: torch.Generator) -> np.ndarray:
    """Each row's loss (reconstruction NLL + beta * KL for one draw of eps), as robust
    training ranks them."""
    model.eval()
    eps = torch.randn(1, len(data), model.config.latent_dim, generator=generator,
                      device=generator.device)
    losses = [reconstruction + beta * kl for reconstruction, kl in
              (_row_terms(model, data.rows(index), eps[:, index])
               for index in _eval_chunks(len(data), eps.device))]
    return torch.cat(losses).cpu().numpy() if losses else np.zeros(0)
