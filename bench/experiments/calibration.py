"""Threshold experiments on bench/quality.py's splits. Not part of the product;
results are in docs/benchmarks.md ("Tried and dropped").

    python bench/experiments/calibration.py collect DATA_DIR NAME[,NAME...] OUT_DIR
        fit each set's seeds 0-2 with the current defaults (1 thread) and save the
        held-out (calibration) scores, the test normals' scores and the training
        rows' scores to OUT_DIR/NAME_SEED.npz; prints the test FPR at the threshold.
    python bench/experiments/calibration.py estimators OUT_DIR
        compare threshold estimators on those scores: the test FPR of each seed, and
        a resampling check (pool held-out and test normals, draw as many held-out
        rows as the fit had, 150 times a seed) of how often the mean of 3 seeds'
        FPRs lands in [0.5%, 2%].
"""
import glob, math, sys
from pathlib import Path

import numpy as np, torch
from scipy.stats import genpareto
from scipy.stats.mstats import hdquantiles

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
FPR = 0.01


def collect(data_dir: Path, names: str, out: Path) -> None:
    import quality as Q
    from vae_anomaly import VAEAnomalyDetector
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    for name in names.split(","):
        raw, typed = Q.load_dataset(data_dir / f"{name}.csv.gz")
        for seed in (0, 1, 2):
            d = Q.split(raw, typed, seed)
            train = d.train_typed.reset_index(drop=True)
            det = VAEAnomalyDetector(seed=seed).fit(train)
            test = det.score(d.test_typed)["anomaly_score"].to_numpy()
            _, val_index = det._split(len(train))
            train_scores = np.delete(det.score(train)["anomaly_score"].to_numpy(), val_index)
            np.savez(out / f"{name}_{seed}.npz", val=det.validation_scores_,
                     test=test[d.y_test == 0], train=train_scores)
            print(name, seed, len(det.validation_scores_),
                  f"{np.mean(test[d.y_test == 0] > det.threshold_):.4f}", flush=True)


def order_statistic(v):
    v = np.sort(v)
    return v[min(math.ceil((len(v) + 1) * (1 - FPR)), len(v)) - 1]


def exponential_tail(share):
    """u = the (1 - share) quantile; above it an exponential with the mean excess."""
    def threshold(v):
        v = np.sort(v); k = max(5, round(share * len(v))); u = v[-k - 1]
        return u + (v[-k:] - u).mean() * math.log((k / len(v)) / FPR)
    return threshold


def pareto_tail(share):
    """Generalised Pareto fitted to the excesses over the (1 - share) quantile."""
    def threshold(v):
        v = np.sort(v); k = max(5, round(share * len(v))); u = v[-k - 1]
        c, _, scale = genpareto.fit(v[-k:] - u, floc=0)
        c, q = min(max(c, -0.5), 0.5), (k / len(v)) / FPR
        return u + (scale / c * (q ** c - 1) if abs(c) > 1e-6 else scale * math.log(q))
    return threshold


ESTIMATORS = {"order statistic (product)": order_statistic,
              "exponential tail, top 10%": exponential_tail(0.10),
              "exponential tail, top 20%": exponential_tail(0.20),
              "Pareto tail, top 20%": pareto_tail(0.20),
              "Harrell-Davis": lambda v: float(hdquantiles(v, prob=[1 - FPR])[0])}


def estimators(folder: Path) -> None:
    rng = np.random.default_rng(0)
    names = sorted({p.stem.rsplit("_", 1)[0] for p in folder.glob("*_*.npz")})
    for name in names:
        runs = [np.load(p) for p in sorted(folder.glob(f"{name}_*.npz"))]
        train_fpr = [np.mean(r["test"] > order_statistic(r["train"])) for r in runs]
        print(f"{name}: threshold from training rows' scores, FPR per seed "
              + " ".join(f"{100 * f:.2f}%" for f in train_fpr))
        for label, threshold in ESTIMATORS.items():
            direct = [np.mean(r["test"] > threshold(r["val"])) for r in runs]
            draws = []
            for r in runs:
                pool, n = np.concatenate([r["val"], r["test"]]), len(r["val"])
                for _ in range(150):
                    order = rng.permutation(len(pool))
                    draws.append(np.mean(pool[order[n:]] > threshold(pool[order[:n]])))
            draws = np.array(draws)
            means = draws[:len(draws) // 3 * 3].reshape(-1, 3).mean(axis=1)
            in_band = np.mean((means >= 0.005) & (means <= 0.02))
            print(f"  {label:28s} seeds {' '.join(f'{100 * f:.2f}%' for f in direct)}; "
                  f"resampled {100 * draws.mean():.2f}% ± {100 * draws.std():.2f}, "
                  f"mean of 3 in band {in_band:.2f}")


if __name__ == "__main__":
    if sys.argv[1] == "collect":
        collect(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
    else:
        estimators(Path(sys.argv[2]))
