"""``VAEAnomalyDetector``: the detector as a scikit-learn estimator.

It is detector.py's ``Detector`` (fit, score, explain, save) with scikit-learn's
conventions on top: ``OutlierMixin`` and ``BaseEstimator``, honest tags, numpy
input checked by ``validate_data``, ``decision_function`` / ``offset_``,
``fit_predict``, ``NotFittedError`` and ``n_features_in_`` / ``feature_names_in_``.
It passes every check of scikit-learn's ``check_estimator``
(tests/test_estimator_checks.py): ``contamination`` a share flags that share of the
training rows, as IsolationForest's does.

The command line uses ``Detector`` itself: scikit-learn takes a second to import
and no command needs it.

Example:
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> pipeline = make_pipeline(StandardScaler(), VAEAnomalyDetector(seed=0))
    >>> pipeline.fit(X_train).predict(X_new)     # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted, validate_data

from .data import to_arrow
from .detector import MIN_TRAINING_ROWS, Detector
from .errors import InputError

_NOT_FITTED = "this detector is not fitted yet; call fit() or load() first"


class NotFittedYet(InputError, NotFittedError):
    """A fitted detector's method was called before ``fit``: both our ``InputError``
    and scikit-learn's ``NotFittedError``."""


class VAEAnomalyDetector(OutlierMixin, Detector, BaseEstimator):
    """A Variational Autoencoder anomaly detector for tables of mixed types, as a
    scikit-learn outlier detector.

    Parameters mirror ``vae-anomaly fit``; ``None`` means "sized from the data".
    ``X`` is a pandas DataFrame or a pyarrow Table (any mix of numeric, text and
    boolean columns, matched by name), or a 2-D array or list of lists (columns
    ``x0``, ``x1``, ..., matched by position). Missing values (NaN, None) are
    allowed. ``score_samples`` is the negated anomaly score (lower is more
    abnormal), ``decision_function`` is negative for the rows ``predict`` flags (-1).
    ``contamination``: a share (up to 0.5) sets ``offset_`` so that that share of the
    training rows is flagged, as in IsolationForest; "auto" (the default) and 0 set
    it at ``fpr`` on held-out rows.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing cells are imputed and flagged
        tags.input_tags.string = True  # text columns are categorical
        tags.input_tags.categorical = True
        tags.input_tags.sparse = False
        # One seed gives one model, and a row's score depends only on the row.
        tags.non_deterministic = False
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def fit(self, X, y=None, *, known_anomalies=None, known_normals=None,
            **fit_options) -> VAEAnomalyDetector:
        """Learn normal behaviour from ``X``; ``y`` is ignored (scikit-learn's outlier
        detectors take it for pipelines). ``known_anomalies``: rows confirmed as
        anomalous, as a table like ``X`` (a DataFrame, an Arrow table or a 2-D array)
        or a boolean mask over ``X``'s rows; training pushes their scores up and never
        treats them as normal. ``known_normals``: rows dismissed as normal (false
        alarms), in the same forms; they train as normal and training pulls their
        scores below the threshold's quantile. ``fit_options`` are ``Detector.fit``'s."""
        table = self._input_table(X, reset=True)
        return super().fit(table, known_anomalies=_known_input(known_anomalies),
                           known_normals=_known_input(known_normals, "known_normals"),
                           **fit_options)

    def score(self, X, y=None, **options) -> pd.DataFrame:
        """Every row's score columns, as ``Detector.score`` (``y`` is ignored)."""
        self._check_fitted()
        return super().score(self._input_table(X, reset=False, keep_frame=True), **options)

    def score_samples(self, X) -> np.ndarray:
        """The negated anomaly score (lower is more abnormal), as ``IsolationForest``'s."""
        self._check_fitted()
        table = self._input_table(X, reset=False)
        return -self.score_columns(table)["anomaly_score"]

    def decision_function(self, X) -> np.ndarray:
        """``score_samples(X) - offset_``: negative for the rows flagged as anomalies."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """-1 for anomalies (anomaly score above the threshold), 1 for normal rows."""
        return np.where(self.decision_function(X) < 0, -1, 1)

    @property
    def offset_(self) -> float:
        """The threshold on ``score_samples``: minus the anomaly-score threshold."""
        self._check_fitted()
        return -self.threshold_

    def _check_fitted(self) -> None:
        try:
            check_is_fitted(self, msg=_NOT_FITTED)
        except NotFittedError:
            raise NotFittedYet(_NOT_FITTED) from None

    def _input_table(self, X, *, reset: bool, keep_frame: bool = False):
        """``X`` as an Arrow table (a pandas frame as it is, with ``keep_frame``, so
        that ``score`` keeps its index). Tables and frames keep their column names
        and types; arrays are checked by scikit-learn and named x0, x1, ..."""
        if isinstance(X, (pd.DataFrame, pa.Table)):
            if reset:
                self._remember_columns(list(X.columns) if isinstance(X, pd.DataFrame)
                                       else X.column_names)
            return X if keep_frame else to_arrow(X)
        X = validate_data(self, X, reset=reset, dtype=None, accept_sparse=False,
                          ensure_all_finite="allow-nan",
                          ensure_min_samples=MIN_TRAINING_ROWS if reset else 1)
        names = [f"x{i}" for i in range(X.shape[1])]
        if X.dtype.kind == "O":  # text, or numbers held as objects: by value, per column
            return to_arrow(pd.DataFrame(X, columns=names))
        return pa.table({name: np.ascontiguousarray(X[:, i]) for i, name in enumerate(names)})

    def _remember_columns(self, columns: list) -> None:
        self.n_features_in_ = len(columns)
        if all(isinstance(name, str) for name in columns):
            self.feature_names_in_ = np.asarray(columns, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_


def _known_input(known, parameter: str = "known_anomalies"):
    """Confirmed rows (``parameter``: known_anomalies or known_normals) as Detector.fit
    takes them: a table stays a table, a 1-D boolean array is a mask over the training
    rows, and a 2-D array is rows named x0, x1, ... as numpy input is."""
    if known is None or isinstance(known, (pd.DataFrame, pa.Table)):
        return known
    values = np.asarray(known)
    if values.ndim == 1 and values.dtype == bool:
        return values
    if values.ndim == 2:
        names = [f"x{i}" for i in range(values.shape[1])]
        return to_arrow(pd.DataFrame(values, columns=names))
    raise InputError(f"{parameter} must be a table of confirmed rows, a 2-D array of "
                     f"them or a boolean mask over the training rows (got an array of "
                     f"shape {values.shape} and type {values.dtype})")
