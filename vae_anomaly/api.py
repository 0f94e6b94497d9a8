"""File-level operations, one per CLI command: ``fit_file``, ``score_file``,
``describe_model``. Each validates its paths, calls the detector and returns a
plain result; none prints.

Example:
    >>> result = fit_file("sample_data/train.csv", "model.vae", seed=0)   # doctest: +SKIP
    >>> score_file("sample_data/new.csv", "model.vae", output="scored.csv").flagged  # doctest: +SKIP
    57
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .artifact import FORMAT_NAME, FORMAT_VERSION
from .data import atomic_output, check_writable_destination, read_table
from .detector import SCORE_COLUMNS, FitSummary, VAEAnomalyDetector, load
from .errors import InputError, OutputError
from .preprocessing import NUMERIC
from .training import TrainingCallback


@dataclass
class FitResult:
    summary: FitSummary
    threshold: float
    notes: list[str]


@dataclass
class ScoreResult:
    rows: int
    flagged: int
    threshold: float
    output: Path | None  # None: written to stdout
    seconds: float


def fit_file(data, model_path, *, callbacks: Sequence[TrainingCallback] = (),
             **detector_options) -> FitResult:
    """Train on the CSV ``data`` and write the model file atomically to ``model_path``."""
    data, model_path = Path(data), Path(model_path)
    _refuse_same_file(data, model_path, "--model")
    check_writable_destination(model_path)
    frame = read_table(data)
    detector = VAEAnomalyDetector(**detector_options)
    detector.callbacks = list(callbacks)
    detector.fit(frame, source=data.name)
    detector.save(model_path)
    return FitResult(detector.summary_, detector.threshold_, detector.preprocessor_.notes)


def default_output_path(data: Path) -> Path:
    return data.with_name(f"{data.stem}.scored.csv")


def score_file(data, model_path, *, output: str | Path | None = None, seed: int | None = None,
               samples: int | None = None, threshold: float | None = None,
               device: str = "cpu") -> ScoreResult:
    """Score the CSV ``data``; write every input column plus the score columns.

    ``output`` is a path, ``"-"`` for stdout, or None for DATA.scored.csv beside DATA.
    """
    started = time.perf_counter()
    data = Path(data)
    destination = None if output == "-" else Path(output or default_output_path(data))
    if destination is not None:
        _refuse_same_file(data, destination, "--output")
        check_writable_destination(destination)
    detector = load(model_path)
    frame = read_table(data)
    clashes = [name for name in SCORE_COLUMNS if name in frame.columns]
    if clashes:
        raise InputError(f"{data.name} already has a column `{clashes[0]}` (is it an output of "
                         "score?); rename or drop that column")
    scores = detector.score(frame, samples=samples, seed=seed, threshold=threshold,
                            source=data.name, device=device)
    _write_csv(pd.concat([frame, scores], axis=1), destination)
    return ScoreResult(rows=len(frame), flagged=int(scores["is_anomaly"].sum()),
                       threshold=detector.threshold_ if threshold is None else threshold,
                       output=destination, seconds=time.perf_counter() - started)


def _write_csv(frame: pd.DataFrame, destination: Path | None) -> None:
    if destination is None:
        frame.to_csv(sys.stdout, index=False)
        return
    with atomic_output(destination) as stream:
        frame.to_csv(stream, index=False)


def _refuse_same_file(data: Path, destination: Path, option: str) -> None:
    if destination.exists() and data.exists() and destination.resolve() == data.resolve():
        raise OutputError(f"{option} {destination} is the input file itself; "
                          "choose another path so the input is not overwritten")


def describe_model(model_path) -> dict:
    """A JSON-compatible description of a model file, for ``vae-anomaly info``."""
    detector = load(model_path)
    meta = detector.metadata_
    training = dict(meta["training"])
    last = training["history"][training["best_epoch"] - 1] if training["history"] else {}
    training["final_losses"] = (
        f"validation loss {last.get('val_loss', float('nan')):.4g} = reconstruction "
        f"{last.get('val_reconstruction', float('nan')):.4g} + KL {last.get('val_kl', float('nan')):.4g}"
    )
    config = meta["config"]
    return {
        "path": str(model_path),
        "format": meta.get("format", FORMAT_NAME),
        "format_version": meta.get("format_version", FORMAT_VERSION),
        "created": meta["created"],
        "columns": [_describe_column(c) for c in meta["preprocessing"]["columns"]],
        "ignored_columns": meta["preprocessing"]["ignored"],
        "threshold": meta["threshold"],
        "fpr": meta["params"]["fpr"],
        "samples": meta["params"]["samples"],
        "seed": meta["params"]["seed"],
        "params": meta["params"],
        "architecture": config,
        "architecture_summary": (
            f"{sum(config['category_sizes']) + config['n_numeric'] + config['n_indicators']} inputs"
            f" -> {config['hidden_dims']} -> latent {config['latent_dim']}; "
            f"decoder variance per {config['decoder_variance']}"),
        "training": training,
        "versions": meta["versions"],
    }


def _describe_column(column: dict) -> dict:
    if column["kind"] == NUMERIC:
        details = (f"median {column['median']:.4g}, range [{column['min']:.4g}, "
                   f"{column['max']:.4g}], missing {column['missing_rate']:.1%}")
    else:
        details = f"{len(column['levels']) + len(column['rare_levels'])} levels"
    return {"name": column["name"], "kind": column["kind"], "details": details}
