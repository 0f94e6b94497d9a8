"""Quality experiments (monkeypatched variants of the defaults on bench/quality.py's splits):
    python bench/experiments/quality_variants.py DATA_DIR VARIANT[+VARIANT...] [--datasets ...]
Not part of the product; results are in docs/benchmarks.md."""
import argparse, json, sys, time
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import quality as Q
from sklearn.metrics import roc_auc_score
import vae_anomaly.preprocessing as P
import vae_anomaly.model as M
from vae_anomaly.detector import VAEAnomalyDetector

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
@variant
def beta025(): return {"beta": 0.25}
@variant
def latent2x(): patch_config(latent_dim=lambda c: min(64, 2 * c.latent_dim)); return {}
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

def run_one(data, seed, opts):
    n = opts.pop("_ensemble", 1)
    if opts.pop("_spike", False):
        data = spike_frames(data)
    scores = []
    for i in range(n):
        det = VAEAnomalyDetector(seed=seed * 100 + i, **opts).fit(data.train_typed)
        s = det.score(data.test_typed)["anomaly_score"].to_numpy()
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
