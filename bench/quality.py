"""Detection-quality benchmark: vae-anomaly against common peers on labelled CSVs.

Run (about 1.5-2.5 h for all 16 development sets x 3 seeds on 2 CPU cores):

    nice -n 10 python bench/quality.py ../shared/bench/data --results-json /tmp/quality.json

DATA_DIR holds gzip CSVs ``NAME.csv.gz`` with a ``label`` column (1 = anomaly).
For every dataset and seed the normal rows are shuffled; half of them (at most
40,000) train, the other half (at most 40,000) plus every anomaly form the test
set. The product runs as a user would run it, through the calls the CLI makes
(``vae_anomaly.api.fit_file`` / ``score_file`` on temporary CSVs, default
options). The peers (IsolationForest, PyOD KNN, VAE and ECOD; PyOD comes from the
``bench`` extra: ``pip install -e '.[bench]'``) see the same split, standardised
with training statistics and with text columns one-hot encoded.

``--protocol dirty`` trains on the same normals joined by anomalies (5% of the
training file by default, ``--dirty-share``), drawn from half of the anomalies;
the other half are the test set's. Its report goes to its own section.

``--known-share S`` (dirty protocol only) confirms a share S of the planted
training rows, at least one, drawn per dataset and seed. They stay in the
training file; the product also gets them as ``known_anomalies`` (a CSV of those
rows), the unsupervised peers fit without them, and ``xgbod`` (PyOD's XGBOD,
semi-supervised; needs ``xgboost``) fits on every training row labelled 1 for a
confirmed row and 0 otherwise (on the confirmed rows and at most 5,000 others).
Its report goes to its own section. ``--known-curve`` sets such runs' results
files (one per S) side by side in a section of their own; it runs nothing.

The report replaces the "## Detection quality" section of ``--out`` and keeps
the rest of that file. With ``--results-json PATH --resume`` results already in
PATH are reused, so an interrupted run can be continued or extended (more
datasets or seeds) and the report is always written from everything in PATH.

To compare two versions of the product, run only it (``--methods vae-anomaly``)
once per version, each into its own results file (``PYTHONPATH`` chooses the
package), then compare the files:

    PYTHONPATH=/path/to/old python bench/quality.py DATA --methods vae-anomaly \
        --results-json old.json --out /tmp/old.md
    python bench/quality.py DATA --methods vae-anomaly --results-json new.json --out /tmp/new.md
    python bench/quality.py DATA --results-json new.json --compare old.json

``--compare`` prints, per dataset and over the seeds both files hold, the
product's ROC-AUC, FPR at its threshold and fit seconds side by side, and the
summed fit seconds; it runs nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import shlex
import signal
import sys
import tempfile
import time
import traceback
import warnings
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import IsolationForest
from sklearn.impute import SimpleImputer
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

PRODUCT = "vae-anomaly"
# The same fitted model scored with `--score iwae`, to pick the default score kind.
PRODUCT_IWAE = "vae-anomaly (iwae)"
PEERS = ("iforest", "knn", "pyod-vae", "ecod")
METHODS = (PRODUCT, *PEERS)
# Semi-supervised: learns from the confirmed anomalies (--known-share), so it runs
# only when there are some and is not among the defaults of a plain run.
XGBOD = "xgbod"
CLASSICAL = ("iforest", "knn", "ecod")  # the peers the confirmed-anomaly reach names
ALL_METHODS = (*METHODS, XGBOD)
TRAIN_CAP = TEST_NORMAL_CAP = 40_000
SECTION = "## Detection quality"
DIRTY_SECTION = "## Detection quality on dirty training data"
KNOWN_SECTION = "## Detection quality with confirmed anomalies"
CURVE_SECTION = "## Confirmed anomalies: the share confirmed"
REACH_MARGIN = 0.01          # product mean ROC-AUC should beat the best peer by this much
VAE_GAP = 0.03               # flag datasets where the product trails PyOD VAE by more
FPR_BAND = (0.005, 0.02)     # the product's threshold targets 1% FPR
FPR_MIN_NORMALS = 500
CLEAN_FALL = 0.03            # dirty protocol: no set should fall further below its clean result
OUTLIER_PRECISION = 0.7      # dirty protocol: share of reported training rows that were planted
KNOWN_MARGIN = 0.03          # confirmed anomalies: product over the best classical peer
KNOWN_FALLS = 2              # confirmed anomalies: sets allowed more than CLEAN_FALL below clean
CURVE_DROP = 0.01            # --known-curve: list sets this much worse than at S = 0
XGBOD_ROWS = 5_000           # unconfirmed training rows XGBOD fits on (see _xgbod_rows)
REVIEW_SECTION = "## Review queue: verdicts on a budget"
NIGHTLY_SECTION = "## Review queue: the nightly variant"
NO_VERDICTS = "review:none"  # the product's round 0, shared by every picking
SIMPLE_PICKINGS = ("random", "top", "iforest", "half")
REVIEW_PEERS = ("iforest-review", "xgbod-review", "ssdo-review")
NIGHTLY = "nightly"
REVIEW_RECOVERY = 0.6        # review: share of the clean -> dirty fall won back
REVIEW_SIMPLE_MARGIN = 0.01  # review: over the best simple picking
REVIEW_PEER_MARGIN = 0.03    # review: over the best peer given the same verdicts
REVIEW_FALL = 0.01           # review: no set below its no-verdict result by more
REVIEW_FIT_COST = 1.3        # review: the last round's fits against those without verdicts


@dataclass
class Split:
    train: pd.DataFrame       # features only, exact file text (what the product reads)
    test: pd.DataFrame        # features + label, exact file text
    train_typed: pd.DataFrame  # the same rows parsed by pandas (what peers see)
    test_typed: pd.DataFrame
    y_test: np.ndarray
    # Dirty protocol: 1 for the training rows that are planted anomalies.
    planted: np.ndarray | None = None
    # --known-share: True for the planted training rows confirmed as anomalies.
    known: np.ndarray | None = None

    @property
    def unconfirmed(self) -> np.ndarray:
        """True for the training rows not confirmed: those the unsupervised peers fit on."""
        return ~self.known if self.known is not None else np.ones(len(self.train), dtype=bool)

    @property
    def contamination(self) -> float:
        """The true share of anomalies in the unconfirmed training rows (0 in the clean
        protocol)."""
        if self.planted is None or not self.unconfirmed.any():
            return 0.0
        return float(self.planted[self.unconfirmed].mean())

    @property
    def n_known(self) -> int:
        return int(self.known.sum()) if self.known is not None else 0


@dataclass
class Result:
    dataset: str
    seed: int
    method: str
    roc_auc: float | None = None
    ap: float | None = None
    fpr: float | None = None          # product only: FPR on test normals at its threshold
    recall: float | None = None       # product only: recall on anomalies at its threshold
    p05: float | None = None          # product only: share of test normals with p <= 0.05
    fit_s: float | None = None
    score_s: float | None = None
    n_train: int = 0
    n_test_normal: int = 0
    n_test_anomaly: int = 0
    n_train_anomaly: int = 0          # dirty protocol: anomalies planted in the training rows
    known_share: float = 0.0          # --known-share of the run
    n_known: int = 0                  # planted training rows confirmed (given to the methods)
    # Product only: training rows `fit --training-outliers` reported, and (dirty protocol)
    # the share of them that were planted anomalies and the share of those it found.
    outliers_flagged: int | None = None
    outlier_precision: float | None = None
    outlier_recall: float | None = None
    # --protocol review: the round (0: before any verdict), the training rows reviewed
    # so far and how many of them were planted anomalies; extra holds the rows this
    # round reviewed (0-based) and, for the nightly variant, its own measures.
    round: int | None = None
    reviewed: int = 0
    reviewed_anomalies: int = 0
    extra: dict | None = None
    error: str | None = None


class MethodTimeout(Exception):
    pass


# ----- data --------------------------------------------------------------------------
def load_dataset(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The file twice: cells as exact text (for the product's CSVs) and parsed by pandas."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    typed = pd.read_csv(path)
    if "label" not in raw.columns:
        raise ValueError(f"{path.name} has no `label` column")
    return raw, typed


def split(raw: pd.DataFrame, typed: pd.DataFrame, seed: int,
          dirty_share: float | None = None) -> Split:
    """Half the normals train (capped); the other half (capped) plus all anomalies test.

    With ``dirty_share`` (the dirty protocol) the training rows are the same normals
    joined by anomalies, drawn from half of the anomalies, until they are that share
    of the training file (fewer where that half runs out); the test set holds the
    other half of the anomalies. The normals of both sets are the clean protocol's.
    """
    rng = np.random.default_rng(seed)
    labels = typed["label"].to_numpy().astype(int)
    normals = rng.permutation(np.flatnonzero(labels == 0))
    half = len(normals) // 2
    train_idx = normals[:half][:TRAIN_CAP]
    anomalies, planted = np.flatnonzero(labels == 1), np.zeros(0, dtype=int)
    if dirty_share is not None:
        anomalies = np.random.default_rng([seed, 21]).permutation(anomalies)
        pool, anomalies = anomalies[:len(anomalies) // 2], anomalies[len(anomalies) // 2:]
        wanted = round(dirty_share * len(train_idx) / (1 - dirty_share))
        planted = pool[:min(wanted, len(pool))]
        train_idx = np.random.default_rng([seed, 22]).permutation(
            np.concatenate([train_idx, planted]))
    test_idx = rng.permutation(np.concatenate([normals[half:][:TEST_NORMAL_CAP], anomalies]))
    take = lambda frame, idx: frame.iloc[idx].reset_index(drop=True)  # noqa: E731
    return Split(train=take(raw, train_idx).drop(columns="label"), test=take(raw, test_idx),
                 train_typed=take(typed, train_idx).drop(columns="label"),
                 test_typed=take(typed, test_idx).drop(columns="label"),
                 y_test=labels[test_idx],
                 planted=labels[train_idx] if dirty_share is not None else None)


def confirm(data: Split, share: float, seed: int, name: str) -> Split:
    """Confirm ``share`` of the planted training rows, at least one where any were
    planted; the draw depends on the seed and the dataset only, so every method and
    every rerun sees the same rows."""
    if share <= 0 or data.planted is None:
        return data
    planted = np.flatnonzero(data.planted)
    known = np.zeros(len(data.train), dtype=bool)
    if len(planted):
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        known[rng.choice(planted, size=min(len(planted), max(1, round(share * len(planted)))),
                         replace=False)] = True
    return replace(data, known=known)


# ----- methods -----------------------------------------------------------------------
def run_product(data: Split, seed: int, workdir: Path) -> dict:
    """fit_file + score_file on CSVs, default options, exactly as the CLI would."""
    from vae_anomaly.api import fit_file, score_file

    train_csv, test_csv = workdir / "train.csv", workdir / "test.csv"
    model, scored_csv = workdir / "model.vae", workdir / "test.scored.csv"
    outliers_csv = workdir / "outliers.csv"
    data.train.to_csv(train_csv, index=False)
    data.test.to_csv(test_csv, index=False)
    # Only with confirmed rows, so a run without them makes exactly today's call.
    known = {}
    if data.n_known:
        known_csv = workdir / "known.csv"
        data.train[data.known].to_csv(known_csv, index=False)
        known = dict(known_anomalies=known_csv)
    started = time.perf_counter()
    fit_file(train_csv, model, seed=seed, training_outliers=outliers_csv, **known)
    fitted = time.perf_counter()
    score_file(test_csv, model, output=scored_csv, seed=seed)
    scored_at = time.perf_counter()
    out = _scored_outcome(scored_csv, data.y_test)
    out.update(fit_s=fitted - started, score_s=scored_at - fitted,
               **_outlier_outcome(outliers_csv, data.planted))
    score_file(test_csv, model, output=scored_csv, seed=seed, kind="iwae")
    out["iwae"] = _scored_outcome(scored_csv, data.y_test)
    return out


def _outlier_outcome(outliers_csv: Path, planted: np.ndarray | None) -> dict:
    """How many training rows the fit reported, and against the planted anomalies
    (dirty protocol) the precision and recall of that report."""
    rows = pd.read_csv(outliers_csv, usecols=["row"])["row"].to_numpy(dtype=np.int64) - 1
    out = dict(outliers_flagged=int(len(rows)))
    if planted is not None and planted.sum():
        hits = int(planted[rows].sum())
        out.update(outlier_precision=hits / len(rows) if len(rows) else None,
                   outlier_recall=hits / int(planted.sum()))
    return out


def _scored_outcome(scored_csv: Path, y: np.ndarray) -> dict:
    scored = pd.read_csv(scored_csv)
    if not np.array_equal(scored["label"].to_numpy().astype(int), y):
        raise RuntimeError("the scored file's label column does not match the test rows")
    flags = scored["is_anomaly"].to_numpy().astype(int)
    # The p-values' promise: uniform on normal rows, so 5% of them at p <= 0.05.
    p05 = (scored["p_value"].to_numpy(dtype=float)[y == 0] <= 0.05).mean()
    return dict(scores=scored["anomaly_score"].to_numpy(dtype=float),
                fpr=float(flags[y == 0].mean()) if (y == 0).any() else None,
                recall=float(flags[y == 1].mean()) if (y == 1).any() else None,
                p05=float(p05) if (y == 0).any() else None)


def peer_features(train: pd.DataFrame, test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Median-impute and standardise numeric columns, one-hot encode text columns."""
    numeric = [c for c in train.columns if pd.api.types.is_numeric_dtype(train[c])]
    text = [c for c in train.columns if c not in numeric]
    transformers = [("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                     numeric)]
    if text:
        transformers.append(("txt", make_pipeline(
            SimpleImputer(strategy="constant", fill_value="<missing>"),
            OneHotEncoder(handle_unknown="ignore", sparse_output=False)), text))
    encoder = ColumnTransformer(transformers)
    as_text = lambda f: f.astype({c: object for c in text})  # noqa: E731
    x_train = encoder.fit_transform(as_text(train)).astype(np.float64)
    return x_train, encoder.transform(as_text(test)).astype(np.float64)


def make_peer(method: str, seed: int, contamination: float = 0.0):
    """A peer with default settings. On dirty training rows PyOD's detectors (and
    IsolationForest) are told the true share of anomalies, the most they can use;
    it moves their thresholds, which ROC-AUC does not read."""
    share = {"contamination": contamination} if contamination > 0 else {}
    if method == "iforest":
        return IsolationForest(random_state=seed, **share)
    if method == "knn":
        from pyod.models.knn import KNN
        return KNN(**share)
    if method == "ecod":
        from pyod.models.ecod import ECOD
        return ECOD(**share)
    if method == "pyod-vae":
        from pyod.models.vae import VAE
        # Default settings; the seed follows the split's and the progress bar is off.
        return VAE(random_state=seed, verbose=0, **share)
    if method == XGBOD:
        from pyod.models.xgbod import XGBOD as Xgbod
        return Xgbod(random_state=seed)
    raise ValueError(f"unknown method {method!r}")


def _xgbod_rows(known: np.ndarray, seed: int) -> np.ndarray:
    """The training rows XGBOD fits on: every confirmed row and at most XGBOD_ROWS
    others, drawn at random. Its one-class SVMs grow with the square of the rows:
    uncapped, a seed of cover took about 30 min (16 sets x 3 seeds about 3 h)."""
    others = np.flatnonzero(~known)
    if len(others) > XGBOD_ROWS:
        others = np.random.default_rng([seed, 23]).choice(others, XGBOD_ROWS, replace=False)
    return np.sort(np.concatenate([np.flatnonzero(known), others]))


def run_peer(method: str, data: Split, seed: int) -> dict:
    """Fit and score one peer. With confirmed anomalies the unsupervised peers fit on
    the training rows without them (all they can do with the knowledge); XGBOD fits
    on every training row, labelled 1 where confirmed."""
    started = time.perf_counter()
    if method == XGBOD:
        if not data.n_known:
            raise ValueError("xgbod needs confirmed anomalies (--known-share above 0)")
        x_train, x_test = peer_features(data.train_typed, data.test_typed)
        with warnings.catch_warnings():
            # PyOD warns that y is not for unsupervised detectors, XGBoost that PyOD's
            # `silent` is unused: noise on every fit.
            warnings.filterwarnings("ignore", message=".*should not be presented")
            warnings.filterwarnings("ignore", message=r'(?s).*\{ "silent" \} are not used')
            rows = _xgbod_rows(data.known, seed)
            detector = make_peer(method, seed).fit(x_train[rows], data.known[rows].astype(int))
    else:
        train = data.train_typed[data.unconfirmed].reset_index(drop=True)
        x_train, x_test = peer_features(train, data.test_typed)
        detector = make_peer(method, seed, data.contamination).fit(x_train)
    fitted = time.perf_counter()
    if method == "iforest":
        scores = -detector.score_samples(x_test)
    else:
        scores = detector.decision_function(x_test)
    return dict(scores=np.asarray(scores, dtype=float), fit_s=fitted - started,
                score_s=time.perf_counter() - fitted)


def metrics(y: np.ndarray, scores: np.ndarray) -> dict:
    if not np.isfinite(scores).all():
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} non-finite scores")
    return dict(roc_auc=float(roc_auc_score(y, scores)),
                ap=float(average_precision_score(y, scores)))


@contextlib.contextmanager
def time_limit(seconds: int):
    """Best effort: SIGALRM interrupts Python code (long C calls finish first)."""
    def expire(signum, frame):
        raise MethodTimeout(f"timed out after {seconds}s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def evaluate(method: str, name: str, data: Split, seed: int, workdir: Path,
             timeout: int, known_share: float = 0.0) -> list[Result]:
    """The method's result; for the product also its IWAE-scored result (same model)."""
    y = data.y_test

    def result_of(label: str, out: dict | None = None, error: str | None = None) -> Result:
        planted = int(data.planted.sum()) if data.planted is not None else 0
        result = Result(name, seed, label, n_train=len(data.train), error=error,
                        n_train_anomaly=planted, known_share=known_share, n_known=data.n_known,
                        n_test_normal=int((y == 0).sum()), n_test_anomaly=int((y == 1).sum()))
        for key, value in (out or {}).items():
            setattr(result, key, value)
        return result

    try:
        with time_limit(timeout):
            out = (run_product(data, seed, workdir) if method == PRODUCT
                   else run_peer(method, data, seed))
    except (Exception, MethodTimeout) as exc:  # recorded as missing; the run goes on
        if not isinstance(exc, MethodTimeout):
            traceback.print_exc(limit=3, file=sys.stderr)
        return [result_of(method, error=f"{type(exc).__name__}: {exc}".strip()
                          .splitlines()[0][:300])]
    extra = out.pop("iwae", None)
    results = [result_of(method, {**out, **metrics(y, out.pop("scores"))})]
    if extra is not None:
        results.append(result_of(PRODUCT_IWAE, {**extra, **metrics(y, extra.pop("scores"))}))
    return results


# ----- the review protocol ------------------------------------------------------------
def review_method(picking: str) -> str:
    return f"review:{picking}"


@dataclass
class ReviewFiles:
    """One split's files for the review loop, in a work folder."""

    folder: Path
    train: Path
    test: Path

    @classmethod
    def write(cls, data: Split, folder: Path) -> ReviewFiles:
        files = cls(folder, folder / "train.csv", folder / "test.csv")
        data.train.to_csv(files.train, index=False)
        data.test.to_csv(files.test, index=False)
        return files


def _feeds_verdicts() -> bool:
    """Whether fit_file takes a filled review file (``verdicts=``), dismissals and all;
    until it does, only the confirmed anomalies go back (``known_anomalies=``)."""
    import inspect

    from vae_anomaly.api import fit_file
    return "verdicts" in inspect.signature(fit_file).parameters


def _fit_with_verdicts(files: ReviewFiles, model: Path, seed: int, verdicts: pd.DataFrame,
                       tag: str) -> float:
    """fit_file on the training file with the verdicts so far (the rows, as text, and a
    `verdict` column); its wall seconds."""
    from vae_anomaly.api import fit_file

    feed = {}
    if len(verdicts) and _feeds_verdicts():
        path = files.folder / f"{tag}-verdicts.csv"
        verdicts.to_csv(path, index=False)
        feed = dict(verdicts=path)
    elif (verdicts["verdict"] == "anomaly").any() if len(verdicts) else False:
        path = files.folder / f"{tag}-confirmed.csv"
        verdicts[verdicts["verdict"] == "anomaly"].to_csv(path, index=False)
        feed = dict(known_anomalies=path)
    started = time.perf_counter()
    fit_file(files.train, model, seed=seed, **feed)
    return time.perf_counter() - started


def _scored_test(files: ReviewFiles, model: Path, data: Split, seed: int) -> dict:
    from vae_anomaly.api import score_file

    scored = files.folder / "test.scored.csv"
    started = time.perf_counter()
    score_file(files.test, model, output=scored, seed=seed)
    out = _scored_outcome(scored, data.y_test)
    out["score_s"] = time.perf_counter() - started
    return {**out, **metrics(data.y_test, out.pop("scores"))}


def _review_result(name: str, data: Split, seed: int, method: str, round_: int,
                   labels: np.ndarray, out: dict, rows=(), error: str | None = None) -> Result:
    result = Result(name, seed, method, n_train=len(data.train), round=round_,
                    n_train_anomaly=int(data.planted.sum()),
                    n_test_normal=int((data.y_test == 0).sum()),
                    n_test_anomaly=int((data.y_test == 1).sum()),
                    reviewed=int((labels != 0).sum()),
                    reviewed_anomalies=int((labels == 1).sum()),
                    extra={"rows": [int(r) for r in rows]}, error=error)
    for key, value in out.items():
        setattr(result, key, value)
    return result


def _answered(data: Split, rows: np.ndarray, labels: np.ndarray) -> None:
    """The oracle: a planted row is an anomaly, any other a normal row."""
    labels[rows] = np.where(data.planted[rows] == 1, 1, -1)


def _verdict_rows(data: Split, labels: np.ndarray) -> pd.DataFrame:
    judged = np.flatnonzero(labels != 0)
    rows = data.train.iloc[judged].copy()
    rows["verdict"] = np.where(labels[judged] == 1, "anomaly", "normal")
    return rows


def product_review_loop(name: str, data: Split, seed: int, files: ReviewFiles,
                        picking: str, base_model: Path, budget: int,
                        rounds: int) -> list[Result]:
    """Rounds 1..R of the product's loop with ``picking``: review_file asks for
    ``budget`` training rows without a verdict, the planted labels answer, and the
    next fit takes every verdict so far; the test split is scored after each fit."""
    import shutil

    from vae_anomaly.api import review_file

    labels = np.zeros(len(data.train), dtype=np.int8)
    model = files.folder / f"{picking}.vae"
    shutil.copyfile(base_model, model)
    results = []
    for round_ in range(1, rounds + 1):
        review_csv = files.folder / f"{picking}-review.csv"
        verdicts_csv = files.folder / f"{picking}-filled.csv"
        judged = [verdicts_csv] if (labels != 0).any() else []
        started = time.perf_counter()
        review_file(model, files.train, budget=budget, output=review_csv, verdicts=judged,
                    seed=seed, picking=picking)
        review_s = time.perf_counter() - started
        rows = pd.read_csv(review_csv, usecols=["row"])["row"].to_numpy(dtype=np.int64) - 1
        if (labels[rows] != 0).any():
            raise RuntimeError(f"{picking} proposed a row that already has a verdict")
        _answered(data, rows, labels)
        verdicts = _verdict_rows(data, labels)
        verdicts.to_csv(verdicts_csv, index=False)
        fit_s = _fit_with_verdicts(files, model, seed, verdicts, picking)
        out = {**_scored_test(files, model, data, seed), "fit_s": fit_s}
        result = _review_result(name, data, seed, review_method(picking), round_, labels,
                                out, rows)
        result.extra.update(review_s=review_s,
                            feeds="verdicts" if _feeds_verdicts() else "known_anomalies")
        results.append(result)
    return results


def iforest_review_loop(name: str, data: Split, seed: int, budget: int,
                        rounds: int) -> list[Result]:
    """IsolationForest picks its own top rows without a verdict each round, and is
    refitted without the confirmed anomalies (told the true share of the rest)."""
    x_train, x_test = peer_features(data.train_typed, data.test_typed)
    labels = np.zeros(len(data.train), dtype=np.int8)
    results, rows = [], np.zeros(0, dtype=np.int64)
    for round_ in range(rounds + 1):
        keep = labels != 1
        share = float(data.planted[keep].mean())
        started = time.perf_counter()
        forest = make_peer("iforest", seed, share).fit(x_train[keep])
        fit_s = time.perf_counter() - started
        out = {**metrics(data.y_test, -forest.score_samples(x_test)), "fit_s": fit_s}
        results.append(_review_result(name, data, seed, "iforest-review", round_, labels,
                                      out, rows))
        if round_ == rounds:
            break
        train_scores = -forest.score_samples(x_train)
        train_scores[labels != 0] = -np.inf
        rows = np.argsort(-train_scores, kind="stable")[:budget]
        _answered(data, rows, labels)
    return results


def semi_supervised_review(name: str, data: Split, seed: int, method: str,
                           reference: list[Result]) -> list[Result]:
    """XGBOD or SSDO fitted, after each round, on the verdicts that ``reference`` (the
    product's loop with one picking) gathered: the same rows and answers."""
    x_train, x_test = peer_features(data.train_typed, data.test_typed)
    labels = np.zeros(len(data.train), dtype=np.int8)
    results = []
    for ref in sorted(reference, key=lambda r: r.round):
        rows = np.asarray(ref.extra["rows"], dtype=np.int64)
        _answered(data, rows, labels)
        fit_rows = _xgbod_rows(labels != 0, seed)
        started = time.perf_counter()
        try:
            scores = _semi_supervised_scores(method, x_train[fit_rows], labels[fit_rows],
                                             x_test, seed)
        except Exception as exc:  # e.g. XGBOD without a confirmed anomaly: recorded
            results.append(_review_result(name, data, seed, method, ref.round, labels, {},
                                          rows, error=f"{type(exc).__name__}: {exc}"[:300]))
            continue
        out = {**metrics(data.y_test, scores), "fit_s": time.perf_counter() - started}
        results.append(_review_result(name, data, seed, method, ref.round, labels, out, rows))
    return results


def _semi_supervised_scores(method: str, x: np.ndarray, labels: np.ndarray,
                            x_test: np.ndarray, seed: int) -> np.ndarray:
    if method == "xgbod-review":
        if not (labels == 1).any():
            raise ValueError("no confirmed anomaly among the verdicts yet")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*should not be presented")
            warnings.filterwarnings("ignore", message=r'(?s).*\{ "silent" \} are not used')
            detector = make_peer(XGBOD, seed).fit(x, (labels == 1).astype(int))
        return np.asarray(detector.decision_function(x_test), dtype=float)
    from anomatools.models import SSDO  # pip install anomatools (3.0.3 here)

    # SSDO's labels: 1 anomaly, -1 normal, 0 unlabelled.
    detector = SSDO().fit(x, labels.astype(int))
    return np.asarray(detector.decision_function(x_test), dtype=float)


def nightly_review(name: str, data: Split, seed: int, files: ReviewFiles, base_model: Path,
                   budget: int) -> Result:
    """Review the top ``budget`` rows of one scored batch (the test split), refit on
    the training file with those verdicts, and measure on the rest of the batch: the
    FPR on its normals, the flag rate on its normals whose nearest training neighbour
    (training rows and dismissed rows together) is a dismissed row, and ROC-AUC;
    before and after."""
    from sklearn.neighbors import NearestNeighbors

    from vae_anomaly.api import score_file

    scored_csv = files.folder / "nightly.scored.csv"
    score_file(files.test, base_model, output=scored_csv, seed=seed)
    before = pd.read_csv(scored_csv, usecols=["anomaly_score", "is_anomaly"])
    rows = np.argsort(-before["anomaly_score"].to_numpy(), kind="stable")[:budget]
    verdicts = data.test.iloc[rows].drop(columns="label").copy()
    verdicts["verdict"] = np.where(data.y_test[rows] == 1, "anomaly", "normal")
    model = files.folder / "nightly.vae"
    labels = np.zeros(len(data.train), dtype=np.int8)  # no training row is judged
    fit_s = _fit_with_verdicts(files, model, seed, verdicts, "nightly")
    score_file(files.test, model, output=scored_csv, seed=seed)
    after = pd.read_csv(scored_csv, usecols=["anomaly_score", "is_anomaly"])
    rest = np.ones(len(data.test), dtype=bool)
    rest[rows] = False
    normals = rest & (data.y_test == 0)
    dismissed = rows[data.y_test[rows] == 0]
    x_train, x_test = peer_features(data.train_typed, data.test_typed)
    reference = np.vstack([x_train, x_test[dismissed]])
    is_dismissed = np.r_[np.zeros(len(x_train), bool), np.ones(len(dismissed), bool)]
    nearest = NearestNeighbors(n_neighbors=1).fit(reference).kneighbors(
        x_test[normals], return_distance=False)[:, 0]
    near = np.zeros(len(data.test), dtype=bool)
    near[np.flatnonzero(normals)[is_dismissed[nearest]]] = True

    def measures(scored: pd.DataFrame) -> dict:
        flags = scored["is_anomaly"].to_numpy().astype(bool)
        return dict(fpr=float(flags[normals].mean()),
                    near_flag_rate=float(flags[near].mean()) if near.any() else None,
                    roc_auc=float(roc_auc_score(data.y_test[rest],
                                                scored["anomaly_score"].to_numpy()[rest])))

    extra = {"before": measures(before), "after": measures(after),
             "dismissed": int(len(dismissed)), "near_normals": int(near.sum()),
             "feeds": "verdicts" if _feeds_verdicts() else "known_anomalies"}
    result = _review_result(name, data, seed, NIGHTLY, 1, labels,
                            {"roc_auc": extra["after"]["roc_auc"],
                             "fpr": extra["after"]["fpr"], "fit_s": fit_s}, rows)
    result.extra.update(extra)
    return result


def run_review_split(name: str, data: Split, seed: int, folder: Path, args,
                     done: set, record) -> None:
    """Every picking and peer of ``args`` on one split; ``record`` takes each method's
    results as they come (so a long run can be resumed), ``done`` the (dataset, seed,
    method) triples already recorded."""
    files = ReviewFiles.write(data, folder)
    base_model = folder / "base.vae"
    from vae_anomaly.api import fit_file

    started = time.perf_counter()
    fit_file(files.train, base_model, seed=seed)
    fit_s = time.perf_counter() - started
    base = {**_scored_test(files, base_model, data, seed), "fit_s": fit_s}
    none = np.zeros(len(data.train), dtype=np.int8)
    if (name, seed, NO_VERDICTS) not in done:
        record([_review_result(name, data, seed, NO_VERDICTS, 0, none, base)])
    references: dict[str, list[Result]] = {}
    for picking in args.pickings:
        method = review_method(picking)
        if (name, seed, method) in done:
            references[picking] = done[(name, seed, method)]
            continue
        references[picking] = _guarded(name, data, seed, method, lambda: product_review_loop(
            name, data, seed, files, picking, base_model, args.budget, args.rounds), args)
        record(references[picking])
    for peer in args.review_peers:
        if (name, seed, peer) in done:
            continue
        if peer == "iforest-review":
            record(_guarded(name, data, seed, peer, lambda: iforest_review_loop(
                name, data, seed, args.budget, args.rounds), args))
            continue
        reference = references.get(args.peer_verdicts) or []
        if not reference or any(r.error for r in reference):
            continue
        record(_guarded(name, data, seed, peer, lambda: semi_supervised_review(
            name, data, seed, peer, reference), args))
    if args.nightly and (name, seed, NIGHTLY) not in done:
        record(_guarded(name, data, seed, NIGHTLY, lambda: [nightly_review(
            name, data, seed, files, base_model, args.budget)], args))


def _guarded(name: str, data: Split, seed: int, method: str, action, args) -> list[Result]:
    try:
        with time_limit(args.timeout):
            return action()
    except (Exception, MethodTimeout) as exc:  # recorded as missing; the run goes on
        if not isinstance(exc, MethodTimeout):
            traceback.print_exc(limit=3, file=sys.stderr)
        return [_review_result(name, data, seed, method, args.rounds,
                               np.zeros(0, dtype=np.int8), {},
                               error=f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300])]


def run_review(args: argparse.Namespace) -> list[Result]:
    paths = dataset_paths(args.data_dir, args.datasets)
    results = load_results(args.results_json) if args.resume else []
    results = [r for r in results if r.error is None]
    for seed in args.seeds:
        for name, path in paths.items():
            done = {}
            for r in results:
                if (r.dataset, r.seed) == (name, seed):
                    done.setdefault((name, seed, r.method), []).append(r)
            wanted = ([NO_VERDICTS] + [review_method(p) for p in args.pickings]
                      + list(args.review_peers) + ([NIGHTLY] if args.nightly else []))
            if all((name, seed, m) in done for m in wanted):
                continue
            raw, typed = load_dataset(path)
            data = split(raw, typed, seed, args.dirty_share)

            def record(new: list[Result]) -> None:
                nonlocal results
                results += new
                for r in new:
                    review_progress(r)
                save_results(args.results_json, results)

            with tempfile.TemporaryDirectory(prefix=f"review-{name}-") as folder:
                run_review_split(name, data, seed, Path(folder), args, done, record)
    return results


def review_progress(r: Result) -> None:
    if r.error:
        status = f"FAILED {r.error}"
    else:
        status = (f"round {r.round} roc_auc={r.roc_auc:.4f} ap={fmt(r.ap, 4)} "
                  f"fpr={fmt(r.fpr, 4)} reviewed={r.reviewed} "
                  f"anomalies={r.reviewed_anomalies} fit={fmt(r.fit_s, 1)}s")
    print(f"{r.dataset} seed={r.seed} {r.method}: {status}", file=sys.stderr, flush=True)


# ----- running -----------------------------------------------------------------------
def dataset_paths(data_dir: Path, names: list[str] | None) -> dict[str, Path]:
    found = {p.name.removesuffix(".csv.gz"): p for p in data_dir.glob("*.csv.gz")}
    if names:
        missing = [n for n in names if n not in found]
        if missing:
            raise SystemExit(f"not in {data_dir}: {', '.join(missing)}")
        return {n: found[n] for n in names}
    # Small files first, so early progress covers many datasets.
    return dict(sorted(found.items(), key=lambda item: item[1].stat().st_size))


def load_results(path: Path | None) -> list[Result]:
    if path is None or not path.exists():
        return []
    return [Result(**r) for r in json.loads(path.read_text())["results"]]


def save_results(path: Path | None, results: list[Result]) -> None:
    if path is None:
        return
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"results": [asdict(r) for r in results]}, indent=1))
    temporary.replace(path)


def progress(done: int, total: int, r: Result) -> None:
    if r.error:
        status = f"FAILED {r.error}"
    else:
        status = (f"roc_auc={r.roc_auc:.4f} ap={r.ap:.4f} fit={fmt(r.fit_s, 1)}s "
                  f"score={fmt(r.score_s, 1)}s")
        if r.method in (PRODUCT, PRODUCT_IWAE):
            status += f" fpr={r.fpr:.4f} recall={r.recall:.4f}"
    print(f"[{done}/{total}] {r.dataset} seed={r.seed} {r.method}: {status}",
          file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> list[Result]:
    paths = dataset_paths(args.data_dir, args.datasets)
    results = load_results(args.results_json) if args.resume else []
    shares = {r.known_share for r in results}
    if shares - {args.known_share}:
        raise SystemExit(f"{args.results_json} holds results of --known-share "
                         f"{', '.join(map(str, sorted(shares)))}; resume with the same share")
    done = {(r.dataset, r.seed, r.method) for r in results if r.error is None}
    results = [r for r in results if r.error is None]  # failures are retried on resume
    total, count = len(paths) * len(args.seeds) * len(args.methods), 0
    for seed in args.seeds:
        for name, path in paths.items():
            todo = [m for m in args.methods if (name, seed, m) not in done]
            count += len(args.methods) - len(todo)
            if not todo:
                continue
            raw, typed = load_dataset(path)
            data = split(raw, typed, seed,
                          args.dirty_share if args.protocol == "dirty" else None)
            data = confirm(data, args.known_share, seed, name)
            with tempfile.TemporaryDirectory(prefix=f"quality-{name}-") as workdir:
                for method in todo:
                    for result in evaluate(method, name, data, seed, Path(workdir),
                                           args.timeout, args.known_share):
                        results = [r for r in results
                                   if (r.dataset, r.seed, r.method) != (name, seed, result.method)]
                        results.append(result)
                        progress(count + 1, total, result)
                    count += 1
                    save_results(args.results_json, results)
    return results


# ----- report ------------------------------------------------------------------------
def machine() -> str:
    import torch
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = [f"torch {torch.__version__}"]
    for package in ("sklearn", "pyod"):
        with contextlib.suppress(ImportError):
            versions.append(f"{package} {__import__(package).__version__}")
    return (f"{len(os.sched_getaffinity(0))} CPU cores (nproc), {model}; Python "
            f"{platform.python_version()}, {', '.join(versions)}; "
            f"{dt.date.today().isoformat()}")


def per_dataset(results: list[Result], field: str) -> dict[tuple[str, str], tuple[float, int]]:
    """(dataset, method) -> (mean over seeds, number of seeds) for a metric field."""
    values: dict[tuple[str, str], list[float]] = {}
    for r in results:
        value = getattr(r, field)
        if r.error is None and value is not None:
            values.setdefault((r.dataset, r.method), []).append(value)
    return {key: (float(np.mean(v)), len(v)) for key, v in values.items()}


def fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def metric_table(datasets: list[str], methods: list[str], results: list[Result],
                 seeds: int) -> list[str]:
    """ROC-AUC / average precision of each method on each dataset (means over seeds),
    and their means over the datasets."""
    auc, ap = per_dataset(results, "roc_auc"), per_dataset(results, "ap")
    lines = ["| dataset | " + " | ".join(methods) + " |",
             "|---|" + "---:|" * len(methods)]
    for name in datasets:
        cells = []
        for m in methods:
            value, n = auc.get((name, m), (None, 0))
            cell = "–" if value is None else f"{fmt(value)} / {fmt(ap[(name, m)][0])}"
            cells.append(cell + (f" ({n}/{seeds} seeds)" if value is not None and n < seeds
                                 else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = []
    for m in methods:
        got = [d for d in datasets if (d, m) in auc]
        cell = (f"{np.mean([auc[(d, m)][0] for d in got]):.3f} / "
                f"{np.mean([ap[(d, m)][0] for d in got]):.3f}") if got else "–"
        cells.append(f"**{cell}**" + (f" ({len(got)}/{len(datasets)} sets)"
                                      if got and len(got) < len(datasets) else ""))
    lines.append("| **mean** | " + " | ".join(cells) + " |")
    return lines


OUTLIER_FIELDS = ("outliers_flagged", "outlier_precision", "outlier_recall")


def product_table(datasets: list[str], results: list[Result]) -> list[str]:
    fields = {f: per_dataset(results, f)
              for f in ("fpr", "recall", "fit_s", "score_s", *OUTLIER_FIELDS)}
    sizes = {r.dataset: r for r in results if r.method == PRODUCT}
    lines = ["| dataset | train rows (anomalies) | test normals / anomalies | FPR at threshold "
             "| recall | fit s | score s | training rows flagged | flag precision "
             "| flag recall |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in datasets:
        get = lambda f: fields[f].get((name, PRODUCT), (None, 0))[0]  # noqa: E731
        r = sizes.get(name)
        confirmed = f", {r.n_known} confirmed" if r and r.n_known else ""
        shape = (f"{r.n_train} ({r.n_train_anomaly}{confirmed}) | {r.n_test_normal} / "
                 f"{r.n_test_anomaly}" if r else "– | –")
        lines.append(f"| {name} | {shape} | {fmt(get('fpr'), 4)} | {fmt(get('recall'))} "
                     f"| {fmt(get('fit_s'), 1)} | {fmt(get('score_s'), 2)} "
                     f"| {fmt(get('outliers_flagged'), 1)} | {fmt(get('outlier_precision'), 2)} "
                     f"| {fmt(get('outlier_recall'), 2)} |")
    return lines


def compare_products(results: list[Result], baseline: list[Result]) -> list[str]:
    """The product in ``results`` against the product in ``baseline``, on the
    (dataset, seed) pairs both hold: a markdown table and the totals."""
    def by_key(rows: list[Result]) -> dict[tuple[str, int], Result]:
        return {(r.dataset, r.seed): r for r in rows if r.method == PRODUCT and r.error is None}

    new, old = by_key(results), by_key(baseline)
    common = sorted(set(new) & set(old))
    datasets = sorted({d for d, _ in common})
    lines = ["| dataset | seeds | ROC-AUC baseline | ROC-AUC this | diff | FPR baseline | "
             "FPR this | fit s baseline | fit s this | fit ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    totals, diffs = [0.0, 0.0], []
    for name in datasets:
        keys = [k for k in common if k[0] == name]
        mean = lambda table, f: float(np.mean([getattr(table[k], f) for k in keys]))  # noqa: E731
        auc_old, auc_new = mean(old, "roc_auc"), mean(new, "roc_auc")
        fit_old, fit_new = mean(old, "fit_s"), mean(new, "fit_s")
        totals[0] += fit_old
        totals[1] += fit_new
        diffs.append(auc_new - auc_old)
        lines.append(f"| {name} | {len(keys)} | {auc_old:.4f} | {auc_new:.4f} | "
                     f"{auc_new - auc_old:+.4f} | {fmt(mean(old, 'fpr'), 4)} | "
                     f"{fmt(mean(new, 'fpr'), 4)} | {fit_old:.1f} | {fit_new:.1f} | "
                     f"{fit_new / fit_old:.2f} |")
    if not datasets:
        return ["No (dataset, seed) pair is in both results files."]
    mean_old = float(np.mean([np.mean([old[k].roc_auc for k in common if k[0] == d])
                              for d in datasets]))
    lines += ["", f"Mean ROC-AUC over {len(datasets)} datasets: baseline {mean_old:.4f}, this "
              f"{mean_old + float(np.mean(diffs)):.4f} ({float(np.mean(diffs)):+.4f}); largest "
              f"drop {min(diffs):+.4f}. Fit seconds (means over seeds, summed over datasets): "
              f"baseline {totals[0]:.1f}, this {totals[1]:.1f} "
              f"({totals[1] / totals[0]:.1%} of the baseline)."]
    return lines


def reach_check(datasets: list[str], methods: list[str], results: list[Result]) -> list[str]:
    auc = per_dataset(results, "roc_auc")
    lines = []
    # (1) product mean ROC-AUC vs best peer mean + margin, on datasets both have.
    peers = [m for m in methods if m not in (PRODUCT, PRODUCT_IWAE)]
    best = None
    for peer in peers:
        common = [d for d in datasets if (d, PRODUCT) in auc and (d, peer) in auc]
        if common:
            own = float(np.mean([auc[(d, PRODUCT)][0] for d in common]))
            other = float(np.mean([auc[(d, peer)][0] for d in common]))
            if best is None or other - own > best[2] - best[1]:
                best = (peer, own, other, len(common))
    if (PRODUCT in methods) and best:
        peer, own, other, n = best
        verdict = "met" if own >= other + REACH_MARGIN else "NOT met"
        lines.append(f"1. Mean ROC-AUC: product {own:.3f} vs best peer {peer} {other:.3f} "
                     f"+ {REACH_MARGIN} = {other + REACH_MARGIN:.3f} over {n} datasets: "
                     f"**{verdict}** ({own - other:+.3f} against {peer}'s mean, "
                     f"{own - other - REACH_MARGIN:+.3f} against the target).")
    else:
        lines.append("1. Mean ROC-AUC vs best peer: not computable (product or peers missing).")
    # (2) datasets where the product trails PyOD VAE by more than VAE_GAP.
    behind = [(d, auc[(d, PRODUCT)][0], auc[(d, "pyod-vae")][0]) for d in datasets
              if (d, PRODUCT) in auc and (d, "pyod-vae") in auc
              and auc[(d, PRODUCT)][0] < auc[(d, "pyod-vae")][0] - VAE_GAP]
    if not any((d, "pyod-vae") in auc for d in datasets):
        lines.append("2. Product vs PyOD VAE: not computable (no PyOD VAE results).")
    elif behind:
        listed = "; ".join(f"{d} {p:.3f} vs {v:.3f}" for d, p, v in behind)
        lines.append(f"2. Datasets where the product's ROC-AUC is more than {VAE_GAP} below "
                     f"PyOD VAE: **{len(behind)}**: {listed}.")
    else:
        lines.append(f"2. Datasets where the product's ROC-AUC is more than {VAE_GAP} below "
                     "PyOD VAE: **none**.")
    # (3) calibration of the product's threshold.
    fpr = per_dataset(results, "fpr")
    sizes = {r.dataset: r.n_test_normal for r in results if r.method == PRODUCT}
    eligible = [d for d in datasets if (d, PRODUCT) in fpr and sizes.get(d, 0) >= FPR_MIN_NORMALS]
    outside = [(d, fpr[(d, PRODUCT)][0]) for d in eligible
               if not FPR_BAND[0] <= fpr[(d, PRODUCT)][0] <= FPR_BAND[1]]
    band = f"[{FPR_BAND[0]:.1%}, {FPR_BAND[1]:.0%}]"
    listed = "; ".join(f"{d} {v:.2%}" for d, v in outside) if outside else "none"
    lines.append(f"3. Calibration (target FPR 1%): of {len(eligible)} datasets with "
                 f"≥ {FPR_MIN_NORMALS} test normals, **{len(outside)}** have a mean test FPR "
                 f"outside {band}: {listed}.")
    lines += score_kind_comparison(datasets, results)
    return lines


def dirty_reach_check(datasets: list[str], results: list[Result],
                      clean: list[Result], known_share: float = 0.0) -> list[str]:
    """The dirty protocol's own reach: no set falls far below its clean result, and the
    training-outlier report is precise; with confirmed anomalies, known_reach_check's."""
    lines = []
    dirty_auc, clean_auc = per_dataset(results, "roc_auc"), per_dataset(clean, "roc_auc")
    common = [d for d in datasets if (d, PRODUCT) in dirty_auc and (d, PRODUCT) in clean_auc]
    if common:
        falls = sorted(((dirty_auc[(d, PRODUCT)][0] - clean_auc[(d, PRODUCT)][0], d)
                        for d in common))
        beyond = [f"{d} {fall:+.3f}" for fall, d in falls if fall < -CLEAN_FALL]
        lines.append(f"5. Fall from the product's clean result (--clean-results), over "
                     f"{len(common)} datasets: mean {np.mean([f for f, _ in falls]):+.3f}; "
                     f"**{len(beyond)}** fall more than {CLEAN_FALL}: "
                     f"{'; '.join(beyond) or 'none'}.")
    else:
        lines.append("5. Fall from the clean result: not computable (pass --clean-results).")
    def mean_of(field: str) -> dict[str, float]:
        return {d: v for (d, m), (v, _) in per_dataset(results, field).items() if m == PRODUCT}

    precision, recall = mean_of("outlier_precision"), mean_of("outlier_recall")
    flagged = mean_of("outliers_flagged")
    if precision:
        precise = sum(value >= OUTLIER_PRECISION for value in precision.values())
        lines.append(f"6. Training-outlier report: flags on {len(precision)} of {len(datasets)} "
                     f"datasets (mean {np.mean(list(flagged.values())):.1f} rows a fit); mean "
                     f"precision {np.mean(list(precision.values())):.2f} where it flagged "
                     f"(target {OUTLIER_PRECISION}; met on {precise}), mean recall "
                     f"{np.mean(list(recall.values())):.2f}.")
    else:
        lines.append("6. Training-outlier report: no training row flagged on any dataset.")
    if known_share > 0:
        lines += known_reach_check(datasets, results, clean, known_share)
    return lines


def mean_auc(auc: dict, method: str, datasets: list[str]) -> float:
    return float(np.mean([auc[(d, method)][0] for d in datasets]))


def known_reach_check(datasets: list[str], results: list[Result], clean: list[Result],
                      known_share: float) -> list[str]:
    """The reach with confirmed anomalies: the product, told of a few, beats its own
    clean result, the classical peers by a margin and XGBOD, falls far on few sets and
    keeps its threshold. Means of ROC-AUC over the sets both sides hold."""
    auc, clean_auc = per_dataset(results, "roc_auc"), per_dataset(clean, "roc_auc")
    mine = [d for d in datasets if (d, PRODUCT) in auc]
    verdict = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    head = f"confirmed anomalies ({known_share:.1%} of the planted rows)"
    if not mine:
        return [f"7. Reach with {head}: not computable (no product results)."]
    lines = []
    common = [d for d in mine if (d, PRODUCT) in clean_auc]
    if common:
        own, base = mean_auc(auc, PRODUCT, common), mean_auc(clean_auc, PRODUCT, common)
        lines.append(f"7. With {head}, product mean ROC-AUC ≥ its clean mean: {own:.3f} vs "
                     f"{base:.3f} ({own - base:+.3f}) over {len(common)} sets: "
                     f"**{verdict(own >= base)}**.")
        falls = [f"{d} {auc[(d, PRODUCT)][0] - clean_auc[(d, PRODUCT)][0]:+.3f}" for d in common
                 if auc[(d, PRODUCT)][0] < clean_auc[(d, PRODUCT)][0] - CLEAN_FALL]
        lines.append(f"8. At most {KNOWN_FALLS} sets more than {CLEAN_FALL} below their clean "
                     f"result: **{len(falls)}** of {len(common)} "
                     f"({'; '.join(falls) or 'none'}): **{verdict(len(falls) <= KNOWN_FALLS)}**.")
    else:
        lines.append("7-8. Against the clean result: not computable (pass --clean-results).")
    best = None
    for peer in CLASSICAL:
        both = [d for d in mine if (d, peer) in auc]
        if both:
            own, other = mean_auc(auc, PRODUCT, both), mean_auc(auc, peer, both)
            if best is None or other - own > best[2] - best[1]:
                best = (peer, own, other, len(both))
    if best:
        peer, own, other, n = best
        lines.append(f"9. Product mean ≥ best classical peer + {KNOWN_MARGIN}: {own:.3f} vs "
                     f"{peer} {other:.3f} + {KNOWN_MARGIN} = {other + KNOWN_MARGIN:.3f} over "
                     f"{n} sets: **{verdict(own >= other + KNOWN_MARGIN)}** "
                     f"({own - other - KNOWN_MARGIN:+.3f} against the target).")
    else:
        lines.append("9. Against the classical peers: not computable (no iforest, knn or "
                     "ecod results).")
    both = [d for d in mine if (d, XGBOD) in auc]
    if both:
        own, other = mean_auc(auc, PRODUCT, both), mean_auc(auc, XGBOD, both)
        lines.append(f"10. Product mean ≥ XGBOD's (same confirmed rows): {own:.3f} vs "
                     f"{other:.3f} ({own - other:+.3f}) over {len(both)} sets: "
                     f"**{verdict(own >= other)}**.")
    else:
        lines.append("10. Against XGBOD: not computable (no xgbod results).")
    fpr = per_dataset(results, "fpr")
    sizes = {r.dataset: r.n_test_normal for r in results if r.method == PRODUCT}
    eligible = [d for d in mine if (d, PRODUCT) in fpr and sizes.get(d, 0) >= FPR_MIN_NORMALS]
    outside = [f"{d} {fpr[(d, PRODUCT)][0]:.2%}" for d in eligible
               if not FPR_BAND[0] <= fpr[(d, PRODUCT)][0] <= FPR_BAND[1]]
    if not eligible:
        return lines + [f"11. Product test FPR: not computable (no set with ≥ "
                        f"{FPR_MIN_NORMALS} test normals)."]
    lines.append(f"11. Product test FPR in [{FPR_BAND[0]:.1%}, {FPR_BAND[1]:.0%}] on every set "
                 f"with ≥ {FPR_MIN_NORMALS} test normals: {len(eligible) - len(outside)} of "
                 f"{len(eligible)} ({'outside: ' + '; '.join(outside) if outside else 'all'}): "
                 f"**{verdict(not outside)}**.")
    return lines


def known_curve(files: list[Path]) -> list[str]:
    """The product's mean ROC-AUC over --known-share from one results file per share,
    against the best classical peer and XGBOD, and the sets a share leaves more than
    CURVE_DROP below the share-0 run. Means over the sets every file's product holds."""
    runs: dict[float, list[Result]] = {}
    for path in files:
        rows = [r for r in load_results(path) if r.error is None]
        shares = {r.known_share for r in rows}
        if len(shares) != 1:
            raise SystemExit(f"{path}: expected the results of one --known-share, found "
                             f"{sorted(shares) or 'none'}")
        runs[shares.pop()] = rows
    aucs = {s: per_dataset(rows, "roc_auc") for s, rows in runs.items()}
    sets = sorted(set.intersection(*({d for d, m in auc if m == PRODUCT}
                                     for auc in aucs.values())))
    if not sets:
        return ["No set has product results in every file."]
    lines = [f"Mean ROC-AUC over {len(sets)} sets ({', '.join(sets)}):", "",
             "| S | vae-anomaly | best classical peer | xgbod |", "|---:|---:|---:|---:|"]
    for share in sorted(aucs):
        auc = aucs[share]
        peers = [(mean_auc(auc, p, sets), p) for p in CLASSICAL
                 if all((d, p) in auc for d in sets)]
        best = "–" if not peers else "{:.3f} ({})".format(*max(peers))
        xgbod = (f"{mean_auc(auc, XGBOD, sets):.3f}" if all((d, XGBOD) in auc for d in sets)
                 else "–")
        lines.append(f"| {share:g} | {mean_auc(auc, PRODUCT, sets):.3f} | {best} | {xgbod} |")
    if 0 not in aucs:
        return lines + ["", "No S = 0 file: no per-set comparison."]
    lines.append("")
    base = aucs[0]
    for share in sorted(s for s in aucs if s > 0):
        worse = [f"{d} {aucs[share][(d, PRODUCT)][0] - base[(d, PRODUCT)][0]:+.3f}"
                 for d in sets
                 if aucs[share][(d, PRODUCT)][0] < base[(d, PRODUCT)][0] - CURVE_DROP]
        lines.append(f"- S = {share:g} against S = 0: {len(worse)} "
                     f"set{'' if len(worse) == 1 else 's'} more than {CURVE_DROP} "
                     f"worse{': ' + '; '.join(worse) if worse else ''}.")
    return lines


def score_kind_comparison(datasets: list[str], results: list[Result]) -> list[str]:
    """ELBO (the default) against IWAE, from the same fitted models and draws."""
    auc, ap = per_dataset(results, "roc_auc"), per_dataset(results, "ap")
    common = [d for d in datasets if (d, PRODUCT) in auc and (d, PRODUCT_IWAE) in auc]
    if not common:
        return []
    mean = lambda table, m: float(np.mean([table[(d, m)][0] for d in common]))  # noqa: E731
    better = sum(auc[(d, PRODUCT_IWAE)][0] > auc[(d, PRODUCT)][0] for d in common)
    return [f"4. Score kind, same models: mean ROC-AUC ELBO {mean(auc, PRODUCT):.3f} vs IWAE "
            f"{mean(auc, PRODUCT_IWAE):.3f}; mean AP {mean(ap, PRODUCT):.3f} vs "
            f"{mean(ap, PRODUCT_IWAE):.3f}; IWAE has the higher ROC-AUC on {better} of "
            f"{len(common)} datasets."]


def render_markdown(results: list[Result], methods: list[str], seeds: list[int],
                    command: str, reused: bool = False, dirty_share: float | None = None,
                    clean: list[Result] = (), known_share: float = 0.0) -> str:
    datasets = sorted({r.dataset for r in results})
    if PRODUCT in methods and any(r.method == PRODUCT_IWAE for r in results):
        methods = [PRODUCT, PRODUCT_IWAE, *[m for m in methods if m != PRODUCT]]
    n_seeds = len({r.seed for r in results}) or len(seeds)
    protocol = ("" if dirty_share is None else
                f" Dirty protocol: the same training normals joined by anomalies drawn from half "
                f"of them, {dirty_share:.0%} of the training file (fewer where that half runs "
                "out; the count is in brackets below), and only the other half of the anomalies "
                "in the test set. PyOD's detectors are given the true share as `contamination`.")
    if dirty_share is not None and known_share > 0:
        protocol += (
            f" Confirmed anomalies: {known_share:.1%} of the planted training rows (at least one; "
            "the count is in brackets below), drawn per dataset and seed, stay in the training "
            "file; vae-anomaly also gets them as a CSV of those rows (`known_anomalies`); "
            "IsolationForest, KNN, ECOD and PyOD VAE fit on the training rows without them, "
            "their `contamination` the true share of the rows left; XGBOD (PyOD, "
            "semi-supervised, default settings) fits on every training row, labelled 1 where "
            "confirmed and 0 otherwise.")
    title = (SECTION if dirty_share is None else
             KNOWN_SECTION if known_share > 0 else DIRTY_SECTION)
    lines = [title, "",
             f"Command: `{command}`" + (
                 " (results already in the --results-json file, from an earlier run of the "
                 "same command without --resume, were reused)" if reused else ""), "",
             f"Machine: {machine()}.", "",
             f"Split per dataset and seed (seeds {', '.join(map(str, sorted({r.seed for r in results})))}):"
             f" half of the normal rows train (at most {TRAIN_CAP:,}); the other half (at most "
             f"{TEST_NORMAL_CAP:,}) plus every anomaly are the test set. vae-anomaly runs with "
             "default options through `fit_file`/`score_file` on CSV files; peers get "
             "median-imputed, standardised numeric columns and one-hot text columns. Values are "
             "means over seeds; the mean row averages datasets." + protocol, ""]
    lines += ["### ROC-AUC / average precision", "",
              *metric_table(datasets, methods, results, n_seeds), ""]
    if PRODUCT in methods:
        lines += ["### vae-anomaly at its own threshold", "",
                  "FPR on test normals and recall on anomalies with `is_anomaly` (the threshold "
                  "the model file carries, set for 1% FPR on held-out training rows: the validation "
                  "rows, and on sets under 6,000 rows those of the extra calibration fits); fit and "
                  "score are wall-clock seconds of `fit_file` and `score_file`.", "",
                  *product_table(datasets, results), ""]
    reach = reach_check(datasets, methods, results)
    if dirty_share is not None:
        reach += dirty_reach_check(datasets, results, list(clean), known_share)
    lines += ["### Reach check", "", *reach, ""]
    failures = [r for r in results if r.error]
    if failures:
        lines += ["### Missing results", "",
                  *[f"- {r.dataset} seed {r.seed} {r.method}: {r.error}" for r in failures], ""]
    return "\n".join(lines)


# ----- the review protocol's report -----------------------------------------------------
def _review_means(results: list[Result], method: str, round_: int, field: str,
                  datasets: list[str]) -> float | None:
    """The mean over ``datasets`` of the mean over seeds of ``field``."""
    per_set = []
    for name in datasets:
        values = [getattr(r, field) for r in results
                  if (r.dataset, r.method, r.round) == (name, method, round_)
                  and r.error is None and getattr(r, field) is not None]
        if not values:
            return None
        per_set.append(float(np.mean(values)))
    return float(np.mean(per_set)) if per_set else None


def _hit_share(results: list[Result], method: str, round_: int,
               datasets: list[str]) -> float | None:
    """The share of the reviewed rows that were anomalies, pooled over sets and seeds."""
    rows = [r for r in results if r.method == method and r.round == round_
            and r.dataset in datasets and r.error is None and r.reviewed]
    return (sum(r.reviewed_anomalies for r in rows) / sum(r.reviewed for r in rows)
            if rows else None)


def _review_methods(results: list[Result]) -> list[str]:
    found = {r.method for r in results if r.round is not None and r.method != NIGHTLY}
    order = [NO_VERDICTS, *(review_method(p) for p in SIMPLE_PICKINGS)]
    rest = sorted(m for m in found if m.startswith("review:") and m not in order)
    return [m for m in order if m in found] + rest + [m for m in REVIEW_PEERS if m in found]


def _complete_sets(results: list[Result], methods: list[str], last: int) -> list[str]:
    """The sets where every method has its last round for every seed of the run."""
    seeds = {r.seed for r in results}
    return sorted(name for name in {r.dataset for r in results}
                  if all(any((r.dataset, r.method, r.round, r.seed) == (name, m, 0 if m == NO_VERDICTS
                                                                       else last, s)
                             and r.error is None for r in results)
                         for m in methods for s in seeds))


def _feeds_text(results: list[Result]) -> str:
    feeds = {(r.extra or {}).get("feeds") for r in results
             if r.method.startswith("review:") and r.round}
    words = {"verdicts": "every verdict, dismissals too (fit_file verdicts=)",
             "known_anomalies": "the confirmed anomalies only (known_anomalies=)"}
    return " and ".join(words.get(f, "unrecorded") for f in sorted(feeds, key=str)) or "none"


def review_report(results: list[Result], command: str, clean: list[Result],
                  budget: int, rounds: int) -> str:
    methods = _review_methods(results)
    datasets = _complete_sets(results, methods, rounds)
    lines = [REVIEW_SECTION, "", f"Command: `{command}`", "", f"Machine: {machine()}.", "",
             f"The dirty protocol's splits (5% of the training file planted). Each round fits "
             f"with the verdicts so far, asks for {budget} training rows without a verdict and "
             "answers from the planted labels (planted = anomaly, else normal); the test split "
             f"is scored after each fit. {rounds} rounds. `review:none` is the fit without "
             "verdicts; `review:P` the product's loop with picking P (review_file, "
             "fit_file); `iforest-review` picks its own rows and refits without the confirmed "
             "ones; `xgbod-review` and `ssdo-review` (anomatools' SSDO) fit on the verdicts of "
             f"the product's default picking. Verdicts fed back: {_feeds_text(results)}. "
             f"Means over the {len(datasets)} sets where every method has every seed "
             f"({', '.join(datasets)}); hit share pooled over sets and seeds.", ""]
    lines += ["| method | round | reviewed rows | ROC-AUC | AP | test FPR | hit share | fit s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for method in methods:
        for round_ in ([0] if method == NO_VERDICTS else range(0 if method == "iforest-review"
                                                               else 1, rounds + 1)):
            mean = lambda f: _review_means(results, method, round_, f, datasets)  # noqa: E731
            lines.append(f"| {method} | {round_} | {round_ * budget} | {fmt(mean('roc_auc'))} | "
                         f"{fmt(mean('ap'))} | {fmt(mean('fpr'), 4)} | "
                         f"{fmt(_hit_share(results, method, round_, datasets), 3)} | "
                         f"{fmt(mean('fit_s'), 1)} |")
    lines += ["", "ROC-AUC after the last round, per set (means over seeds):", "",
              "| dataset | clean | " + " | ".join(methods) + " |",
              "|---|---:|" + "---:|" * len(methods)]
    clean_auc = per_dataset([r for r in clean if r.method == PRODUCT], "roc_auc")
    final = {m: per_dataset([r for r in results if r.method == m and r.round ==
                             (0 if m == NO_VERDICTS else rounds)], "roc_auc") for m in methods}
    for name in datasets:
        cells = [fmt(final[m].get((name, m), (None,))[0]) for m in methods]
        lines.append(f"| {name} | {fmt(clean_auc.get((name, PRODUCT), (None,))[0])} | "
                     + " | ".join(cells) + " |")
    lines += ["", "### Reach check", "", *review_reach(results, clean_auc, final, datasets,
                                                       methods, rounds), ""]
    return "\n".join(lines)


def review_reach(results: list[Result], clean_auc: dict, final: dict, datasets: list[str],
                 methods: list[str], rounds: int) -> list[str]:
    mean = lambda m: float(np.mean([final[m][(d, m)][0] for d in datasets]))  # noqa: E731
    product = [m for m in methods if m.startswith("review:") and m != NO_VERDICTS
               and m.split(":", 1)[1] not in SIMPLE_PICKINGS]
    simple = [m for m in methods if m.split(":", 1)[-1] in SIMPLE_PICKINGS
              and m.startswith("review:")]
    peers = [m for m in methods if m in REVIEW_PEERS]
    if not datasets or NO_VERDICTS not in methods:
        return ["Not computable: no set has every method's results."]
    dirty = mean(NO_VERDICTS)
    lines = []
    clean_sets = [d for d in datasets if (d, PRODUCT) in clean_auc]
    best_simple = max(simple, key=mean, default=None)
    best_peer = max(peers, key=mean, default=None)
    half_hits = _hit_share(results, review_method("half"), rounds, datasets)
    for m in product:
        own, parts = mean(m), []
        if len(clean_sets) == len(datasets):
            clean = float(np.mean([clean_auc[(d, PRODUCT)][0] for d in datasets]))
            recovered = (own - dirty) / (clean - dirty) if clean > dirty else float("nan")
            parts.append(f"recovers {recovered:.0%} of the clean {clean:.3f} → dirty "
                         f"{dirty:.3f} fall (target {REVIEW_RECOVERY:.0%}): "
                         f"**{'met' if recovered >= REVIEW_RECOVERY else 'NOT met'}**")
        if best_simple:
            target = mean(best_simple) + REVIEW_SIMPLE_MARGIN
            parts.append(f"vs best simple picking {best_simple} {mean(best_simple):.3f} + "
                         f"{REVIEW_SIMPLE_MARGIN}: **{'met' if own >= target else 'NOT met'}** "
                         f"({own - target:+.3f})")
        if best_peer:
            target = mean(best_peer) + REVIEW_PEER_MARGIN
            parts.append(f"vs best peer {best_peer} {mean(best_peer):.3f} + "
                         f"{REVIEW_PEER_MARGIN}: **{'met' if own >= target else 'NOT met'}** "
                         f"({own - target:+.3f})")
        hits = _hit_share(results, m, rounds, datasets)
        if half_hits is not None and hits is not None:
            parts.append(f"hit share {hits:.3f} vs half's {half_hits:.3f}: "
                         f"**{'met' if hits >= half_hits else 'NOT met'}**")
        falls = [f"{d} {final[m][(d, m)][0] - final[NO_VERDICTS][(d, NO_VERDICTS)][0]:+.3f}"
                 for d in datasets if final[m][(d, m)][0]
                 < final[NO_VERDICTS][(d, NO_VERDICTS)][0] - REVIEW_FALL]
        parts.append(f"sets more than {REVIEW_FALL} below no verdicts: "
                     f"{'; '.join(falls) if falls else 'none'}")
        fpr = per_dataset([r for r in results if r.method == m and r.round == rounds], "fpr")
        sizes = {r.dataset: r.n_test_normal for r in results if r.method == m}
        eligible = [d for d in datasets if sizes.get(d, 0) >= FPR_MIN_NORMALS and (d, m) in fpr]
        outside = [f"{d} {fpr[(d, m)][0]:.2%}" for d in eligible
                   if not FPR_BAND[0] <= fpr[(d, m)][0] <= FPR_BAND[1]]
        parts.append(f"test FPR in [{FPR_BAND[0]:.1%}, {FPR_BAND[1]:.0%}] on "
                     f"{len(eligible) - len(outside)} of {len(eligible)} sets with ≥ "
                     f"{FPR_MIN_NORMALS} test normals"
                     + (f" (outside: {'; '.join(outside)})" if outside else ""))
        parts.append(_fit_cost(results, m, rounds, datasets))
        lines.append(f"- {m} {own:.3f}: " + "; ".join(parts) + ".")
    return lines


def _fit_cost(results: list[Result], method: str, rounds: int, datasets: list[str]) -> str:
    """The last round's fit seconds against the fit without verdicts, each summed over
    the sets and seeds where both ran, in the same run."""
    seconds = {(r.dataset, r.seed, r.method): r.fit_s for r in results
               if r.error is None and r.dataset in datasets and r.fit_s is not None
               and r.round == (0 if r.method == NO_VERDICTS else rounds)}
    pairs = [(seconds[(d, s, method)], plain) for (d, s, m), plain in seconds.items()
             if m == NO_VERDICTS and (d, s, method) in seconds]
    if not pairs:
        return "fit cost: not computable"
    with_verdicts, without = (float(np.sum(column)) for column in zip(*pairs))
    ratio = with_verdicts / without
    return (f"fit with verdicts {with_verdicts:.1f} s against {without:.1f} s without, summed "
            f"over {len(pairs)} splits: {ratio:.2f}x (target {REVIEW_FIT_COST}x): "
            f"**{'met' if ratio <= REVIEW_FIT_COST else 'NOT met'}**")


def nightly_report(results: list[Result], command: str) -> str:
    rows = [r for r in results if r.method == NIGHTLY and r.error is None]
    lines = [NIGHTLY_SECTION, "", f"Command: `{command}`", "",
             "Per set, the top rows of one scored batch (the test split) are reviewed, the "
             "model refitted on the training file with those verdicts, and the rest of the "
             "batch measured before and after: the FPR on its normals, the flag rate on its "
             "normals whose nearest training neighbour (training rows and dismissed rows, "
             "peer features) is a dismissed row, and ROC-AUC. Means over seeds.", "",
             "| dataset | dismissed | normals next to one | FPR before → after | flag rate next "
             "to dismissed before → after | ROC-AUC before → after |",
             "|---|---:|---:|---:|---:|---:|"]
    for name in sorted({r.dataset for r in rows}):
        mine = [r.extra for r in rows if r.dataset == name]
        mean = lambda when, key: np.mean([e[when][key] for e in mine  # noqa: E731
                                          if e[when][key] is not None] or [np.nan])
        lines.append(f"| {name} | {np.mean([e['dismissed'] for e in mine]):.1f} | "
                     f"{np.mean([e['near_normals'] for e in mine]):.1f} | "
                     f"{mean('before', 'fpr'):.4f} → {mean('after', 'fpr'):.4f} | "
                     f"{mean('before', 'near_flag_rate'):.3f} → "
                     f"{mean('after', 'near_flag_rate'):.3f} | "
                     f"{mean('before', 'roc_auc'):.3f} → {mean('after', 'roc_auc'):.3f} |")
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace the section of ``path`` with the title of ``section``'s first line (or
    append it); keep the rest."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    title = section.splitlines()[0].strip()
    start = next((i for i, line in enumerate(lines) if line.strip() == title), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        tail = "\n".join(lines[end:])
        new = "\n".join(lines[:start]) + ("\n" if start else "") + section.rstrip("\n") + "\n"
        new += ("\n" + tail + "\n") if tail else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", metavar="NAME",
                        help="default: every NAME.csv.gz in DATA_DIR")
    parser.add_argument("--methods", nargs="+", choices=ALL_METHODS,
                        help=f"default: {' '.join(METHODS)}, and {XGBOD} with --known-share")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--results-json", type=Path, metavar="PATH",
                        help="write raw per-seed results here (after every method)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the successful results already in --results-json")
    parser.add_argument("--timeout", type=int, default=1800,
                        help="seconds per method and dataset before it counts as missing")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report from --results-json without running anything")
    parser.add_argument("--protocol", choices=("clean", "dirty", "review"), default="clean",
                        help="dirty: anomalies join the training rows (--dirty-share of them); "
                             "review: the dirty splits, and --rounds rounds of --budget "
                             "verdicts on training rows; each report goes to its own section")
    parser.add_argument("--budget", type=int, default=20, metavar="B",
                        help="with --protocol review: rows reviewed a round")
    parser.add_argument("--rounds", type=int, default=2, metavar="R",
                        help="with --protocol review: rounds of review and refit")
    parser.add_argument("--pickings", nargs="+", metavar="PICKING",
                        help="with --protocol review: the product's pickings to run "
                             "(vae_anomaly.review.PICKINGS; default: the four simple ones "
                             "and the default picking)")
    parser.add_argument("--review-peers", nargs="*", choices=REVIEW_PEERS,
                        default=list(REVIEW_PEERS),
                        help="with --protocol review: the peers to run (none: only the product)")
    parser.add_argument("--peer-verdicts", metavar="PICKING",
                        help="with --protocol review: the picking whose verdicts XGBOD and SSDO "
                             "get (default: the product's default picking)")
    parser.add_argument("--nightly", action="store_true",
                        help="with --protocol review: also the nightly variant (review the top "
                             "--budget rows of the scored test split, refit, measure the rest)")
    parser.add_argument("--dirty-share", type=float, default=0.05, metavar="SHARE",
                        help="with --protocol dirty: the anomalies' share of the training file")
    parser.add_argument("--clean-results", type=Path, metavar="CLEAN_JSON",
                        help="with --protocol dirty: the clean protocol's --results-json, to "
                             "check how far each dataset falls from its clean result")
    parser.add_argument("--known-share", type=float, default=0.0, metavar="S",
                        help="with --protocol dirty: confirm this share of the planted training "
                             "rows (at least one); the product gets them as known_anomalies, "
                             "the unsupervised peers fit without them, xgbod learns from them")
    parser.add_argument("--known-curve", type=Path, nargs="+", metavar="RESULTS_JSON",
                        help="print the product's mean ROC-AUC per --known-share from these "
                             "results files (one per share) against the peers; runs nothing")
    parser.add_argument("--compare", type=Path, metavar="BASELINE_JSON",
                        help="print the product in --results-json against the product in "
                             "BASELINE_JSON (another version's results file); runs nothing")
    args = parser.parse_args(argv)
    if args.protocol == "review":
        from vae_anomaly.review import DEFAULT_PICKING, PICKINGS

        args.pickings = args.pickings or [*SIMPLE_PICKINGS, DEFAULT_PICKING]
        unknown = [p for p in args.pickings if p not in PICKINGS]
        if unknown:
            parser.error(f"unknown picking {unknown[0]}; the pickings are: {', '.join(PICKINGS)}")
        args.peer_verdicts = args.peer_verdicts or DEFAULT_PICKING
        if args.peer_verdicts not in args.pickings:
            args.pickings.append(args.peer_verdicts)
        if args.budget < 1 or args.rounds < 1:
            parser.error("--budget and --rounds must be at least 1")
    if not 0 < args.dirty_share < 0.5:
        parser.error("--dirty-share must be above 0 and below 0.5")
    if (args.resume or args.report_only or args.compare) and args.results_json is None:
        parser.error("--resume, --report-only and --compare need --results-json")
    if not 0 <= args.known_share <= 1:
        parser.error("--known-share must be between 0 and 1")
    if args.known_share > 0 and args.protocol != "dirty":
        parser.error("--known-share needs --protocol dirty")
    if args.methods is None:
        args.methods = list(METHODS) + ([XGBOD] if args.known_share > 0 else [])
    if XGBOD in args.methods and args.known_share == 0 and not args.report_only:
        parser.error(f"{XGBOD} learns from confirmed anomalies: it needs --known-share above 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.compare:
        print("\n".join(compare_products(load_results(args.results_json),
                                          load_results(args.compare))))
        return
    if args.known_curve:
        command = shlex.join(["python", *sys.argv]) if argv is None else shlex.join(argv)
        section = "\n".join([CURVE_SECTION, "", f"Command: `{command}`", "",
                             *known_curve(args.known_curve), ""])
        print(section)
        write_section(args.out, section)
        return
    command = shlex.join(["python", *sys.argv]) if argv is None else shlex.join(argv)
    started = time.perf_counter()
    if args.protocol == "review":
        results = load_results(args.results_json) if args.report_only else run_review(args)
        write_section(args.out, review_report(results, command, load_results(args.clean_results),
                                              args.budget, args.rounds))
        if any(r.method == NIGHTLY for r in results):
            write_section(args.out, nightly_report(results, command))
        print(f"wrote {args.out} ({len(results)} results, {time.perf_counter() - started:.0f}s)",
              file=sys.stderr)
        return
    results = load_results(args.results_json) if args.report_only else run(args)
    methods = [m for m in ALL_METHODS
               if m in args.methods or any(r.method == m for r in results)]
    dirty_share = args.dirty_share if args.protocol == "dirty" else None
    # From the results, so that --report-only needs no --known-share to say it.
    known_share = max((r.known_share for r in results), default=args.known_share)
    write_section(args.out, render_markdown(results, methods, args.seeds, command,
                                            reused=args.resume or args.report_only,
                                            dirty_share=dirty_share,
                                            clean=load_results(args.clean_results),
                                            known_share=known_share))
    print(f"wrote {args.out} ({len(results)} results, {time.perf_counter() - started:.0f}s)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
