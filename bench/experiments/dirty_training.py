"""Robust training on dirty training files: the experiments behind docs/method.md,
"Dirty training files", and the robust-training rows of docs/benchmarks.md, "Tried
and dropped". Splits are bench/quality.py's (clean, or dirty with 5% planted).

    # ROC-AUC, test FPR and the training rows flagged, per --contamination setting
    # and auto cut (robust standard deviations):
    python bench/experiments/dirty_training.py fits DATA_DIR --sets cardio pendigits \\
        --settings 0 auto 0.05 --auto-cuts 20 12 8
    # Do planted anomalies stand out in the per-row training loss? (no rejection)
    python bench/experiments/dirty_training.py tails DATA_DIR --sets cardio pendigits
    # auto, and auto after an early hold: for 30 epochs the top 10% of losses out, or
    # those beyond 3.5 robust sd
    python bench/experiments/dirty_training.py holds DATA_DIR --holds 0.1:30 3.5sd:30
    # the training rows IsolationForest scores past 0.55 left out of the fit
    python bench/experiments/dirty_training.py isolation DATA_DIR --isolation-cuts 0.55

`fits` takes 5-40 s a fit on 2 cores; `tails` one fit per set and protocol; `holds`
and `isolation` (no calibration fits: ROC-AUC only) 0.2-8 s a fit.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import quality  # noqa: E402  (bench/quality.py: the splits)

from vae_anomaly import VAEAnomalyDetector, rejection, training  # noqa: E402
from vae_anomaly.data import read_table  # noqa: E402

DEFAULT_SETS = ["cardio", "vowels", "pendigits", "mammography", "satellite"]


def splits(data_dir: Path, sets: list[str], seeds: list[int]):
    """(set, seed, protocol, training table, test table, labels, planted, the split)
    for each."""
    folder = Path(tempfile.mkdtemp())
    for name in sets:
        raw, typed = quality.load_dataset(data_dir / f"{name}.csv.gz")
        for seed in seeds:
            for protocol, share in (("dirty", 0.05), ("clean", None)):
                data = quality.split(raw, typed, seed, share)
                data.train.to_csv(folder / "train.csv", index=False)
                data.test.to_csv(folder / "test.csv", index=False)
                planted = (data.planted if data.planted is not None
                           else np.zeros(len(data.train), dtype=int))
                yield (name, seed, protocol, read_table(folder / "train.csv"),
                       read_table(folder / "test.csv").drop_columns(["label"]),
                       data.y_test, planted, data)


def fits(args: argparse.Namespace) -> None:
    print("| set | seed | protocol | setting | auto cut | ROC-AUC | FPR | flagged | precision "
          "| recall | fit s |\n|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, seed, protocol, train, test, y, planted, _ in splits(args.data_dir, args.sets,
                                                                     args.seeds):
        for setting in args.settings:
            for cut in (args.auto_cuts if setting == "auto" else [None]):
                started = time.perf_counter()
                with auto_cut(cut or rejection.AUTO_CUT):
                    detector = VAEAnomalyDetector(seed=seed, contamination=setting).fit(train)
                seconds = time.perf_counter() - started
                scored = detector.score_columns(test, seed=seed)
                rows = detector.training_outliers_.rows
                hits = int(planted[rows].sum())
                precision = f"{hits / len(rows):.2f}" if len(rows) else "–"
                recall = f"{hits / planted.sum():.2f}" if planted.sum() else "–"
                print(f"| {name} | {seed} | {protocol} | {setting} | {cut or ''} | "
                      f"{roc_auc_score(y, scored['anomaly_score']):.4f} | "
                      f"{scored['is_anomaly'][y == 0].mean():.4f} | {len(rows)} | {precision} "
                      f"| {recall} | {seconds:.1f} |", flush=True)


def tails(args: argparse.Namespace) -> None:
    """Per-row training losses, epoch by epoch, of a fit that rejects nothing; at a few
    epochs: how well they rank the planted rows (ROC-AUC), the planted share of the
    highest-loss rows, and the share of rows beyond 3 and 5 robust standard deviations."""
    print("| set | protocol | epoch | planted ROC-AUC | planted share of top | >3 sd | >5 sd |"
          "\n|---|---|---:|---:|---:|---:|---:|")
    for name, seed, protocol, train, _, _, planted, _ in splits(args.data_dir, args.sets,
                                                                args.seeds):
        losses = record_losses(train, seed)
        train_rows, _ = VAEAnomalyDetector(seed=seed)._split(train.num_rows)
        planted = planted[train_rows]
        smoothed = losses[0].copy()
        for epoch, epoch_losses in enumerate(losses, start=1):
            smoothed = smoothed if epoch == 1 else 0.5 * smoothed + 0.5 * epoch_losses
            if epoch not in (1, 3, 10, 30):
                continue
            median = np.median(smoothed)
            z = (smoothed - median) / (1.4826 * np.median(np.abs(smoothed - median)))
            top = np.argsort(-smoothed)[:max(int(planted.sum()), 1)]
            auc = f"{roc_auc_score(planted, smoothed):.2f}" if planted.sum() else "–"
            share = f"{planted[top].mean():.2f}" if planted.sum() else "–"
            print(f"| {name} | {protocol} | {epoch} | {auc} | {share} | {np.mean(z > 3):.3f} "
                  f"| {np.mean(z > 5):.3f} |", flush=True)


def holds(args: argparse.Namespace) -> None:
    """ROC-AUC of `auto`, and of `auto` after an early hold (for its first EPOCHS
    epochs the top SHARE of training losses leaves the gradient, a curriculum: the bulk
    first); per fit, then the mean over seeds per set and protocol."""
    print("| set | seed | protocol | setting | ROC-AUC | training outliers |\n"
          "|---|---:|---|---|---:|---:|")
    results: dict[tuple[str, str, str], list[float]] = {}
    for name, seed, protocol, train, test, y, _, _ in splits(args.data_dir, args.sets,
                                                             args.seeds):
        for hold in ["none", *args.holds]:
            with early_hold(hold):
                detector = VAEAnomalyDetector(seed=seed, calibration_fits=0).fit(train)
            auc = roc_auc_score(y, detector.score_columns(test, seed=seed)["anomaly_score"])
            results.setdefault((protocol, hold, name), []).append(auc)
            print(f"| {name} | {seed} | {protocol} | hold {hold} | {auc:.4f} | "
                  f"{len(detector.training_outliers_.rows)} |", flush=True)
    for protocol in ("dirty", "clean"):
        print(f"\n{protocol}: mean ROC-AUC over seeds\n| set | " +
              " | ".join(f"hold {hold}" for hold in ["none", *args.holds]) + " |")
        for name in [*args.sets, "mean"]:
            means = [np.mean([np.mean(v) for (p, h, n), v in results.items()
                              if p == protocol and h == hold and name in (n, "mean")])
                     for hold in ["none", *args.holds]]
            print(f"| {name} | " + " | ".join(f"{m:.4f}" for m in means) + " |")


@contextlib.contextmanager
def early_hold(hold: str):
    """Within it, for the first EPOCHS epochs `auto` rejects the top SHARE of losses
    ("SHARE:EPOCHS"; "SHARE:EPOCHS:fall", a share falling to 0 over them), or those
    beyond CUT robust sd, at most 20% ("CUTsd:EPOCHS"); then its own rule. "none": as
    shipped."""
    if hold == "none":
        yield
        return
    rule, epochs, *fall = hold.split(":")
    epochs = int(epochs)
    original_cut, original_update = training.loss_cut, training._RowRejection.update
    epoch = 0

    def cut(losses, contamination):
        if epoch > epochs:
            return original_cut(losses, contamination)
        if rule.endswith("sd"):
            return robust_cut(losses, float(rule.removesuffix("sd")))
        share = float(rule) * ((1 - (epoch - 1) / epochs) if fall else 1)
        return original_cut(losses, share)

    def tracked_update(self):
        nonlocal epoch
        epoch += 1  # one fit at a time: the calibration fits are off
        count = original_update(self)
        self.step.weighted = True  # weighted arithmetic from the first epoch, as measured
        return count

    training.loss_cut, training._RowRejection.update = cut, tracked_update
    try:
        yield
    finally:
        training.loss_cut, training._RowRejection.update = original_cut, original_update


def isolation(args: argparse.Namespace) -> None:
    """ROC-AUC of a default fit (no calibration fits) on the training file without the
    rows IsolationForest (default settings, on bench/quality.py's peer features)
    scores past each cut, at most 20% of them (with --isolation-hold, those fits also
    hold their highest losses out early); how many rows it left out, and the planted
    share of them."""
    print("| set | seed | protocol | left out past | ROC-AUC | rows left out | planted share |"
          "\n|---|---:|---|---:|---:|---:|---:|")
    folder = Path(tempfile.mkdtemp())
    for name, seed, protocol, _, test, y, planted, data in splits(args.data_dir, args.sets,
                                                                   args.seeds):
        features, _ = quality.peer_features(data.train_typed, data.test_typed)
        forest = IsolationForest(random_state=seed).fit(features)
        isolation_score = -forest.score_samples(features)  # 0.5: nothing stands out
        for cut in [math.inf, *args.isolation_cuts]:
            keep = isolation_score <= max(cut, np.quantile(isolation_score, 0.8))
            data.train[keep].to_csv(folder / "train.csv", index=False)
            with early_hold(args.isolation_hold if cut < math.inf else "none"):
                detector = VAEAnomalyDetector(seed=seed, calibration_fits=0).fit(
                    read_table(folder / "train.csv"))
            scores = detector.score_columns(test, seed=seed)["anomaly_score"]
            left_out = ~keep
            share_planted = f"{planted[left_out].mean():.2f}" if left_out.any() else "–"
            print(f"| {name} | {seed} | {protocol} | {cut} | "
                  f"{roc_auc_score(y, scores):.4f} | {left_out.sum()} | "
                  f"{share_planted} |", flush=True)


@contextlib.contextmanager
def auto_cut(sds: float):
    """Within it, `auto` cuts at ``sds`` robust standard deviations."""
    original, rejection.AUTO_CUT = rejection.AUTO_CUT, sds
    try:
        yield
    finally:
        rejection.AUTO_CUT = original


def robust_cut(losses: np.ndarray, sds: float) -> float:
    """`auto`'s cut at ``sds`` robust standard deviations (never over 20% of rows)."""
    with auto_cut(sds):
        return rejection.loss_cut(losses, "auto")


def record_losses(train, seed: int) -> np.ndarray:
    """Each epoch's per-row losses of a fit with row tracking on but no row rejected."""
    recorded = []
    original_cut, original_update = training.loss_cut, training._RowRejection.update

    def update(self):
        count = original_update(self)
        recorded.append(self.step.row_loss.cpu().numpy().copy())
        return count

    training.loss_cut = lambda losses, contamination: np.inf
    training._RowRejection.update = update
    try:
        VAEAnomalyDetector(seed=seed, contamination=0.2, calibration_fits=0).fit(train)
    finally:
        training.loss_cut, training._RowRejection.update = original_cut, original_update
    return np.array(recorded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("fits", "tails", "holds", "isolation"))
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR")
    parser.add_argument("--sets", nargs="+", default=DEFAULT_SETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--settings", nargs="+", default=["0", "auto"],
                        help="--contamination values: 0, auto or a share")
    parser.add_argument("--auto-cuts", nargs="+", type=float, default=[rejection.AUTO_CUT],
                        help="robust standard deviations for auto's cut")
    parser.add_argument("--holds", nargs="+", default=["0.1:30"],
                        help="early holds for `holds`: SHARE:EPOCHS[:fall] or CUTsd:EPOCHS")
    parser.add_argument("--isolation-cuts", nargs="+", type=float, default=[0.55],
                        help="IsolationForest scores past which `isolation` leaves rows out")
    parser.add_argument("--isolation-hold", default="none",
                        help="an early hold (as --holds) for `isolation`'s fits past a cut")
    args = parser.parse_args()
    args.settings = [s if s == "auto" else float(s) for s in args.settings]
    {"fits": fits, "tails": tails, "holds": holds,
     "isolation": isolation}[args.command](args)


if __name__ == "__main__":
    main()
