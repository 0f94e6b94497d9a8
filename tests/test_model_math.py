"""The method's mathematics: KL, reparameterization, gradients, Monte Carlo spread."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.distributions import Bernoulli, Categorical, Normal, kl_divergence

from vae_anomaly.model import (DecoderOutput, TabularVAE, VAEConfig, gaussian_kl,
                                reconstruction_nll, reparameterize)
from vae_anomaly.scoring import row_normals


def test_closed_form_kl_equals_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    mu = torch.randn(50, 6, generator=generator) * 2
    logvar = torch.randn(50, 6, generator=generator)
    q = Normal(mu, torch.exp(0.5 * logvar))
    p = Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected, rtol=1e-5, atol=1e-5)


def test_each_cell_nll_equals_torch_distributions_log_prob_with_draw_dims():
    """Gaussian numbers, Bernoulli missing indicators and softmax categories, checked
    against an independent implementation, with K = 3 draws in front of the batch."""
    g = torch.Generator().manual_seed(4)
    k, n, sizes = 3, 7, [4, 2]
    numeric, indicators = torch.randn(n, 2, generator=g), (torch.rand(n, 1, generator=g) < 0.5).float()
    codes = torch.stack([torch.randint(0, size, (n,), generator=g) for size in sizes], 1)
    out = DecoderOutput(numeric_mean=torch.randn(k, n, 2, generator=g),
                        numeric_logvar=torch.randn(k, n, 2, generator=g),
                        indicator_logits=torch.randn(k, n, 1, generator=g) * 3,
                        category_logits=torch.randn(k, n, sum(sizes), generator=g) * 2)
    terms = reconstruction_nll(out, numeric, indicators, codes, sizes)
    gaussian = -Normal(out.numeric_mean, torch.exp(0.5 * out.numeric_logvar)).log_prob(numeric)
    bernoulli = -Bernoulli(logits=out.indicator_logits).log_prob(indicators.expand(k, n, 1))
    first, second = torch.split(out.category_logits, sizes, dim=-1)
    categorical = -torch.stack([Categorical(logits=first).log_prob(codes[:, 0].expand(k, n)),
                                Categorical(logits=second).log_prob(codes[:, 1].expand(k, n))], -1)
    torch.testing.assert_close(terms.numeric, gaussian, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms.indicators, bernoulli, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms.categories, categorical, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms.total(), (gaussian.sum(-1) + bernoulli.sum(-1)
                                               + categorical.sum(-1)), rtol=1e-5, atol=1e-5)


def test_reparameterized_samples_have_the_right_mean_and_variance():
    mu = torch.tensor([1.5, -2.0, 0.0])
    logvar = torch.log(torch.tensor([0.25, 4.0, 1.0]))
    eps = torch.randn(200_000, 3, generator=torch.Generator().manual_seed(1))
    z = reparameterize(mu, logvar, eps)
    torch.testing.assert_close(z.mean(0), mu, atol=0.02, rtol=0)
    torch.testing.assert_close(z.var(0), logvar.exp(), atol=0.0, rtol=0.02)


def test_gradients_reach_mu_and_logvar_through_z():
    mu = torch.tensor([0.3, -0.7], requires_grad=True)
    logvar = torch.tensor([0.1, -0.5], requires_grad=True)
    eps = torch.tensor([0.8, -1.2])
    z = reparameterize(mu, logvar, eps)
    z.pow(2).sum().backward()
    expected_mu = 2 * z.detach()
    expected_logvar = 2 * z.detach() * eps * 0.5 * torch.exp(0.5 * logvar.detach())
    torch.testing.assert_close(mu.grad, expected_mu)
    torch.testing.assert_close(logvar.grad, expected_logvar)


def test_row_normals_are_standard_normal_and_tied_to_the_row():
    draws = row_normals(seed=3, rows=np.arange(20_000), samples=4, dim=5).numpy()
    assert draws.shape == (4, 20_000, 5)
    assert abs(draws.mean()) < 0.01
    assert abs(draws.std() - 1) < 0.01
    # Dims are uncorrelated up to the noise of a 2**16-vector table (sd ~ 0.004).
    flat = draws.reshape(-1, 5)
    assert np.abs(np.corrcoef(flat.T) - np.eye(5)).max() < 0.025
    # A row's K draws are K different vectors, and draws k and k+1 are uncorrelated.
    assert len({tuple(v) for v in draws[:, 77]}) == 4
    assert abs(np.corrcoef(draws[0, :, 0], draws[1, :, 0])[0, 1]) < 0.025
    # Row 12345's draws do not depend on which other rows are in the batch.
    alone = row_normals(seed=3, rows=np.array([12_345]), samples=4, dim=5).numpy()
    np.testing.assert_array_equal(alone[:, 0], draws[:, 12_345])
    assert not np.array_equal(row_normals(4, np.array([12_345]), 4, 5).numpy(), alone)
    # Row ids beyond 2**32 draws still differ from their low-32-bit twins.
    assert not torch.equal(row_normals(3, [2**40 + 7], 4, 5), row_normals(3, [7], 4, 5))


def test_monte_carlo_spread_of_the_score_shrinks_as_k_grows(tiny_model, tiny_dir):
    from vae_anomaly import load

    detector = load(tiny_model)
    frame = pd.read_csv(tiny_dir / "new.csv").head(20)
    spreads = {}
    for k in (4, 64):
        scores = np.stack([detector.score(frame, samples=k, seed=s)["anomaly_score"]
                           for s in range(12)])
        spreads[k] = scores.std(0).mean()
    # Standard error falls as 1/sqrt(K): a 16x larger K gives ~4x less spread.
    assert spreads[64] < spreads[4] / 2.5
    assert spreads[64] > 0


@pytest.mark.parametrize("variance", ["column", "row"])
def test_decoder_log_variance_stays_within_its_bounds(variance):
    config = VAEConfig(n_numeric=3, n_indicators=1, category_sizes=[4, 5], latent_dim=2,
                       decoder_variance=variance)
    model = TabularVAE(config)
    out = model.decode(torch.randn(7, 100, 2) * 1000)
    assert out.numeric_logvar.min() >= config.min_decoder_logvar
    assert out.numeric_logvar.max() <= config.max_decoder_logvar
    assert out.category_logits.shape == (7, 100, 9)


@pytest.mark.parametrize("rows, batch, epochs, learning_rate", [
    (300, 300, 300, 300 / 96 * 1e-3),   # small data: every row in one batch, the epoch cap
    (2_700, 1024, 148, 1024 / 96 * 1e-3),  # sample_data: 400,000 rows seen bind
    (5_000, 1024, 80, 1024 / 96 * 1e-3),
    (10_000, 1024, 50, 1024 / 156.25 * 1e-3),  # the rate of 1e-3 at n/64 rows a batch
    (180_000, 1024, 50, 4e-3),          # a 200,000-row file: 50 epochs, 9M rows seen
    (5_000_000, 1024, 20, 4e-3),        # never fewer than 20 epochs
])
def test_training_length_scales_with_the_data(rows, batch, epochs, learning_rate):
    from vae_anomaly.training import TrainingConfig

    config = TrainingConfig()
    assert config.resolved_batch_size(rows) == batch
    assert config.resolved_epochs(rows) == epochs
    assert config.resolved_learning_rate(batch, rows) == pytest.approx(learning_rate)
    assert TrainingConfig(epochs=7, batch_size=32).resolved_epochs(rows) == 7
    assert TrainingConfig(learning_rate=5e-4).resolved_learning_rate(batch, rows) == 5e-4
    # A batch the user chose gets the same rate per row, never below 1e-3.
    assert TrainingConfig(batch_size=32).resolved_learning_rate(32, rows) == 1e-3


def test_training_runs_on_one_torch_thread_and_gives_the_callers_count_back():
    from vae_anomaly import training

    seen = []

    class Recorder:
        def on_epoch_end(self, stats):
            seen.append(torch.get_num_threads())

    data = training.Tensors(torch.randn(64, 2), torch.zeros(64, 0),
                            torch.zeros(64, 0, dtype=torch.long))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        training.train(TabularVAE(VAEConfig(n_numeric=2, n_indicators=0)), data, data,
                       training.TrainingConfig(epochs=3), torch.Generator().manual_seed(0),
                       [Recorder()])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 1, 1]


def test_fits_in_several_threads_give_the_callers_thread_count_back():
    from conftest import run_together_with_two_torch_threads
    from vae_anomaly import training

    data = training.Tensors(torch.randn(64, 2), torch.zeros(64, 0),
                            torch.zeros(64, 0, dtype=torch.long))

    def fit(epochs):
        training.train(TabularVAE(VAEConfig(n_numeric=2, n_indicators=0)), data, data,
                       training.TrainingConfig(epochs=epochs), torch.Generator().manual_seed(0))

    assert run_together_with_two_torch_threads([lambda: fit(3), lambda: fit(6)]) == 2


def test_a_cpu_fit_does_not_import_torch_dynamo():
    """torch.optim imports torch._dynamo on first use: seconds of a process's start,
    more than the whole training of a small file. FlatAdam steps the CPU fits."""
    import subprocess
    import sys

    code = ("import sys, torch; from vae_anomaly import training; "
            "from vae_anomaly.model import TabularVAE, VAEConfig; "
            "d = training.Tensors(torch.randn(32, 2), torch.zeros(32, 0), "
            "torch.zeros(32, 0, dtype=torch.long)); "
            "training.train(TabularVAE(VAEConfig(n_numeric=2, n_indicators=0)), d, d, "
            "training.TrainingConfig(epochs=2), torch.Generator().manual_seed(0)); "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_learning_rate_holds_for_half_the_bound_then_decays_to_a_twentieth():
    from vae_anomaly.training import HoldThenCosine

    optimiser = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.0)
    schedule = HoldThenCosine(optimiser, 2e-3, total_steps=100)
    rates = []
    for _ in range(120):
        rates.append(optimiser.param_groups[0]["lr"])
        optimiser.step()
        schedule.step()
    assert rates[0] == rates[50] == pytest.approx(2e-3)
    assert rates[75] == pytest.approx(2e-3 * (0.05 + 0.95 * 0.5))
    assert rates[100] == rates[119] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_the_schedule_fills_a_tensor_rate_in_place():
    """The CUDA-graph step's Adam reads its rate from one tensor; replacing the
    tensor would leave the captured graph on the old rate."""
    from vae_anomaly.training import HoldThenCosine

    rate = torch.tensor(0.0)
    optimiser = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=rate)
    schedule = HoldThenCosine(optimiser, 2e-3, total_steps=100)
    for _ in range(100):
        schedule.step()
    assert optimiser.param_groups[0]["lr"] is rate
    assert rate.item() == pytest.approx(1e-4)


def test_an_unknown_level_starts_far_less_likely_than_any_seen_level():
    config = VAEConfig(n_numeric=1, n_indicators=1, category_sizes=[5, 4])
    out = TabularVAE(config).decode(torch.zeros(3, config.latent_dim))
    for logits in torch.split(out.category_logits, config.category_sizes, dim=-1):
        probabilities = logits.softmax(-1)
        assert (probabilities[:, 0] < probabilities[:, 1:].min(-1).values / 100).all()


def test_a_diverging_loss_stops_training_with_the_epoch_named(monkeypatch):
    from vae_anomaly import training
    from vae_anomaly.errors import TrainingError

    config = VAEConfig(n_numeric=2, n_indicators=0, category_sizes=[])
    data = training.Tensors(torch.randn(64, 2), torch.zeros(64, 0), torch.zeros(64, 0,
                                                                              dtype=torch.long))
    real_elbo, steps = training.negative_elbo, []

    def elbo_turning_nan_in_epoch_two(*args):
        steps.append(None)
        reconstruction, kl = real_elbo(*args)
        return (reconstruction * torch.nan if len(steps) == 6 else reconstruction), kl  # epoch 2

    monkeypatch.setattr(training, "negative_elbo", elbo_turning_nan_in_epoch_two)
    with pytest.raises(TrainingError) as caught:
        training.train(TabularVAE(config), data, data,
                       training.TrainingConfig(epochs=5, batch_size=16),
                       torch.Generator().manual_seed(0))
    assert str(caught.value) == ("training diverged: the loss became nan in epoch 2; check the "
                                 "data for extreme values or lower the learning rate")
    # Epoch 1: 4 steps and a validation pass; epoch 2: all 4 steps, then the error.
    assert len(steps) == 9


@pytest.mark.parametrize(("clip_norm", "exposed"), [
    (0.05, False), (100.0, False),  # clipping every step / never
    (100.0, True)])  # with confirmed rows: exposure every other step, its gradient between
def test_the_flat_cpu_step_trains_like_per_parameter_adam_with_clipping(clip_norm, exposed):
    from vae_anomaly.training import FlatStep, Tensors, TrainingConfig, TrainingStep

    config = VAEConfig(n_numeric=3, n_indicators=1, category_sizes=[4, 5], latent_dim=2)
    generator = torch.Generator().manual_seed(0)
    data = Tensors(torch.randn(64, 3, generator=generator),
                   torch.randint(0, 2, (64, 1), generator=generator).float(),
                   torch.stack([torch.randint(1, 4, (64,), generator=generator),
                                torch.randint(1, 5, (64,), generator=generator)], dim=1))
    training = TrainingConfig(grad_clip_norm=clip_norm)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    reference_model = TabularVAE(config)
    reference = TrainingStep(reference_model, torch.optim.Adam(reference_model.parameters(),
                                                               lr=1e-2), training, cpu)
    torch.manual_seed(0)
    flat_model = TabularVAE(config)
    flat = FlatStep(flat_model, training, cpu)
    known = data.rows(torch.arange(3)) if exposed else None
    for step in (reference, flat):
        step.optimiser.param_groups[0]["lr"] = 1e-2
        step.start_epoch(beta=0.5)
        step.known = known
    for number in range(40):
        index = torch.randperm(64, generator=generator)[:16]
        eps = torch.randn(1, 16, 2, generator=generator)
        draw = None
        if exposed and number % 2 == 0:
            draw = (torch.randint(3, (3,), generator=generator),
                    torch.randn(1, 3, 2, generator=generator))
        reference.run(data, index, eps, draw)
        flat.run(data, index, eps, draw)
    assert (flat.last_exposure is not None) == exposed
    flat.finish()

    torch.manual_seed(0)
    moved = 0.0
    for (name, before), after, flat_after in zip(TabularVAE(config).named_parameters(),
                                                  reference_model.parameters(),
                                                  flat_model.parameters()):
        torch.testing.assert_close(flat_after, after, rtol=1e-4, atol=1e-5, msg=name)
        moved = max(moved, (after - before).abs().max().item())
        assert flat_after.grad is None
    assert moved > 0.05  # the steps did change the weights
    torch.testing.assert_close(flat.totals, reference.totals, rtol=1e-4, atol=1e-4)
    # finish() gives each parameter its own memory back (a model file needs that).
    pointers = [p.untyped_storage().data_ptr() for p in flat_model.parameters()]
    assert len(set(pointers)) == len(pointers)


def test_confirmed_and_dismissed_rows_scored_in_one_pass_give_each_hinge_its_rows():
    """The step scores both kinds of verdict rows in one pass; each hinge must still see
    its own rows: the exposure's the confirmed anomalies, the dismissal's the normals."""
    from vae_anomaly.model import negative_elbo
    from vae_anomaly.training import (_DISMISSAL_WEIGHT, _EXPOSURE_WEIGHT, Tensors,
                                      TrainingConfig, TrainingStep)

    config = VAEConfig(n_numeric=3, n_indicators=1, category_sizes=[4], latent_dim=2)
    generator = torch.Generator().manual_seed(2)
    data = Tensors(torch.randn(40, 3, generator=generator),
                   torch.randint(0, 2, (40, 1), generator=generator).float(),
                   torch.randint(0, 4, (40, 1), generator=generator))
    torch.manual_seed(0)
    model = TabularVAE(config)
    step = TrainingStep(model, torch.optim.SGD(model.parameters(), lr=0.0),
                        TrainingConfig(normal_quantile=0.5), torch.device("cpu"))
    # Confirmed anomalies far out, so their hinge differs from one on the normal rows.
    step.known = Tensors(data.numeric[:6] * 8, data.indicators[:6], data.codes[:6])
    step.dismissed = torch.arange(10, 14)
    known = (torch.tensor([0, 5, 2]), torch.randn(1, 3, 2, generator=generator))
    dismissed = (torch.tensor([3, 1]), torch.randn(1, 2, 2, generator=generator))

    def scores(rows: Tensors, eps: torch.Tensor) -> torch.Tensor:
        reconstruction, kl = negative_elbo(model, rows.numeric, rows.indicators, rows.codes, eps)
        return reconstruction.mean(0) + kl

    with torch.no_grad():
        anomalies = scores(step.known.rows(known[0]), known[1])
        normals = scores(data.rows(step.dismissed[dismissed[0]]), dismissed[1])
        # Batch scores that put every drawn row inside its hinge: the median well below
        # the dismissed rows, the 99th percentile at the highest confirmed one.
        normal_scores = torch.cat([torch.full((27,), normals.min().item() - 9.0),
                                   torch.full((3,), anomalies.max().item())])
        margin = torch.quantile(normal_scores, 0.99) + 20.0
        bound = torch.quantile(normal_scores, 0.5) - 5.0
        exposure = _EXPOSURE_WEIGHT * torch.relu(margin - anomalies).mean()
        dismissal = _DISMISSAL_WEIGHT * torch.clamp(torch.relu(normals - bound), max=20.0).mean()
        both = step._feedback(data, normal_scores, known, dismissed)
        alone = step._feedback(data, normal_scores, known, None)
        dismissed_alone = step._feedback(data, normal_scores, None, dismissed)
    assert exposure > 0.05 and dismissal > 0.01  # both hinges are active
    torch.testing.assert_close(both, exposure + dismissal, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(alone, exposure, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dismissed_alone, dismissal, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variance, sizes, indicators", [
    ("column", [4, 4, 7, 2], 2), ("row", [3, 5], 1), ("column", [], 0)])
def test_scoring_nll_sums_the_per_cell_terms(variance, sizes, indicators):
    torch.manual_seed(0)
    config = VAEConfig(n_numeric=3, n_indicators=indicators, category_sizes=sizes,
                       latent_dim=2, decoder_variance=variance)
    model = TabularVAE(config)
    numeric = torch.randn(50, 3)
    flags = (torch.rand(50, indicators) < 0.3).float()
    codes = torch.stack([torch.randint(0, s, (50,)) for s in sizes], 1) if sizes else \
        torch.zeros(50, 0, dtype=torch.long)
    z = torch.randn(6, 50, 2) * 2
    with torch.no_grad():
        cells = reconstruction_nll(model.decode(z), numeric, flags, codes, sizes).total()
        fused = model.output_nll(model.decoder_output(z), numeric, flags, codes)
    assert fused.shape == (6, 50)
    torch.testing.assert_close(fused, cells, rtol=1e-5, atol=1e-4)
