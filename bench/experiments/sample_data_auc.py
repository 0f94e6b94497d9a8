"""ROC-AUC on sample_data/new.csv after fitting sample_data/train.csv (seed 0):
    python bench/experiments/sample_data_auc.py FLOOR COMPRESS_SCALE winsor|iqr
Written for the experiments of docs/benchmarks.md; COMPRESS_SCALE needs the
scaled-asinh patch of that session and is ignored by today's preprocessing."""
import sys, numpy as np, pandas as pd
from pathlib import Path
from sklearn.metrics import roc_auc_score
import vae_anomaly.model as M, vae_anomaly.preprocessing as P
from vae_anomaly.detector import VAEAnomalyDetector
floor, scale, spread = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
P.COMPRESS_SCALE = scale
if spread == "iqr":
    def sp(x):
        q25, q75 = np.percentile(x, [25, 75]); s = (q75 - q25) / 1.349
        return s if s > 0 else max(float(np.std(x)), 1e-3)
    P._spread = sp
orig = M.VAEConfig.sized_for.__func__
def sized_for(cls, *a, **k):
    c = orig(cls, *a, **k); c.min_decoder_logvar = floor; return c
M.VAEConfig.sized_for = classmethod(sized_for)
SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
tr = pd.read_csv(SAMPLE / "train.csv"); new = pd.read_csv(SAMPLE / "new.csv")
for seed in (0,):
    d = VAEAnomalyDetector(seed=seed, exclude=["transaction_id"]).fit(tr)
    s = d.score(new.drop(columns="label"))["anomaly_score"]
    print(sys.argv[1:], seed, round(roc_auc_score(new["label"], s), 4), flush=True)
