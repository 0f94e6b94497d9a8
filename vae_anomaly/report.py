"""A self-contained HTML report on a model file and, optionally, a batch it scored.

``render_report`` returns one HTML document: the model's description, its
training curves, the calibration scores' histogram (beside the scored batch's)
and the top anomalies. Plots are inline SVG drawn here; the page loads nothing
from the network and runs no script, and every value from the data is escaped.

Example:
    >>> write_report("model.vae", "report.html", scored_path="scored.csv")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from .model_info import describe_model
from .calibration import calibration_source
from .data import atomic_output, read_table, refuse_same_file
from .detector import EXPLANATION_COLUMN, SCORE_COLUMNS, Detector
from .errors import InputError
from .loading import load

TRAIN_COLOUR, VALIDATION_COLOUR = "#3b6fb6", "#e07b39"
CALIBRATION_COLOUR, BATCH_COLOUR, THRESHOLD_COLOUR = "#3b6fb6", "#e07b39", "#c0392b"
OUTLIER_COLOUR = "#7c3aed"
MARKER_COLOUR, AXIS_COLOUR, GRID_COLOUR = "#6b7280", "#374151", "#e5e7eb"
CLIP_QUANTILES = (0.005, 0.995)
FENCE_IQR = 3.0  # the histogram's range stops this many IQRs beyond a sample's quartiles
OTHER_COLUMNS = 5
MAX_CELL_CHARS = 60

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#1f2937;background:#f3f4f6;margin:0}
main{max-width:1140px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:22px;margin:4px 0 0}h2{font-size:18px;margin:0 0 10px}
h3{font-size:15px;margin:14px 0 4px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:16px 20px;margin:16px 0}
.sub{color:#6b7280;margin:0 0 8px}.note{color:#4b5563;font-size:13px;margin:8px 0 0}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));
 gap:4px 24px;margin:8px 0}
.facts div{overflow-wrap:anywhere}.facts b{color:#374151}
.charts{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;flex:1 1 340px;min-width:300px}
figcaption{font-weight:600;font-size:13px;margin:0 0 2px;color:#374151}
svg{display:block;max-width:100%;height:auto}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border-bottom:1px solid #e5e7eb;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f9fafb;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.flagged td{background:#fef2f2}
.scroll{overflow-x:auto}
.cell{display:inline-block;max-width:18em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.expl{display:flex;align-items:center;gap:6px;white-space:nowrap;font-size:12px}
.bar{display:inline-block;width:60px;height:8px;background:#f3f4f6;border-radius:2px}
.bar span{display:block;height:8px;background:#c0392b;border-radius:2px}
"""
# No script, nothing from the network: even a value that escaped escaping could not run.
CSP = "default-src 'none'; style-src 'unsafe-inline'"


# ----- public API ---------------------------------------------------------------------
def render_report(model_path, scored_path=None, *, top: int = 20) -> str:
    """One self-contained HTML document on ``model_path`` and, optionally, the file
    ``scored_path`` written by ``vae-anomaly score``, listing its ``top`` anomalies."""
    if top < 0:
        raise InputError(f"--top must be zero or more (got {top})")
    info = describe_model(model_path)
    detector = load(model_path, estimator=False)
    scored = None if scored_path is None else _read_scored(Path(scored_path))
    threshold = detector.threshold_
    sections = [_model_section(info, detector, scored_path, scored),
                _training_section(info["training"]),
                _calibration_section(detector, scored)]
    if scored is not None:
        sections.append(_top_section(scored, top, threshold))
    return _document(f"vae-anomaly report: {model_path}", sections)


def write_report(model_path, output_path, scored_path=None, top: int = 20) -> Path:
    """Render the report and write it atomically (UTF-8) to ``output_path``."""
    output_path = Path(output_path)
    refuse_same_file(Path(model_path), output_path, "--output", "model")
    if scored_path is not None:
        refuse_same_file(Path(scored_path), output_path, "--output")
    text = render_report(model_path, scored_path, top=top)
    with atomic_output(output_path, "wb") as stream:
        stream.write(text.encode("utf-8"))
    return output_path


# ----- reading the scored file --------------------------------------------------------
def _read_scored(path: Path) -> pd.DataFrame:
    """The scored file as a DataFrame whose anomaly_score (and p_value) are floats."""
    table = read_table(path)
    if "anomaly_score" not in table.column_names:
        raise InputError(f"{path.name} has no anomaly_score column; pass a file written by "
                         "`vae-anomaly score`")
    frame = table.to_pandas().reset_index(drop=True)
    for column in ("anomaly_score", "p_value"):
        if column in frame.columns:
            frame[column] = _numbers(frame[column], column, path)
    return frame


def _numbers(values: pd.Series, column: str, path: Path) -> pd.Series:
    """The column as floats (NaN where empty); an error naming the first cell that is text."""
    numbers = pd.to_numeric(values, errors="coerce")
    empty = values.isna() | values.astype(str).str.strip().str.lower().isin(["", "nan"])
    bad = numbers.isna() & ~empty
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{path.name}: {column} in row {row + 1} is not a number "
                         f"({str(values.iloc[row])[:40]!r}); pass a file written by "
                         "`vae-anomaly score`")
    return numbers.astype(float)


# ----- document and sections ----------------------------------------------------------
def _document(title: str, sections: Sequence[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>{escape(title)}</h1>\n"
            + "\n".join(sections) + "\n</main>\n</body>\n</html>\n")


def _section(section_id: str, heading: str, body: str) -> str:
    return f'<section id="{section_id}">\n<h2>{escape(heading)}</h2>\n{body}\n</section>'


def _model_section(info: dict, detector: Detector, scored_path,
                   scored: pd.DataFrame | None) -> str:
    training, versions = info["training"], info["versions"]
    facts = {
        "Created": info["created"],
        "Score": f"{detector.score_kind} (negative ELBO)" if detector.score_kind == "elbo"
        else f"{detector.score_kind} (importance-weighted bound)",
        "Threshold": f"{info['threshold']:.6g} ({calibration_source(training)})",
        **_threshold_target(info),
        "Training rows": f"{training['train_rows']} + {training['validation_rows']} held out",
        "Training rows judged anomalous": info["training_outliers"],
        "Known anomalies": info["known_anomalies"],
        "Verdicts": info["verdicts"],
        "Epochs": f"{training['epochs_run']} run, best {training['best_epoch']}"
        + (" (stopped early)" if training.get("stopped_early") else ""),
        "Architecture": info["architecture_summary"],
        "Versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }
    if scored is not None:
        facts.update(_batch_facts(Path(scored_path), scored, detector.threshold_))
    body = (f'<p class="sub">{escape(str(info["path"]))}: {escape(info["format"])} format '
            f'{escape(str(info["format_version"]))}</p>\n' + _facts(facts))
    return _section("model", "Model", body + "\n" + _columns_table(info))


def _threshold_target(info: dict) -> dict:
    """The rate the threshold aims at: the target false-positive rate, or nothing where
    a contamination share set it (the Threshold line gives the share)."""
    if info["training"].get("share_threshold"):
        return {}
    return {"Target false-positive rate": f"{info['fpr']:.3g}"}


def _batch_facts(path: Path, scored: pd.DataFrame, threshold: float) -> dict:
    above = int(_flags(scored, threshold).sum())
    share = f" ({above / len(scored):.1%})" if len(scored) else ""
    return {"Scored file": path.name, "Scored rows": f"{len(scored)}",
            "Flagged": f"{above}{share}"}


def _flags(scored: pd.DataFrame, threshold: float) -> np.ndarray:
    """What `score` decided (its is_anomaly, which honours --threshold and --score);
    the model's own threshold only for a file without that column."""
    if "is_anomaly" in scored.columns:
        return pd.to_numeric(scored["is_anomaly"], errors="coerce").fillna(0).to_numpy() == 1
    return scored["anomaly_score"].to_numpy(dtype=float) > threshold


def _facts(facts: dict) -> str:
    items = "".join(f'<div title="{escape(str(v))}"><b>{escape(k)}:</b> {escape(str(v))}</div>'
                    for k, v in facts.items())
    return f'<div class="facts">{items}</div>'


def _columns_table(info: dict) -> str:
    rows = [[c["name"], c["kind"], c["details"]] for c in info["columns"]]
    rows += [[name, "ignored", reason] for name, reason in info["ignored_columns"].items()]
    return "<h3>Columns</h3>\n" + _table(["column", "kind", "details"], rows)


def _table(header: Sequence[str], rows: Sequence[Sequence], numeric: Sequence[int] = (),
           row_classes: Sequence[str] | None = None, raw: Sequence[int] = ()) -> str:
    """An HTML table; cells are escaped text unless their column index is in ``raw``."""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(
            f'<td{" class=num" if j in numeric else ""}>'
            f'{cell if j in raw else escape(str(cell))}</td>' for j, cell in enumerate(row))
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


# ----- training curves ----------------------------------------------------------------
def _training_section(training: dict) -> str:
    history = training.get("history") or []
    if not history:
        return _section("training", "Training curves",
                        '<p class="note">This model file holds no training history.</p>')
    best = training["best_epoch"]
    charts = [("Loss", "loss", "loss per row"),
              ("Reconstruction (−log p(x|z))", "reconstruction", "nats per row"),
              ("KL divergence", "kl", "nats per row")]
    figures = [_figure(title, _svg_line_chart(
        _curves(history, key), x_label="epoch", y_label=unit,
        marker=(best, f"best epoch {best}"), title=title)) for title, key, unit in charts]
    betas = [h.get("beta") for h in history if h.get("beta") is not None]
    note = f"Per epoch, averaged over rows. {_beta_note(betas)}The weights of the epoch " \
        f"with the lowest validation loss ({best}) were kept."
    body = f'<div class="charts">{"".join(figures)}</div>\n<p class="note">{escape(note)}</p>'
    return _section("training", "Training curves", body)


def _beta_note(betas: list[float]) -> str:
    if not betas:
        return ""
    if min(betas) == max(betas):
        return f"Loss = reconstruction + β·KL with β = {betas[0]:.3g}. "
    return f"Loss = reconstruction + β·KL with β warming up from {min(betas):.3g} to " \
        f"{max(betas):.3g}. "


def _curves(history: list[dict], key: str) -> dict:
    epochs = [h["epoch"] for h in history]
    return {"train": (epochs, [h.get(f"train_{key}", math.nan) for h in history]),
            "validation": (epochs, [h.get(f"val_{key}", math.nan) for h in history])}


def _figure(caption: str, svg: str) -> str:
    return f"<figure><figcaption>{escape(caption)}</figcaption>{svg}</figure>"


# ----- SVG primitives -----------------------------------------------------------------
@dataclass
class _Plot:
    """Maps data coordinates to pixels inside an SVG's margins."""

    width: int
    height: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    left: int = 58
    right: int = 18
    top: int = 30
    bottom: int = 42

    def x(self, value: float) -> float:
        lo, hi = self.x_range
        return self.left + (value - lo) / (hi - lo) * (self.width - self.left - self.right)

    def y(self, value: float) -> float:
        lo, hi = self.y_range
        return self.height - self.bottom - (value - lo) / (hi - lo) * (
            self.height - self.top - self.bottom)


def _nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> np.ndarray:
    """Round tick values spanning [lo, hi] (the range is widened to whole steps)."""
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw * 0.999)
    if integer:
        step = max(1.0, round(step))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return np.arange(first, last + 1) * step


def _tick_label(value: float, step: float) -> str:
    if abs(value) >= 1e5 or step < 1e-3:
        return f"{value:.3g}"
    decimals = next((d for d in range(7) if math.isclose(
        step * 10 ** d, round(step * 10 ** d), rel_tol=1e-6)), 6)
    return f"{value:.{decimals}f}"


def _text(x: float, y: float, text: str, anchor: str = "middle", size: int = 11,
          fill: str = AXIS_COLOUR, extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
            f'fill="{fill}"{extra}>{escape(str(text))}</text>')


def _axes(plot: _Plot, x_ticks, y_ticks, x_label: str, y_label: str) -> list[str]:
    parts = []
    x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 1.0
    y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1.0
    bottom, top = plot.y(plot.y_range[0]), plot.y(plot.y_range[1])
    left, right = plot.x(plot.x_range[0]), plot.x(plot.x_range[1])
    for value in y_ticks:
        y = plot.y(value)
        parts.append(f'<line x1="{left:.1f}" x2="{right:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="{GRID_COLOUR}"/>')
        parts.append(_text(left - 6, y + 4, _tick_label(value, y_step), anchor="end"))
    for value in x_ticks:
        x = plot.x(value)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom:.1f}" y2="{bottom + 4:.1f}" '
                     f'stroke="{AXIS_COLOUR}"/>')
        parts.append(_text(x, bottom + 16, _tick_label(value, x_step)))
    parts.append(f'<path d="M{left:.1f},{top:.1f}V{bottom:.1f}H{right:.1f}" fill="none" '
                 f'stroke="{AXIS_COLOUR}"/>')
    parts.append(_text((left + right) / 2, plot.height - 6, x_label))
    middle = (top + bottom) / 2
    parts.append(_text(14, middle, y_label,
                       extra=f' transform="rotate(-90 14 {middle:.1f})"'))
    return parts


def _legend(plot: _Plot, items: Sequence[tuple[str, str, str]]) -> list[str]:
    """One row of (label, colour, 'line'|'box'|'dash') entries above the plot area."""
    parts, x, y = [], float(plot.left), 14.0
    for label, colour, style in items:
        if style == "box":
            parts.append(f'<rect x="{x:.1f}" y="{y - 8:.1f}" width="14" height="10" '
                         f'fill="{colour}" fill-opacity="0.55" stroke="{colour}"/>')
        else:
            dash = ' stroke-dasharray="4 3"' if style == "dash" else ""
            parts.append(f'<line x1="{x:.1f}" x2="{x + 16:.1f}" y1="{y - 3:.1f}" '
                         f'y2="{y - 3:.1f}" stroke="{colour}" stroke-width="2.5"{dash}/>')
        parts.append(_text(x + 21, y + 1, label, anchor="start"))
        x += 21 + 6.5 * len(label) + 16
    return parts


def _svg(plot: _Plot, title: str, parts: Sequence[str]) -> str:
    return (f'<svg width="{plot.width}" height="{plot.height}" '
            f'viewBox="0 0 {plot.width} {plot.height}" role="img" '
            f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
            + "".join(parts) + "</svg>")


def _vertical_marker(plot: _Plot, x_value: float, label: str, colour: str) -> list[str]:
    x, top, bottom = plot.x(x_value), plot.y(plot.y_range[1]), plot.y(plot.y_range[0])
    anchor, shift = ("end", -4) if x > (plot.left + plot.width - plot.right) / 2 + 40 \
        else ("start", 4)
    return [f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" y2="{bottom:.1f}" '
            f'stroke="{colour}" stroke-width="1.5" stroke-dasharray="5 4"/>',
            _text(x + shift, top + 12, label, anchor=anchor, fill=colour,  # white halo
                  extra=' font-weight="600" stroke="#fff" stroke-width="3" '
                        'paint-order="stroke"')]


def _finite_points(xs, ys) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    return xs[keep], ys[keep]


def _svg_line_chart(series: dict[str, tuple[Sequence[float], Sequence[float]]], *,
                    x_label: str, y_label: str, marker: tuple[float, str] | None = None,
                    title: str = "", width: int = 360, height: int = 250,
                    colours: Sequence[str] = (TRAIN_COLOUR, VALIDATION_COLOUR)) -> str:
    """A line chart of ``series`` (name -> (xs, ys)) with axes, ticks, a legend on top
    and, optionally, a dashed vertical ``marker`` (x, label)."""
    points = {name: _finite_points(*xy) for name, xy in series.items()}
    all_x = np.concatenate([p[0] for p in points.values()] + [np.zeros(0)])
    all_y = np.concatenate([p[1] for p in points.values()] + [np.zeros(0)])
    if not len(all_x):
        all_x, all_y = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    x_lo, x_hi = all_x.min(), all_x.max()
    pad = (x_hi - x_lo) * 0.03 if x_hi > x_lo else 0.5
    x_ticks = _nice_ticks(x_lo, x_hi, count=6, integer=True)
    x_ticks = x_ticks[(x_ticks >= x_lo - pad) & (x_ticks <= x_hi + pad)]
    y_ticks = _nice_ticks(all_y.min(), all_y.max(), count=5)
    plot = _Plot(width, height, (x_lo - pad, x_hi + pad), (y_ticks[0], y_ticks[-1]))
    parts = _axes(plot, x_ticks, y_ticks, x_label, y_label)
    if marker is not None:
        parts += _vertical_marker(plot, marker[0], marker[1], MARKER_COLOUR)
    legend = []
    for (name, (xs, ys)), colour in zip(points.items(), _cycle(colours)):
        parts.append(_polyline(plot, xs, ys, colour))
        legend.append((name, colour, "line"))
    return _svg(plot, title or y_label, parts + _legend(plot, legend))


def _cycle(colours: Sequence[str]):
    while True:
        yield from colours


def _polyline(plot: _Plot, xs: np.ndarray, ys: np.ndarray, colour: str) -> str:
    coords = " ".join(f"{plot.x(x):.1f},{plot.y(y):.1f}" for x, y in zip(xs, ys))
    dots = "".join(f'<circle cx="{plot.x(x):.1f}" cy="{plot.y(y):.1f}" r="2.2" fill="{colour}"/>'
                   for x, y in zip(xs, ys)) if len(xs) <= 40 else ""
    return (f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2" '
            f'stroke-linejoin="round"/>{dots}')


# ----- calibration histogram ----------------------------------------------------------
@dataclass
class _Histogram:
    edges: np.ndarray
    densities: dict[str, np.ndarray]  # per series: share of ALL its points per unit width
    below: dict[str, int]
    above: dict[str, int]


def _histogram(samples: dict[str, np.ndarray], threshold: float,
               bins: int | None = None) -> _Histogram:
    """Shared bins over every sample's bulk and the threshold (see ``_bulk_range``); by
    default about 2·sqrt(n) bins for the smallest non-empty sample (12 to 60)."""
    if bins is None:
        bins = _default_bins(samples)
    ranges = [_bulk_range(s) for s in samples.values() if len(s)] + [(threshold, threshold)]
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    pad = (hi - lo) * 0.03 if hi > lo else max(abs(hi) * 0.05, 0.5)
    edges = np.linspace(lo - pad, hi + pad, bins + 1)
    width = edges[1] - edges[0]
    densities, below, above = {}, {}, {}
    for name, values in samples.items():
        counts = np.histogram(values, bins=edges)[0]
        densities[name] = counts / (max(len(values), 1) * width)
        below[name] = int(np.sum(values < edges[0]))
        above[name] = int(np.sum(values > edges[-1]))
    return _Histogram(edges, densities, below, above)


def _default_bins(samples: dict[str, np.ndarray]) -> int:
    """About 2·sqrt(n) bins for the smallest non-empty sample, 12 to 60."""
    smallest = min((len(s) for s in samples.values() if len(s)), default=0)
    return int(np.clip(round(2 * math.sqrt(smallest)), 12, 60))


def _bulk_range(values: np.ndarray) -> tuple[float, float]:
    """A sample's robust range: its 0.5%–99.5% quantiles, cut at FENCE_IQR interquartile
    ranges beyond its quartiles, so that a long tail of anomalies does not squash the
    bulk into a few bins (a shifted batch still gets a range of its own)."""
    q_lo, q1, q3, q_hi = np.quantile(values, (CLIP_QUANTILES[0], 0.25, 0.75, CLIP_QUANTILES[1]))
    fence = FENCE_IQR * (q3 - q1)
    return float(max(q_lo, q1 - fence)), float(min(q_hi, q3 + fence))


def _svg_histogram(hist: _Histogram, threshold: float, *, title: str = "",
                   colours: Sequence[str] = (CALIBRATION_COLOUR, BATCH_COLOUR),
                   width: int = 1000, height: int = 320) -> str:
    """Overlaid density histograms on shared bins, with the threshold as a red line."""
    top_density = max((float(d.max()) for d in hist.densities.values() if len(d)), default=1.0)
    x_ticks = _nice_ticks(hist.edges[0], hist.edges[-1], count=8)
    x_ticks = x_ticks[(x_ticks >= hist.edges[0]) & (x_ticks <= hist.edges[-1])]
    y_ticks = _nice_ticks(0.0, top_density * 1.12 or 1.0, count=5)
    plot = _Plot(width, height, (hist.edges[0], hist.edges[-1]), (0.0, y_ticks[-1]), left=64)
    parts = _axes(plot, x_ticks, y_ticks, "anomaly score", "density")
    legend = []
    for (name, density), colour in zip(hist.densities.items(), _cycle(colours)):
        parts += _bars(plot, hist.edges, density, colour)
        outside = hist.below[name] + hist.above[name]
        legend.append((f"{name}, {outside} outside the range" if outside else name, colour,
                       "box"))
    parts += _vertical_marker(plot, threshold, f"threshold {threshold:.4g}", THRESHOLD_COLOUR)
    legend.append(("threshold", THRESHOLD_COLOUR, "dash"))
    return _svg(plot, title or "score histogram", parts + _legend(plot, legend))


def _bars(plot: _Plot, edges: np.ndarray, density: np.ndarray, colour: str) -> list[str]:
    base = plot.y(0.0)
    bars = []
    for left, right, value in zip(edges[:-1], edges[1:], density):
        if value <= 0:
            continue
        x, y = plot.x(left), min(plot.y(value), base - 2)  # a lone point stays visible
        bars.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{plot.x(right) - x:.1f}" '
                    f'height="{base - y:.1f}"/>')
    return [f'<g fill="{colour}" fill-opacity="0.45" stroke="{colour}" stroke-width="1">'
            + "".join(bars) + "</g>"]


def _calibration_section(detector: Detector, scored: pd.DataFrame | None) -> str:
    threshold = detector.threshold_
    samples = {"calibration (held-out normal rows)":
               np.asarray(detector.calibration_scores_[detector.score_kind], dtype=float)}
    if scored is not None:
        values = scored["anomaly_score"].to_numpy(dtype=float)
        samples["scored batch"] = values[np.isfinite(values)]
    # The bins suit the samples above; a handful of outliers would make them coarse.
    bins = _default_bins(samples)
    outliers = detector.training_outliers_.scores
    if len(outliers):
        samples["training rows judged anomalous"] = np.asarray(outliers, dtype=float)
    hist = _histogram(samples, threshold, bins)
    svg = _svg_histogram(hist, threshold, title="Anomaly score densities",
                         colours=(CALIBRATION_COLOUR, BATCH_COLOUR, OUTLIER_COLOUR)
                         if scored is not None else (CALIBRATION_COLOUR, OUTLIER_COLOUR))
    body = (_figure("Anomaly score: calibration vs scored batch" if scored is not None
                    else "Anomaly score on the calibration rows", svg)
            + _score_stats(samples, threshold) + _clip_note(hist, samples, scored))
    return _section("calibration", "Calibration", body)


def _score_stats(samples: dict[str, np.ndarray], threshold: float) -> str:
    rows = []
    for name, values in samples.items():
        if not len(values):
            rows.append([name, 0, "", "", "", ""])
            continue
        above = int(np.sum(values > threshold))
        rows.append([name, len(values), f"{np.median(values):.4g}",
                     f"{np.quantile(values, 0.99):.4g}", f"{values.max():.4g}",
                     f"{above} ({above / len(values):.1%})"])
    return _table(["scores", "rows", "median", "99th percentile", "max", "above threshold"],
                  rows, numeric=(1, 2, 3, 4, 5))


def _clip_note(hist: _Histogram, samples: dict, scored: pd.DataFrame | None) -> str:
    lo, hi = CLIP_QUANTILES
    beyond = "; ".join(f"{name}: {hist.below[name]} below, {hist.above[name]} above"
                       for name in samples)
    note = ("Same bins for both; densities, so batches of different sizes compare. "
            if len(samples) > 1 else "Density of the held-out normal rows' scores. ")
    note += (f"The x-range covers the threshold and each sample's bulk: its {lo:.1%}–{hi:.1%} "
             f"quantiles, cut at {FENCE_IQR:g} interquartile ranges beyond its quartiles. "
             f"Points outside it: {beyond}.")
    if scored is not None:
        missing = int(np.sum(~np.isfinite(scored["anomaly_score"].to_numpy(dtype=float))))
        if missing:
            note += f" {missing} scored row(s) have no finite score and are not drawn."
    return f'<p class="note">{escape(note)}</p>'


# ----- top anomalies ------------------------------------------------------------------
def _top_section(scored: pd.DataFrame, top: int, threshold: float) -> str:
    if not len(scored):
        return _section("top-anomalies", "Top anomalies",
                        '<p class="note">The scored file has no rows.</p>')
    order = scored["anomaly_score"].sort_values(ascending=False, kind="stable",
                                                na_position="last")
    rows = scored.loc[order.index[:top]]
    others = [c for c in scored.columns
              if c not in SCORE_COLUMNS and c != EXPLANATION_COLUMN][:OTHER_COLUMNS]
    header = ["#", "row", "anomaly_score"]
    header += ["p_value"] if "p_value" in scored.columns else []
    header += ["top columns"] if EXPLANATION_COLUMN in scored.columns else []
    raw = {len(header) - 1} if EXPLANATION_COLUMN in scored.columns else set()
    numeric = set(range(len(header))) - raw
    body = [_top_row(rank, index, row, others, scored.columns)
            for rank, (index, row) in enumerate(rows.iterrows(), start=1)]
    flagged = ["flagged" if flag else "" for flag in _flags(rows, threshold)]
    table = _table(header + others, body, numeric=numeric, row_classes=flagged,
                   raw=raw | set(range(len(header), len(header) + len(others))))
    intro = (f'<p class="sub">The {len(rows)} highest-scoring of {len(scored)} rows '
             f"(row 1 is the file's first data row); rows that `score` flagged are shaded "
             f"(the model's threshold is {threshold:.4g}).</p>")
    return _section("top-anomalies", "Top anomalies", intro + table)


def _top_row(rank: int, index, row: pd.Series, others: list[str], columns) -> list:
    cells = [rank, int(index) + 1, _number(row["anomaly_score"])]
    if "p_value" in columns:
        cells.append(_number(row["p_value"]))
    if EXPLANATION_COLUMN in columns:
        cells.append(_explanation(row[EXPLANATION_COLUMN]))
    return cells + [_cell(row[c]) for c in others]


def _number(value) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.4g}"


def _cell(value) -> str:
    """An input value as escaped HTML: cut to MAX_CELL_CHARS, the full text on hover."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value)
    short = text if len(text) <= MAX_CELL_CHARS else text[:MAX_CELL_CHARS - 1] + "…"
    return f'<span class="cell" title="{escape(text)}">{escape(short)}</span>'


def _explanation(value) -> str:
    """'amount:0.62;country:0.21' as small inline bars; anything else as escaped text."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or not str(value):
        return ""
    items = []
    for part in str(value).split(";"):
        name, _, share = part.rpartition(":")
        try:
            fraction = min(max(float(share), 0.0), 1.0)
        except ValueError:
            return _cell(value)
        items.append(f'<div class="expl"><span class="bar"><span style="width:'
                     f'{fraction * 100:.0f}%"></span></span>{escape(name[:40])} '
                     f"{fraction:.2f}</div>")
    return "".join(items)
