"""Other scores from the same fitted VAE, on bench/quality.py's splits (not the product):
    python bench/experiments/latent_scores.py DATA_DIR [--datasets ...] [--seeds ...]
        [--exemplars M ...] [--bandwidths B ...] [--threads N] [--out JSON]

For each dataset and seed, one default fit (no calibration fits: ROC-AUC does not
depend on the threshold), then the test rows' ROC-AUC of:
  elbo          the product's score: reconstruction NLL (+ the map's offset) + KL to N(0, I), K = 16
  elbo_w0.5     the same with half the KL
  recon         the reconstruction term alone
  exBwWmM       the reconstruction term + W x a Monte Carlo KL (the same K draws) to the
                aggregate posterior of M training rows: the mixture of their q(z|x), each
                component's variance widened by B (an "exemplar prior", at scoring time only)
  hovBmM        the same mixture, its KL in the closed-form variational approximation of
                Hershey & Olsen (2007), -log mean_m exp(-KL(q || g_m)): no draws
  knn_latent    mean distance from the posterior mean to its 5 nearest training means
Results are in docs/benchmarks.md ("Tried and dropped").
"""
import argparse, json, math, sys, time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import quality as Q  # noqa: E402
from vae_anomaly import VAEAnomalyDetector  # noqa: E402
from vae_anomaly.model import gaussian_kl, reconstruction_nll, reparameterize  # noqa: E402
from vae_anomaly.scoring import row_normals  # noqa: E402

SAMPLES = 16
EXEMPLARS = [1024, 4096]  # M: the first M training rows of a fixed shuffle (--exemplars)
BANDWIDTHS = [0.01, 0.03, 0.1]  # variance added to each exemplar's posterior variance
WEIGHTS = (1.0,)


def log_normal(z, mu, logvar):
    """Diagonal normal log density, summed over the last dim, broadcasting."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


def log_mixture(z, mus, logvars, chunk=256):
    """log (1/M) sum_m N(z; mu_m, sigma_m^2) for z of shape (..., d)."""
    flat = z.reshape(-1, z.shape[-1])
    out = []
    for start in range(0, len(flat), chunk):
        part = flat[start:start + chunk, None, :]
        out.append(torch.logsumexp(log_normal(part, mus[None], logvars[None]), -1))
    return (torch.cat(out) - math.log(len(mus))).reshape(z.shape[:-1])


def kl_to_mixture(mu, logvar, mus, logvars, chunk=512):
    """Closed-form approximation of KL(q || (1/M) sum_m g_m) for diagonal normals
    (Hershey & Olsen 2007, the variational one): -log (1/M) sum_m exp(-KL(q || g_m))."""
    out = []
    for start in range(0, len(mu), chunk):
        m, lv = mu[start:start + chunk, None, :], logvar[start:start + chunk, None, :]
        kl = 0.5 * (logvars[None] - lv + (lv.exp() + (m - mus[None]).pow(2))
                    * torch.exp(-logvars[None]) - 1).sum(-1)
        out.append(-(torch.logsumexp(-kl, -1) - math.log(len(mus))))
    return torch.cat(out)


@torch.no_grad()
def posterior(det, frame):
    enc = det.preprocessor_.transform(frame)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    numeric, indicators, codes = t(enc.numeric), t(enc.indicators), t(enc.categories)
    mu, logvar = det.model_.encode(det.model_.inputs(numeric, indicators, codes))
    return enc, numeric, indicators, codes, mu, logvar


@torch.no_grad()
def scores(det, train_frame, train_rows, test_frame):
    model = det.model_.cpu().eval()
    _, _, _, _, mu_tr, lv_tr = posterior(det, train_frame.iloc[train_rows])
    order = np.random.default_rng(0).permutation(len(mu_tr))
    enc, numeric, indicators, codes, mu, logvar = posterior(det, test_frame)
    eps = row_normals(det.seed, np.arange(len(mu)), SAMPLES, mu.shape[1])
    z = reparameterize(mu, logvar, eps)
    recon = reconstruction_nll(model.decode(z), numeric, indicators, codes,
                               model.config.category_sizes).total().double().mean(0)
    recon = recon.numpy() + enc.nll_offset.sum(-1)
    log_q = log_normal(z, mu, logvar)
    kl_std = gaussian_kl(mu, logvar).double().numpy()  # closed form, as the product
    out = {"elbo": recon + kl_std, "elbo_w0.5": recon + 0.5 * kl_std, "recon": recon}
    for bandwidth in BANDWIDTHS:
        for m in EXEMPLARS:
            keep = torch.from_numpy(order[:m])
            mus, lvs = mu_tr[keep], lv_tr[keep]
            if bandwidth:
                lvs = torch.logaddexp(lvs, torch.full_like(lvs, math.log(bandwidth)))
            kl_agg = (log_q - log_mixture(z, mus, lvs)).double().mean(0).numpy()
            for weight in WEIGHTS:
                out[f"ex{bandwidth}w{weight}m{m}"] = recon + weight * kl_agg
            out[f"hov{bandwidth}m{m}"] = recon + kl_to_mixture(mu, logvar, mus, lvs).double().numpy()
    dist = torch.cdist(mu, mu_tr)
    out["knn_latent"] = dist.topk(5, largest=False).values.mean(-1).double().numpy()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--datasets", nargs="+", default=["breastw", "cardio", "glass", "ionosphere",
                                                     "pima", "vowels", "satellite", "spambase"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/latent_scores.json"))
    ap.add_argument("--exemplars", nargs="+", type=int, default=EXEMPLARS)
    ap.add_argument("--bandwidths", nargs="+", type=float, default=BANDWIDTHS)
    a = ap.parse_args()
    EXEMPLARS[:], BANDWIDTHS[:] = a.exemplars, a.bandwidths
    torch.set_num_threads(a.threads)
    results, t0 = {}, time.time()
    for name in a.datasets:
        raw, typed = Q.load_dataset(a.data_dir / f"{name}.csv.gz")
        per_seed = []
        for seed in a.seeds:
            data = Q.split(raw, typed, seed)
            det = VAEAnomalyDetector(seed=seed * 100, calibration_fits=0).fit(data.train_typed)
            train_rows, _ = det._split(len(data.train_typed))
            s = scores(det, data.train_typed, train_rows, data.test_typed)
            per_seed.append({k: roc_auc_score(data.y_test, v) for k, v in s.items()})
        results[name] = {k: float(np.mean([p[k] for p in per_seed])) for k in per_seed[0]}
        print(name, " ".join(f"{k} {v:.3f}" for k, v in results[name].items()),
              f"t={time.time() - t0:.0f}", flush=True)
    kinds = next(iter(results.values())).keys()
    print("MEAN", " ".join(f"{k} {np.mean([r[k] for r in results.values()]):.4f}" for k in kinds))
    a.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
