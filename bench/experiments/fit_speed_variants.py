"""Fit-length experiments for issue 20 (not part of the product):
    python bench/experiments/fit_speed_variants.py DATA_DIR OUT.jsonl VARIANT... [--datasets ...] [--seeds 0]
Each VARIANT is NAME or NAME:key=value,key=value with detector options (epochs,
batch_size, learning_rate, calibration_fits) and patches (threads=N; any other
key=value sets vae_anomaly.training._<KEY> = value, upper-cased). Variants run
interleaved per dataset and seed, so their fit seconds compare side by side.
`sample_data` as a dataset name means sample_data/train.csv, scored on new.csv.
"""
import argparse, json, sys, time
from pathlib import Path
import numpy as np, pandas as pd, torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import quality as Q
from sklearn.metrics import roc_auc_score
import vae_anomaly.training as T
from vae_anomaly.detector import VAEAnomalyDetector

DETECTOR_KEYS = {"epochs": int, "batch_size": int, "learning_rate": float, "calibration_fits": int}
SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


def parse(spec):
    name, _, rest = spec.partition(":")
    options, patches, threads = {}, {}, None
    for item in filter(None, rest.split(",")):
        key, value = item.split("=")
        if key in DETECTOR_KEYS:
            options[key] = DETECTOR_KEYS[key](value)
        elif key == "threads":
            threads = int(value)
        else:
            constant = "_" + key.upper()
            if not hasattr(T, constant):
                raise SystemExit(f"vae_anomaly.training has no {constant}")
            patches[constant] = type(getattr(T, constant))(float(value))
    return name, options, patches, threads


def data_for(name, data_dir, seed):
    if name == "sample_data":
        new = pd.read_csv(SAMPLE / "new.csv")
        return (pd.read_csv(SAMPLE / "train.csv"), new.drop(columns="label"),
                new["label"].to_numpy())
    raw, typed = Q.load_dataset(data_dir / f"{name}.csv.gz")
    s = Q.split(raw, typed, seed)
    return s.train_typed, s.test_typed, s.y_test


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data_dir", type=Path); p.add_argument("out", type=Path)
    p.add_argument("variants", nargs="+"); p.add_argument("--datasets", nargs="+", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    a = p.parse_args()
    variants = [parse(v) for v in a.variants]
    for seed in a.seeds:
        for ds in a.datasets:
            train, test, y = data_for(ds, a.data_dir, seed)
            for name, options, patches, threads in variants:
                saved = {k: getattr(T, k) for k in patches}
                for k, v in patches.items():
                    setattr(T, k, v)
                before = torch.get_num_threads()
                if threads:
                    torch.set_num_threads(threads)
                try:
                    started = time.perf_counter()
                    d = VAEAnomalyDetector(seed=seed, **options).fit(train)
                    fit_s = time.perf_counter() - started
                finally:
                    torch.set_num_threads(before)
                    for k, v in saved.items():
                        setattr(T, k, v)
                out = d.score(test)
                flags = out["is_anomaly"].to_numpy()
                h = d.summary_.history
                row = dict(dataset=ds, seed=seed, variant=name, fit_s=round(fit_s, 2),
                           roc_auc=round(float(roc_auc_score(y, out["anomaly_score"])), 4),
                           fpr=round(float(flags[y == 0].mean()), 4),
                           epochs=d.summary_.epochs_run, best=d.summary_.best_epoch,
                           val=round(min(e["val_loss"] for e in h), 4), fits=d.summary_.calibration_fits)
                print(json.dumps(row), flush=True)
                with a.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
