"""Quality experiments (monkeypatched variants of the defaults on bench/quality.py's splits):
    python bench/experiments/quality_variants.py DATA_DIR VARIANT[+VARIANT...] [--datasets ...]
Not part of the product; results are in docs/benchmarks.md ("Tried and dropped").

The preprocessing variants (nocompress, asinh*, spike, mask, stdscale, winsor,
quantile, jacobian, jacfine, knots*) patch the preprocessing of commit b3b46ab
(asinh scaling) and were run against it; to run them again, put that commit's
package first on the path:
    git worktree add /tmp/b3b46ab b3b46ab
    PYTHONPATH=/tmp/b3b46ab python bench/experiments/quality_variants.py DATA_DIR VARIANT
`knots30+quantile+jacfine` is what the product does since 18c2e58, so on
today's code `base` measures it. The training and scoring variants (floor*, beta*,
latent*, ens*, wd*, patience*, maxep*, drop*, dropenc*, mixlat, wide2x, deep3, samples64,
iwtrain*, iwscore, refit, mog*, rowvar, lr*, batch*,
heldoutvar, noise*) run on today's code; `base` has the default beta (0.25 since
abe8512), so `beta05` would measure the defaults before it."""
import argparse, json, sys, time
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import quality as Q
from sklearn.metrics import roc_auc_score
import vae_anomaly.preprocessing as P
import vae_anomaly.model as M
from vae_anomaly import VAEAnomalyDetector

def patch_config(**kw):
    orig = M.VAEConfig.sized_for.__func__
    def sized_for(cls, *a, **k):
        c = orig(cls, *a, **k)
        for key, val in kw.items():
            if callable(val):
                val = val(c)
            setattr(c, key, val)
        return c
    M.VAEConfig.sized_for = classmethod(sized_for)

VARIANTS = {}
def variant(f): VARIANTS[f.__name__] = f; return f

@variant
def base(): return {}
@variant
def nocompress():
    P._compress = lambda numbers, median, spread: np.clip((numbers - median) / spread, -1e6, 1e6)
    return {}
@variant
def floor2(): patch_config(min_decoder_logvar=-2.0); return {}
@variant
def floor4(): patch_config(min_decoder_logvar=-4.0); return {}
@variant
def beta1(): return {"beta": 1.0}
for _b in ("0.1", "0.25", "0.35", "0.5"):
    VARIANTS["beta" + _b.replace(".", "")] = (lambda b: (lambda: {"beta": float(b)}))(_b)
@variant
def latent2x(): patch_config(latent_dim=lambda c: min(64, 2 * c.latent_dim)); return {}
@variant
def latent4x(): patch_config(latent_dim=lambda c: min(128, 4 * c.latent_dim)); return {}
@variant
def latenthalf(): patch_config(latent_dim=lambda c: max(2, c.latent_dim // 2)); return {}
@variant
def rowvar(): patch_config(decoder_variance="row"); return {}
@variant
def ens5(): return {"_ensemble": 5}
@variant
def ens3(): return {"_ensemble": 3}


def scaled_asinh(c):
    def comp(numbers, median, spread):
        with np.errstate(over="ignore"):
            x = np.clip((numbers - median) / spread, -P._MAX_ABS_STANDARDISED, P._MAX_ABS_STANDARDISED)
        return c * np.arcsinh(x / c)
    P._compress = comp
for _c in (2, 4, 8, 16):
    VARIANTS[f"asinh{_c}"] = (lambda c: (lambda: (scaled_asinh(c), {})[1]))(_c)

for _f in (-1, 0, -3):
    VARIANTS[f"floor{_f}"] = (lambda f: (lambda: (patch_config(min_decoder_logvar=float(f)), {})[1]))(_f)

MODE_SHARE = 0.3
def spike_frames(data):
    """Cells equal to a numeric column's training mode (if >= MODE_SHARE of rows) become missing."""
    import pandas as pd
    tr, te = data.train_typed.copy(), data.test_typed.copy()
    for c in tr.columns:
        if not pd.api.types.is_numeric_dtype(tr[c]):
            continue
        mode = tr[c].mode()
        if len(mode) and (tr[c] == mode[0]).mean() >= MODE_SHARE and (tr[c] != mode[0]).sum() >= 2:
            tr.loc[tr[c] == mode[0], c] = np.nan
            te.loc[te[c] == mode[0], c] = np.nan
    data.train_typed, data.test_typed = tr, te
    return data
@variant
def spike(): return {"_spike": True}
MASK = {}
@variant
def mask():
    import vae_anomaly.scoring as S
    orig_fit = P.Preprocessor.fit
    def fit(self, *a, **k):
        out = orig_fit(self, *a, **k)
        tc = self.term_columns
        MASK["idx"] = torch.tensor([tc.numeric.index(i) for i in tc.indicators], dtype=torch.long)
        return out
    P.Preprocessor.fit = fit
    orig = M.reconstruction_nll
    def rn(out, numeric, indicators, codes, sizes):
        t = orig(out, numeric, indicators, codes, sizes)
        idx = MASK["idx"]
        if len(idx):
            keep = torch.ones_like(t.numeric)
            keep[..., idx] = 1.0 - indicators.expand(*t.numeric.shape[:-1], indicators.shape[-1])
            t.numeric = t.numeric * keep
        return t
    M.reconstruction_nll = rn; S.reconstruction_nll = rn
    return {}

def refit_spread(choose):
    """Patch numeric fitting: ``choose(numbers, spec)`` returns (centre, spread) or None
    to keep the default; the compressed mean and std are refitted to match."""
    orig = P._fit_numeric
    def fit_numeric(values, name, missing):
        spec = orig(values, name, missing)
        numbers = P._bounded(P.parse_numeric(values, name, "t")[~missing])
        with np.errstate(over="ignore", invalid="ignore"):
            chosen = choose(numbers, spec)
        if chosen is not None:
            spec["median"], spec["spread"] = chosen
            comp = P._compress(numbers, *chosen)
            std = float(comp.std())
            spec["mean"], spec["std"] = float(comp.mean()), std if std > 1e-6 else 1.0
        return spec
    P._fit_numeric = fit_numeric

@variant
def stdscale():
    """Mean and std instead of median and IQR."""
    def choose(numbers, spec):
        sd = float(np.std(numbers))
        return (float(np.mean(numbers)), sd) if 0 < sd < np.inf else None
    refit_spread(choose)
    return {}

@variant
def winsor():
    """Spread = max(IQR / 1.349, std of the values winsorised at the 1st/99th percentiles)."""
    def choose(numbers, spec):
        lo, hi = np.percentile(numbers, [1, 99])
        sd = float(np.std(np.clip(numbers, lo, hi)))
        return (spec["median"], sd) if 0 < sd < np.inf and sd > spec["spread"] else None
    refit_spread(choose)
    return {}

def _quantile_knots(numbers, n_knots=1000):
    """Unique training values (at most n_knots quantiles) and their normal scores,
    from the mid-rank empirical CDF (ties share one score)."""
    from scipy.stats import norm
    x = np.sort(numbers)
    n = len(x)
    knots = np.unique(np.quantile(x, np.linspace(0, 1, min(n_knots, n))))
    below = np.searchsorted(x, knots, side="left")
    upto = np.searchsorted(x, knots, side="right")
    cdf = np.clip((below + upto) / (2.0 * n), 0.5 / n, 1 - 0.5 / n)
    return knots, norm.ppf(cdf)

def _quantile_map(numbers, spec):
    kx, kz = np.asarray(spec["qx"]), np.asarray(spec["qz"])
    z = np.interp(numbers, kx, kz) if len(kx) > 1 else np.zeros_like(numbers)
    with np.errstate(over="ignore", invalid="ignore"):
        hi = np.arcsinh(np.clip((numbers - kx[-1]) / spec["tail"], 0, 1e15))
        lo = np.arcsinh(np.clip((kx[0] - numbers) / spec["tail"], 0, 1e15))
    return z + hi - lo

@variant
def quantile():
    """Per column: map values to normal scores through the training quantiles; beyond the
    training range continue with asinh of the excess in robust spreads."""
    orig_fit = P._fit_numeric
    def fit_numeric(values, name, missing):
        spec = orig_fit(values, name, missing)
        numbers = P._bounded(P.parse_numeric(values, name, "t")[~missing])
        kx, kz = _quantile_knots(numbers, _N_KNOTS)
        spec["qx"], spec["qz"], spec["tail"] = kx.tolist(), kz.tolist(), spec["spread"]
        z = _quantile_map(numbers, spec)
        std = float(z.std())
        spec["mean"], spec["std"] = float(z.mean()), std if std > 1e-6 else 1.0
        return spec
    def encode_numeric(values, spec, source, first_row=0):
        numbers = P._bounded(P.parse_numeric(values, spec["name"], source, first_row))
        was_missing = np.isnan(numbers)
        counts = {"missing": int(was_missing.sum()), "outside_range": 0}
        numbers = np.where(was_missing, spec["median"], numbers)
        scaled = (_quantile_map(numbers, spec) - spec["mean"]) / spec["std"]
        return scaled.astype(np.float32), was_missing.astype(np.float32), counts
    P._fit_numeric, P._encode_numeric = fit_numeric, encode_numeric
    return {}

@variant
def sample():
    """Marker: also report sample_data's ROC-AUC (fit train.csv, score new.csv, seed 0)."""
    return {"_sample": True}

def sample_auc(opts):
    import pandas as pd
    root = Path(__file__).resolve().parents[2] / "sample_data"
    tr, new = pd.read_csv(root / "train.csv"), pd.read_csv(root / "new.csv")
    det = VAEAnomalyDetector(seed=0, exclude=["transaction_id"], **opts).fit(tr)
    s = det.score(new.drop(columns="label"))["anomaly_score"]
    if JAC:
        s = s + jacobian_penalty(det, new)
    return roc_auc_score(new["label"], s)

def _density_knots(numbers):
    """A coarse equal-mass histogram of the column: unique edges and each segment's
    log density (mid-rank masses, so tied values share their mass)."""
    x = np.sort(numbers)
    n = len(x)
    m = int(np.clip(np.sqrt(n), 4, 64))
    edges = np.unique(np.quantile(x, np.linspace(0, 1, m + 1)))
    cdf = (np.searchsorted(x, edges, side="left") + np.searchsorted(x, edges, side="right")) / (2.0 * n)
    if len(edges) < 2:
        return edges, np.zeros(0)
    mass = np.maximum(np.diff(cdf), 0.5 / n)
    return edges, np.log(mass / np.diff(edges))

def marginal_log_density(numbers, spec):
    edges, logd = np.asarray(spec["dx"]), np.asarray(spec["dlog"])
    if len(logd) == 0:
        return np.zeros_like(numbers)
    k = np.clip(np.searchsorted(edges, numbers, side="right") - 1, 0, len(logd) - 1)
    inside = logd[k]
    # exactly on an inner edge (tied values): the mean of both sides' densities
    at = np.isin(numbers, edges[1:-1])
    left = logd[np.clip(k - 1, 0, len(logd) - 1)]
    inside = np.where(at, np.logaddexp(inside, left) - np.log(2), inside)
    with np.errstate(over="ignore", invalid="ignore"):
        u = np.clip(np.maximum(numbers - edges[-1], edges[0] - numbers), 0, 1e15) / spec["tail"]
    return inside - 0.5 * np.log1p(u * u)

JAC = {}
@variant
def jacobian():
    """With quantile: score += sum over numeric cells of log phi(z) - log p_marginal(x),
    so the score estimates -log p(x) in the data's own units (marginals times copula)."""
    orig_fit = P._fit_numeric
    def fit_numeric(values, name, missing):
        spec = orig_fit(values, name, missing)
        numbers = P._bounded(P.parse_numeric(values, name, "t")[~missing])
        ex, lg = _density_knots(numbers)
        spec["dx"], spec["dlog"] = ex.tolist(), lg.tolist()
        return spec
    P._fit_numeric = fit_numeric
    JAC["on"] = True
    return {}

def jacobian_penalty(det, frame):
    from scipy.stats import norm
    pen = np.zeros(len(frame))
    for spec in det.preprocessor_.columns:
        if spec["kind"] != P.NUMERIC:
            continue
        numbers = np.asarray(frame[spec["name"]], dtype=np.float64)
        ok = ~np.isnan(numbers)
        x = numbers[ok]
        if "fine" in JAC:
            pen[ok] -= log_slope(x, spec)
            continue
        z = _quantile_map(x, spec)
        pen[ok] += norm.logpdf(z) - marginal_log_density(x, spec)
    return pen

def log_slope(numbers, spec):
    """log T'(x) of _quantile_map: the segment's slope inside the training range (at a
    knot, the mean of both sides), the asinh tail's outside it."""
    kx, kz = np.asarray(spec["qx"]), np.asarray(spec["qz"])
    tail = spec["tail"]
    slopes = np.concatenate([[1.0 / tail], np.diff(kz) / np.diff(kx), [1.0 / tail]])
    right = np.searchsorted(kx, numbers, side="right")   # segment index into slopes
    left = np.searchsorted(kx, numbers, side="left")
    on_knot = right != left
    slope = np.where(on_knot, 0.5 * (slopes[left] + slopes[right]), slopes[right])
    with np.errstate(over="ignore", invalid="ignore"):
        u = np.clip(np.maximum(numbers - kx[-1], kx[0] - numbers), 0, 1e15) / tail
    outside = (numbers > kx[-1]) | (numbers < kx[0])
    return np.where(outside, -np.log(tail) - 0.5 * np.log1p(u * u), np.log(slope))

@variant
def jacfine():
    """With quantile: score -= sum over numeric cells of log T'(x) (the map's own slope)."""
    JAC["fine"] = True
    return {}

@variant
def knots100():
    global _N_KNOTS
    _N_KNOTS = 100
    return {}
_N_KNOTS = 1000
def _set_knots(k):
    global _N_KNOTS
    _N_KNOTS = k
    return {}
for _k in (20, 30, 50, 200):
    VARIANTS[f"knots{_k}"] = (lambda k: (lambda: _set_knots(k)))(_k)

def _adamw(decay):
    """Adam with decoupled weight decay ``decay`` (AdamW) instead of plain Adam."""
    import vae_anomaly.training as T
    def training_step(model, config, batch_size, device):
        optimiser = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=decay)
        return T.TrainingStep(model, optimiser, config, device)
    T.training_step = training_step
    return {}
for _d in ("1e-4", "1e-3", "1e-2", "1e-1"):
    VARIANTS[f"wd{_d}"] = (lambda d: (lambda: _adamw(float(d))))(_d)

def _patience(n):
    import dataclasses
    orig = VAEAnomalyDetector._training_config
    VAEAnomalyDetector._training_config = lambda self: dataclasses.replace(orig(self), patience=n)
    return {}
for _p in (5, 30, 60):
    VARIANTS[f"patience{_p}"] = (lambda n: (lambda: _patience(n)))(_p)

def _max_epochs(n):
    """Raise the epoch bound, so that small files train for up to the step budget."""
    import vae_anomaly.training as T
    T._MAX_EPOCHS = n
    return {}
for _e in (600, 1000, 3000):
    VARIANTS[f"maxep{_e}"] = (lambda n: (lambda: _max_epochs(n)))(_e)

@variant
def wide2x(): patch_config(hidden_dims=lambda c: [2 * w for w in c.hidden_dims]); return {}
@variant
def deep3(): patch_config(hidden_dims=lambda c: [c.hidden_dims[0], c.hidden_dims[0], c.hidden_dims[1]]); return {}
def _dropout(rate, where="both"):
    """nn.Dropout(rate) after every hidden activation of the encoder and/or decoder."""
    from torch import nn
    orig_init = M.TabularVAE.__init__
    def init(self, config):
        orig_init(self, config)
        parts = {"both": ("encoder", "decoder"), "enc": ("encoder",)}[where]
        for part in parts:
            layers = []
            for layer in getattr(self, part):
                layers.append(layer)
                if isinstance(layer, nn.SiLU):
                    layers.append(nn.Dropout(rate))
            setattr(self, part, nn.Sequential(*layers))
    M.TabularVAE.__init__ = init
    return {}
for _r in ("0.1", "0.2"):
    VARIANTS[f"drop{_r}"] = (lambda r: (lambda: _dropout(float(r))))(_r)
    VARIANTS[f"dropenc{_r}"] = (lambda r: (lambda: _dropout(float(r), "enc")))(_r)

@variant
def samples64(): return {"samples": 64}

def _iwae_training(k):
    """Train on the importance-weighted bound with k draws a row (Burda et al. 2016):
    loss = -log mean_k w_k, log w_k = log p(x|z_k) + beta * (log p(z_k) - log q(z_k|x))."""
    import math
    import vae_anomaly.training as T
    def run(self, data, index, eps):
        batch = data.rows(index)
        model = self.model
        mu, logvar = model.encode(model.inputs(batch.numeric, batch.indicators, batch.codes))
        draws = torch.randn(k, *mu.shape, dtype=mu.dtype, device=mu.device)
        z = M.reparameterize(mu, logvar, draws)
        nll = M.reconstruction_nll(model.decode(z), batch.numeric, batch.indicators, batch.codes,
                                   model.config.category_sizes).total()
        log_q_minus_p = (-0.5 * draws.pow(2) - 0.5 * logvar + 0.5 * z.pow(2)).sum(-1)
        log_w = -nll - self.beta * log_q_minus_p
        loss = -(torch.logsumexp(log_w, 0) - math.log(k)).mean()
        reconstruction, kl = nll.mean(), M.gaussian_kl(mu, logvar).mean()
        self.optimiser.zero_grad(set_to_none=False)
        loss.backward()
        self.clip_gradients()
        self.optimiser.step()
        self.totals += torch.stack([loss.detach(), reconstruction.detach(), kl.detach()]) * len(index)
    T.TrainingStep.run = run
    return {}
for _k in (4, 8):
    VARIANTS[f"iwtrain{_k}"] = (lambda k: (lambda: _iwae_training(k)))(_k)

@variant
def iwscore(): return {"score_kind": "iwae"}

REFIT = {}
@variant
def refit():
    """Fit as usual, then fit again on every training row (no rows held out) for the
    first fit's best epoch count, under the same learning-rate schedule, and score with
    the second network."""
    import math
    import vae_anomaly.training as T
    def run_epochs(step, train_data, val_data, config, epochs, batch_size, generator, callbacks):
        if "stop" not in REFIT:
            return orig_run_epochs(step, train_data, val_data, config, epochs, batch_size,
                                   generator, callbacks)
        schedule = T.HoldThenCosine(step.optimiser,
                                    config.resolved_learning_rate(batch_size, len(train_data)),
                                    epochs * math.ceil(len(train_data) / batch_size))
        warmup = config.resolved_warmup(epochs)
        for epoch in range(1, REFIT["stop"] + 1):
            beta = config.beta * min(1.0, epoch / warmup)
            T._train_epoch(step, schedule, train_data, batch_size, beta, generator, epoch)
        return [], REFIT["stop"], None
    orig_run_epochs = T._run_epochs
    T._run_epochs = run_epochs
    return {"_refit": True}

for _lr in ("3e-4", "3e-3"):
    VARIANTS[f"lr{_lr}"] = (lambda lr: (lambda: {"learning_rate": float(lr)}))(_lr)
for _bs in (32, 128):
    VARIANTS[f"batch{_bs}"] = (lambda bs: (lambda: {"batch_size": bs}))(_bs)

def _heldout_variance():
    """After each fit, set every numeric column's decoder variance to the mean squared
    error of its reconstructions on the held-out rows (16 draws), bounded as usual:
    the variance the network learned on its own training rows is too small where it
    has memorised them."""
    orig = VAEAnomalyDetector._fit_on
    def fit_on(self, frame, train_index, val_index, seed, device, callbacks, source):
        pre, model, result, val_scores = orig(self, frame, train_index, val_index, seed,
                                              device, callbacks, source)
        enc = pre.transform(frame, source=source)
        num, ind, codes = (torch.from_numpy(a[val_index]) for a in
                           (enc.numeric, enc.indicators, enc.categories))
        cfg = model.config
        with torch.no_grad():
            mu, lv = model.encode(model.inputs(num, ind, codes))
            eps = torch.randn(16, *mu.shape, generator=torch.Generator().manual_seed(seed))
            out = model.decode(M.reparameterize(mu, lv, eps))
            mse = (num - out.numeric_mean).pow(2).mean((0, 1))
            span = cfg.max_decoder_logvar - cfg.min_decoder_logvar
            frac = ((mse.clamp_min(1e-12).log() - cfg.min_decoder_logvar) / span).clamp(1e-4, 1 - 1e-4)
            model.column_logvar.copy_(torch.logit(frac))
        return pre, model, result, val_scores
    VAEAnomalyDetector._fit_on = fit_on
    return {}
VARIANTS["heldoutvar"] = _heldout_variance
def _input_noise(sd):
    """Denoising: Gaussian noise of sd `sd` on the encoder's numeric inputs while
    training (the reconstruction targets stay clean)."""
    orig = M.TabularVAE.inputs
    def inputs(self, numeric, indicators, codes):
        if torch.is_grad_enabled():
            numeric = numeric + sd * torch.randn_like(numeric)
        return orig(self, numeric, indicators, codes)
    M.TabularVAE.inputs = inputs
    return {}
for _sd in ("0.1", "0.3"):
    VARIANTS[f"noise{_sd}"] = (lambda sd: (lambda: _input_noise(float(sd))))(_sd)

_PRIOR_OWNER = {}
def _mixture_prior(components):
    """A learned prior: a mixture of `components` diagonal Gaussians (means, log-variances
    and weights trained with the network), in place of N(0, I). The KL term, in training
    and in the score, is the closed-form upper bound
    KL(q || sum_c w_c p_c) <= -log sum_c w_c exp(-KL(q || p_c)), so the score stays a
    negative ELBO (a bound on it); with one fixed N(0, I) component it is the product's."""
    import vae_anomaly.scoring as S
    from torch import nn
    orig_init, orig_encode = M.TabularVAE.__init__, M.TabularVAE.encode
    def init(self, config):
        orig_init(self, config)
        g = torch.Generator().manual_seed(7)
        self.prior_mu = nn.Parameter(torch.randn(components, config.latent_dim, generator=g))
        self.prior_logvar = nn.Parameter(torch.zeros(components, config.latent_dim))
        self.prior_logit = nn.Parameter(torch.zeros(components))
    def encode(self, x):
        _PRIOR_OWNER["model"] = self  # the KL below needs the prior of the model at hand
        return orig_encode(self, x)
    def mixture_kl(mu, logvar):
        m = _PRIOR_OWNER["model"]
        prior_logvar = m.prior_logvar.clamp(-6.0, 4.0)
        mu_, lv = mu.unsqueeze(-2), logvar.unsqueeze(-2)
        per_component = 0.5 * (prior_logvar - lv - 1.0 + (lv.exp() + (mu_ - m.prior_mu).pow(2))
                               * torch.exp(-prior_logvar)).sum(-1)
        return -torch.logsumexp(torch.log_softmax(m.prior_logit, 0) - per_component, -1)
    M.TabularVAE.__init__, M.TabularVAE.encode = init, encode
    M.gaussian_kl = S.gaussian_kl = mixture_kl
    return {}
for _c in (4, 16, 64):
    VARIANTS[f"mog{_c}"] = (lambda c: (lambda: _mixture_prior(c)))(_c)

MEMBER = [0]  # the ensemble member being fitted (run_one sets it)
@variant
def mixlat():
    """Mean score of 2 VAEs: member 0 of the default latent size, member 1 of twice it."""
    patch_config(latent_dim=lambda c: min(64, (1, 2)[MEMBER[0]] * c.latent_dim))
    return {"_ensemble": 2}

def run_one(data, seed, opts):
    n = opts.pop("_ensemble", 1)
    refit_all = opts.pop("_refit", False)
    if opts.pop("_spike", False):
        data = spike_frames(data)
    scores = []
    for i in range(n):
        MEMBER[0] = i
        # ROC-AUC does not depend on the threshold, so the calibration fits are skipped.
        det = VAEAnomalyDetector(seed=seed * 100 + i, **{"calibration_fits": 0, **opts}
                                 ).fit(data.train_typed)
        if refit_all:
            REFIT["stop"] = det.summary_.best_epoch
            split = VAEAnomalyDetector._split
            VAEAnomalyDetector._split = lambda self, n: (np.arange(n), np.arange(min(n, 10)))
            try:
                det = VAEAnomalyDetector(seed=seed * 100 + i, **{"calibration_fits": 0, **opts}
                                         ).fit(data.train_typed)
            finally:
                VAEAnomalyDetector._split = split
                REFIT.pop("stop")
        s = det.score(data.test_typed)["anomaly_score"].to_numpy()
        if JAC:
            s = s + jacobian_penalty(det, data.test_typed)
        scores.append(s)
    return np.mean(scores, axis=0) if n > 1 else scores[0]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir", type=Path, help="folder of NAME.csv.gz files with a label column")
    ap.add_argument("variant")
    ap.add_argument("--datasets", nargs="+", default=["breastw","cardio","glass","ionosphere","pima","vowels","satellite","spambase"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0,1,2])
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    opts = {}
    for v in a.variant.split('+'):
        opts.update(VARIANTS[v]())
    out = {}
    t0 = time.time()
    if opts.pop("_sample", False):
        print(f"{a.variant} sample_data {sample_auc(dict(opts)):.4f}", flush=True)
    for name in a.datasets:
        raw, typed = Q.load_dataset(a.data_dir / f"{name}.csv.gz")
        aucs = []
        for seed in a.seeds:
            data = Q.split(raw, typed, seed)
            s = run_one(data, seed, dict(opts))
            aucs.append(roc_auc_score(data.y_test, s))
        out[name] = float(np.mean(aucs))
        print(f"{a.variant} {name} {out[name]:.3f} {[round(x,3) for x in aucs]} t={time.time()-t0:.0f}", flush=True)
    print(f"{a.variant} MEAN {np.mean(list(out.values())):.4f}", flush=True)
    Path(f"/tmp/{a.variant}.json").write_text(json.dumps(out))
if __name__ == "__main__":
    main()
