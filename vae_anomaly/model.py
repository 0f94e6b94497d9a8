"""The VAE: its config, the network, and the terms of its loss.

Pure: no I/O and nothing runs at import time. Shapes use ``...`` for optional
leading dimensions (e.g. K Monte Carlo draws in front of the batch).

    q(z|x) = N(mu(x), diag(sigma^2(x)))          encoder
    z      = mu + sigma * eps,  eps ~ N(0, I)     reparameterization trick
    p(x|z) = prod_j p(x_j | z)                    decoder, one likelihood per column:
             Gaussian with learned variance (numeric), Bernoulli (missing indicator),
             softmax (categorical)
    loss   = -log p(x|z) + beta * KL(q(z|x) || N(0, I))
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

_LOG_2PI = math.log(2 * math.pi)
# The starting logit of each category's "unknown" level (preprocessing.UNKNOWN_CODE = 0).
UNKNOWN_LEVEL_LOGIT = -8.0


@dataclass
class VAEConfig:
    """Everything needed to rebuild the network (stored in the model file)."""

    n_numeric: int
    n_indicators: int
    category_sizes: list[int] = field(default_factory=list)
    hidden_dims: list[int] = field(default_factory=lambda: [64, 32])
    latent_dim: int = 4
    # "column": one learned variance per numeric column; "row": the decoder predicts
    # a variance per row. Per-column is the default: a per-row variance lets the
    # decoder explain an anomaly away as noise (docs/benchmarks.md, "Tried and dropped").
    decoder_variance: str = "column"
    # Bounds on the decoder's log-variance: the floor keeps a near-constant column
    # from turning into an infinitely sharp likelihood; the ceiling keeps the
    # decoder from explaining anything away as noise.
    min_decoder_logvar: float = -6.0
    max_decoder_logvar: float = 4.0
    max_latent_logvar: float = 10.0

    @property
    def input_dim(self) -> int:
        return self.n_numeric + self.n_indicators + sum(self.category_sizes)

    @property
    def output_dim(self) -> int:
        return sum(self.output_split)

    @property
    def output_split(self) -> list[int]:
        """Widths of the decoder outputs: means, [log-variances], indicators, categories."""
        per_row_logvar = self.n_numeric if self.decoder_variance == "row" else 0
        return [self.n_numeric, per_row_logvar, self.n_indicators, sum(self.category_sizes)]

    @classmethod
    def sized_for(cls, n_numeric: int, n_indicators: int, category_sizes: list[int],
                  latent_dim: int | None = None, sizing_inputs: int | None = None
                  ) -> VAEConfig:
        """Default architecture: widths and latent size scale with the number of inputs
        (``sizing_inputs`` where given: preprocessing.Layout counts a boolean as one)."""
        input_dim = n_numeric + n_indicators + sum(category_sizes)
        if sizing_inputs is not None:
            input_dim = sizing_inputs
        width = int(min(512, max(64, 2 * input_dim)))
        if latent_dim is None:
            latent_dim = int(min(32, max(2, round(input_dim / 4))))
        return cls(n_numeric=n_numeric, n_indicators=n_indicators,
                   category_sizes=list(category_sizes), hidden_dims=[width, width // 2],
                   latent_dim=latent_dim)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DecoderOutput:
    numeric_mean: torch.Tensor  # (..., n, n_numeric)
    numeric_logvar: torch.Tensor  # (..., n, n_numeric)
    indicator_logits: torch.Tensor  # (..., n, n_indicators)
    category_logits: torch.Tensor  # (..., n, sum(category_sizes))


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.SiLU()]
    return nn.Sequential(*layers)


class TabularVAE(nn.Module):
    """Encoder and decoder MLPs with one likelihood head per column type."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        hidden = list(config.hidden_dims)
        self.encoder = _mlp([config.input_dim, *hidden])
        self.to_mu = nn.Linear(hidden[-1], config.latent_dim)
        self.to_logvar = nn.Linear(hidden[-1], config.latent_dim)
        self.decoder = _mlp([config.latent_dim, *reversed(hidden)])
        self.to_output = nn.Linear(hidden[0], config.output_dim)
        # Where each category's one-hot block starts; empty when there are none.
        sizes = torch.tensor(config.category_sizes, dtype=torch.long)
        offsets = sizes.cumsum(0) - sizes
        self.register_buffer("category_offsets", offsets, persistent=False)
        self._start_unknown_levels_unlikely()
        if config.decoder_variance not in ("column", "row"):
            raise ValueError(f"decoder_variance must be 'column' or 'row', "
                             f"not {config.decoder_variance!r}")
        if config.decoder_variance == "column":
            # Starts at the middle of the allowed range (sigmoid(0) = 0.5).
            self.column_logvar = nn.Parameter(torch.zeros(config.n_numeric))

    @torch.no_grad()
    def _start_unknown_levels_unlikely(self) -> None:
        """Level 0 of every category is "unknown", which no training row has: start
        its logit low, so an unseen level scores as odd however short the training
        (training only pushes it lower; with a zero start a 15-epoch fit left it
        within 1 nat of a common level)."""
        first_category_output = sum(self.config.output_split[:3])
        self.to_output.bias[first_category_output + self.category_offsets] = UNKNOWN_LEVEL_LOGIT

    def inputs(self, numeric: torch.Tensor, indicators: torch.Tensor,
               codes: torch.Tensor) -> torch.Tensor:
        """The encoder's input: scaled numbers, missing indicators and one-hot categories."""
        one_hot = numeric.new_zeros(len(numeric), sum(self.config.category_sizes))
        if codes.shape[1]:
            one_hot.scatter_(1, codes + self.category_offsets, 1.0)
        return torch.cat([numeric, indicators, one_hot], dim=1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(x)
        limit = self.config.max_latent_logvar
        return self.to_mu(hidden), self.to_logvar(hidden).clamp(-limit, limit)

    def decode(self, z: torch.Tensor) -> DecoderOutput:
        out = self.to_output(self.decoder(z))
        cfg = self.config
        mean, raw_logvar, indicators, categories = torch.split(out, cfg.output_split, dim=-1)
        if cfg.decoder_variance == "column":
            # Squashed before it is expanded: one value a column, not one a cell.
            return DecoderOutput(mean, self._squash_logvar(self.column_logvar).expand_as(mean),
                                 indicators, categories)
        return DecoderOutput(mean, self._squash_logvar(raw_logvar), indicators, categories)

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's raw outputs, (..., n, output_dim): output_nll's input."""
        return self.to_output(self.decoder(z))

    def output_nll(self, out: torch.Tensor, numeric: torch.Tensor, indicators: torch.Tensor,
                   codes: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) summed over a row's cells, (..., n), from ``decoder_output``:
        reconstruction_nll's total without its per-cell terms, in fewer passes over
        the draws' outputs (scoring needs the totals alone). With one variance a
        column the squared residuals meet the precisions in one product; a
        category's NLL is the logsumexp of its block less the level's logit, every
        level's logit gathered at once."""
        cfg = self.config
        mean, raw_logvar, indicator_logits, category_logits = torch.split(
            out, cfg.output_split, dim=-1)
        residual = (numeric - mean).square()
        if cfg.decoder_variance == "column":
            logvar = self._squash_logvar(self.column_logvar)
            total = 0.5 * (residual @ torch.exp(-logvar)
                           + (_LOG_2PI * cfg.n_numeric + logvar.sum()))
        else:
            logvar = self._squash_logvar(raw_logvar)
            total = 0.5 * (_LOG_2PI + logvar + residual * torch.exp(-logvar)).sum(-1)
        # Bernoulli: binary cross-entropy with logits, softplus(l) - l * t.
        total = total + (F.softplus(indicator_logits) - indicator_logits * indicators).sum(-1)
        if not cfg.category_sizes:
            return total
        levels = (codes + self.category_offsets).expand(*category_logits.shape[:-1], -1)
        total = total - category_logits.gather(-1, levels).sum(-1)
        start = 0
        for size, count in _runs(cfg.category_sizes):
            block = category_logits[..., start:start + size * count]
            total = total + torch.logsumexp(
                block.reshape(*block.shape[:-1], count, size), -1).sum(-1)
            start += size * count
        return total

    def _squash_logvar(self, raw_logvar: torch.Tensor) -> torch.Tensor:
        """A smooth squash into [min, max]: gradients never vanish at a hard clamp."""
        cfg = self.config
        span = cfg.max_decoder_logvar - cfg.min_decoder_logvar
        return cfg.min_decoder_logvar + span * torch.sigmoid(raw_logvar)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps. ``eps`` may carry extra leading dims (K draws)."""
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Closed-form KL(N(mu, sigma^2) || N(0, I)), summed over the latent dims: (..., n)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


@dataclass
class NLLTerms:
    """Per-cell negative log-likelihoods; sum the last dims for a row's total."""

    numeric: torch.Tensor  # (..., n, n_numeric)
    indicators: torch.Tensor  # (..., n, n_indicators)
    categories: torch.Tensor  # (..., n, n_categorical)

    def total(self) -> torch.Tensor:
        return self.numeric.sum(-1) + self.indicators.sum(-1) + self.categories.sum(-1)


def reconstruction_nll(out: DecoderOutput, numeric: torch.Tensor, indicators: torch.Tensor,
                       codes: torch.Tensor, category_sizes: list[int]) -> NLLTerms:
    """-log p(x|z) for each cell; targets broadcast against any leading draw dims."""
    numeric_nll = 0.5 * (_LOG_2PI + out.numeric_logvar
                         + (numeric - out.numeric_mean).pow(2) * torch.exp(-out.numeric_logvar))
    target = indicators.expand_as(out.indicator_logits)
    indicator_nll = F.binary_cross_entropy_with_logits(out.indicator_logits, target,
                                                       reduction="none")
    # log_softmax is one fused kernel each way, where logsumexp minus the level's logit
    # was several small ones: about 60 of a CPU training step's 3,000 microseconds.
    # Neighbouring columns of one size (a file's many booleans) share one call.
    category_nll, column, start = [], 0, 0
    for size, count in _runs(category_sizes):
        width = size * count
        logits = out.category_logits[..., start:start + width]
        logits = logits.reshape(*logits.shape[:-1], count, size)
        levels = codes[:, column:column + count].expand(*logits.shape[:-1])
        category_nll.append(-torch.log_softmax(logits, -1).gather(
            -1, levels.unsqueeze(-1)).squeeze(-1))
        column, start = column + count, start + width
    if category_nll:
        categories = torch.cat(category_nll, dim=-1)
    else:
        categories = numeric.new_zeros(*out.numeric_mean.shape[:-1], 0)
    return NLLTerms(numeric_nll, indicator_nll, categories)


def _runs(sizes: list[int]) -> list[tuple[int, int]]:
    """(size, count) for each run of neighbouring equal sizes: [5, 5, 7] -> [(5, 2), (7, 1)]."""
    runs: list[tuple[int, int]] = []
    for size in sizes:
        if runs and runs[-1][0] == size:
            runs[-1] = (size, runs[-1][1] + 1)
        else:
            runs.append((size, 1))
    return runs


def negative_elbo(model: TabularVAE, numeric: torch.Tensor, indicators: torch.Tensor,
                  codes: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row reconstruction NLL (K, n) and KL (n) for the draws ``eps`` (K, n, latent)."""
    mu, logvar = model.encode(model.inputs(numeric, indicators, codes))
    z = reparameterize(mu, logvar, eps)
    terms = reconstruction_nll(model.decode(z), numeric, indicators, codes,
                               model.config.category_sizes)
    return terms.total(), gaussian_kl(mu, logvar)
