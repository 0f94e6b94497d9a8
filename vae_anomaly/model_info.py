"""``describe_model``: what `vae-anomaly info` shows of a model file. It reads the
file with every check ``load`` makes (loading.read_checked) but without torch, so
that `info` answers at once."""

from __future__ import annotations

from .artifact import FORMAT_NAME, FORMAT_VERSION
from .calibration import threshold_source
from .defaults import draw_plan
from .fit_summary import VERDICT_COUNTS, known_anomalies_text, verdicts_text
from .loading import read_checked
from .preprocessing import NUMERIC


def describe_model(model_path) -> dict:
    """A JSON-compatible description of a model file, for ``vae-anomaly info``."""
    meta = read_checked(model_path).metadata
    # The dismissals' counts are left out of files fitted without any: 0 here.
    training = {**dict.fromkeys(VERDICT_COUNTS, 0), **meta["training"]}
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
        "threshold_source": threshold_source(training, meta["params"]["fpr"]),
        "fpr": meta["params"]["fpr"],
        "samples": meta["params"]["samples"],
        # The score's Monte Carlo draws (scoring.py): sobol, or iid for older files.
        "draws": training.get("draws", "iid"),
        "draws_summary": draws_summary(meta["params"]["samples"], training.get("draws", "iid")),
        "seed": meta["params"]["seed"],
        "params": meta["params"],
        "architecture": config,
        "architecture_summary": (
            f"{sum(config['category_sizes']) + config['n_numeric'] + config['n_indicators']} inputs"
            f" -> {config['hidden_dims']} -> latent {config['latent_dim']}; "
            f"decoder variance per {config['decoder_variance']}"),
        "training": training,
        "training_outliers": _outliers_summary(training, meta["params"]),
        "known_anomalies": known_anomalies_text(training),
        # Anomalies confirmed, rows dismissed as normal, rows reviewed.
        "verdicts": verdicts_text(training),
        "versions": meta["versions"],
    }


def draws_summary(samples: int, draws: str) -> str:
    """How a row's K draws are made, in words."""
    points, randomizations = draw_plan(samples, draws)
    if points == 1:
        return f"{randomizations} independent draws"
    return (f"{points * randomizations} decoder passes: {randomizations} randomizations "
            f"of {points} Sobol points")


def _outliers_summary(training: dict, params: dict) -> str:
    """The training rows robust training judged anomalous, in words, and the setting
    (model files from before it: none, and no setting)."""
    count = training.get("training_outliers", 0)
    setting = params.get("contamination", 0)
    return (f"{count} of {training['rows']} training-file rows "
            f"({100 * count / max(training['rows'], 1):.1f}%; --contamination {setting})")


def _describe_column(column: dict) -> dict:
    if column["kind"] == NUMERIC:
        details = (f"median {column['median']:.4g}, range [{column['min']:.4g}, "
                   f"{column['max']:.4g}], missing {column['missing_rate']:.1%}")
    else:
        details = f"{len(column['levels']) + len(column['rare_levels'])} levels"
    # Model files from before logical types (2026-12-07) have none: null.
    return {"name": column["name"], "kind": column["kind"], "logical": column.get("logical"),
            "details": details}
