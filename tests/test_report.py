"""The HTML report: its sections, escaping, self-containment, and a real rendering."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vae_anomaly import load
from vae_anomaly.api import score_file
from vae_anomaly.errors import InputError
from vae_anomaly.report import _histogram, render_report, write_report

SECTION_IDS = ("model", "training", "calibration", "top-anomalies")


@pytest.fixture(scope="module")
def scored_csv(tiny_dir, tiny_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report") / "s.csv"
    score_file(tiny_dir / "new.csv", tiny_model, output=path, explain=2)
    return path


def read_scored(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


class _Tables(HTMLParser):
    """Collects the text of each table row inside the <section> with a given id."""

    def __init__(self, section_id: str):
        super().__init__()
        self.section_id, self.inside, self.depth = section_id, False, 0
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.depth += 1
            self.inside = self.inside or dict(attrs).get("id") == self.section_id
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag == "section":
            self.inside = False
        elif self.inside and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def table_rows(html: str, section_id: str) -> list[list[str]]:
    parser = _Tables(section_id)
    parser.feed(html)
    return parser.rows


def test_report_has_every_section_the_threshold_and_plots(tiny_model, scored_csv):
    html = render_report(tiny_model, scored_csv, top=7)
    for section_id in SECTION_IDS:
        assert f'<section id="{section_id}">' in html
    for heading in ("Training curves", "Calibration", "Top anomalies"):
        assert f"<h2>{heading}</h2>" in html
    detector = load(tiny_model)
    assert f"{detector.threshold_:.6g}" in html
    assert f"threshold {detector.threshold_:.4g}" in html  # the histogram's marker
    assert html.count("<svg") >= 3
    assert "best epoch" in html and "scored batch" in html
    for column in ("x", "y", "amount", "colour", "member"):
        assert f"<td>{column}</td>" in html  # the columns table


def test_report_is_self_contained(tiny_model, scored_csv):
    html = render_report(tiny_model, scored_csv).lower()
    assert html.startswith("<!doctype html>")
    for reference in ("http://", "https://", "<script", "<link", "src=", "@import", "url("):
        assert reference not in html


def test_top_anomalies_are_the_highest_scores_in_descending_order(tiny_model, scored_csv):
    html = render_report(tiny_model, scored_csv, top=7)
    header, *rows = table_rows(html, "top-anomalies")
    assert header[:5] == ["#", "row", "anomaly_score", "p_value", "top columns"]
    assert header[5:] == ["id", "x", "y", "amount", "colour"]  # at most 5 input columns
    assert len(rows) == 7
    scores = [float(row[2]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    expected = pd.to_numeric(read_scored(scored_csv)["anomaly_score"]).nlargest(7)
    assert [int(row[1]) for row in rows] == [i + 1 for i in expected.index]
    assert all(re.fullmatch(r"(\S+ \d\.\d\d ?)+", row[4]) for row in rows)  # name share bars
    assert 'class="bar"' in html


def test_values_from_the_data_are_escaped(tiny_model, scored_csv, tmp_path):
    frame = read_scored(scored_csv)
    first = pd.to_numeric(frame["anomaly_score"]).idxmax()
    frame.loc[first, "id"] = "<script>alert(1)</script>"
    frame.loc[first, "colour"] = '"><img src=x onerror=alert(2)>'
    frame.loc[first, "top_columns"] = "<b>evil</b>:0.90;x:0.10"
    frame = frame.rename(columns={"y": "y<script>"})
    hostile = tmp_path / "hostile.csv"
    frame.to_csv(hostile, index=False)
    html = render_report(tiny_model, hostile, top=3)
    assert "<script" not in html.lower()
    assert "<img" not in html and "<b>evil" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;evil&lt;/b&gt;" in html and "y&lt;script&gt;" in html


def test_report_without_a_scored_file_has_training_and_calibration(tiny_model):
    html = render_report(tiny_model)
    assert '<section id="training">' in html and '<section id="calibration">' in html
    assert "top-anomalies" not in html and "scored batch" not in html
    assert html.count("<svg") >= 3


def test_points_beyond_the_clipped_range_are_counted(tiny_model, scored_csv, tmp_path):
    def beyond(html: str) -> tuple[int, int]:
        found = re.search(r"scored batch: (\d+) below, (\d+) above", html)
        return int(found.group(1)), int(found.group(2))

    below, above = beyond(render_report(tiny_model, scored_csv))
    frame = read_scored(scored_csv)
    lowest = frame["anomaly_score"].astype(float).idxmin()  # inside the bulk before
    frame.loc[lowest, "anomaly_score"] = "1e6"
    extreme = tmp_path / "extreme.csv"
    frame.to_csv(extreme, index=False)
    assert beyond(render_report(tiny_model, extreme)) == (below, above + 1)


def test_histogram_shares_bins_includes_the_threshold_and_uses_densities():
    rng = np.random.default_rng(0)
    samples = {"small": rng.normal(size=100), "large": rng.normal(1, 1, size=10_000)}
    hist = _histogram(samples, threshold=7.0)
    assert hist.edges[0] < hist.edges[-1] and hist.edges[-1] > 7.0  # the threshold is in
    assert hist.below["small"] + hist.below["large"] > 0  # clipped at a low quantile
    width = np.diff(hist.edges)[0]
    for name, values in samples.items():
        inside = len(values) - hist.below[name] - hist.above[name]
        assert np.isclose(hist.densities[name].sum() * width, inside / len(values))


def test_parquet_scored_file_and_write_report(tiny_dir, tiny_model, tmp_path):
    scored = tmp_path / "s.parquet"
    score_file(tiny_dir / "new.csv", tiny_model, output=scored)
    output = write_report(tiny_model, tmp_path / "report.html", scored_path=scored, top=5)
    assert output == tmp_path / "report.html"
    html = output.read_text(encoding="utf-8")
    assert html == render_report(tiny_model, scored, top=5)
    assert len(table_rows(html, "top-anomalies")) == 1 + 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "s.parquet"]


def test_scored_file_without_anomaly_score_is_an_input_error(tiny_dir, tiny_model):
    message = "new.csv has no anomaly_score column; pass a file written by `vae-anomaly score`"
    with pytest.raises(InputError, match=re.escape(message)):
        render_report(tiny_model, tiny_dir / "new.csv")
    with pytest.raises(InputError, match="--top must be zero or more"):
        render_report(tiny_model, top=-1)


def test_a_score_that_is_not_a_number_is_an_input_error(tiny_model, scored_csv, tmp_path):
    frame = read_scored(scored_csv)
    frame.loc[2, "anomaly_score"] = "high"
    broken = tmp_path / "broken.csv"
    frame.to_csv(broken, index=False)
    with pytest.raises(InputError, match="broken.csv: anomaly_score in row 3 is not a number"):
        render_report(tiny_model, broken)


# ----- a real rendering in headless Chromium --------------------------------------------
def decode_png(data: bytes) -> np.ndarray:
    """An 8-bit RGB or RGBA, non-interlaced PNG as an (height, width, channels) array."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    position, header, idat = 8, None, []
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        position += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    channels = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    rows = raw.reshape(height, 1 + width * channels)
    return unfilter(rows[:, 0], rows[:, 1:], channels).reshape(height, width, channels)


def unfilter(filters: np.ndarray, lines: np.ndarray, bpp: int) -> np.ndarray:
    """Undo the PNG row filters 0-4 (None, Sub, Up, Average, Paeth).

    A byte's predictor depends only on the decoded bytes to its left (a), above (b) and
    above-left (c), so each anti-diagonal of pixels (y + x = d) is decoded in one
    vectorised step from the two before it. The image is stored sheared (pixel (y, x)
    at [y + x, y]) so that a diagonal is a plain slice.
    """
    assert filters.max() <= 4, f"unknown PNG filter type {filters.max()}"
    height, width = len(lines), lines.shape[1] // bpp
    ys, xs = np.indices((height, width))
    sheared = np.zeros((height + width - 1, height, bpp), dtype=np.int16)
    sheared[ys + xs, ys] = lines.reshape(height, width, bpp)
    # decoded[d + 2, y + 1] is pixel (y, d - y); zero where that lies outside the image.
    decoded = np.zeros((height + width + 1, height + 1, bpp), dtype=np.int16)
    kind = filters.astype(np.int16)[:, None]
    for d in range(height + width - 1):
        lo, hi = max(0, d - width + 1), min(height, d + 1)
        a, b, c = decoded[d + 1, lo + 1:hi + 1], decoded[d + 1, lo:hi], decoded[d, lo:hi]
        k = kind[lo:hi]
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        predictor = np.where(k == 4, paeth, np.where(k == 3, (a + b) >> 1,
                             np.where(k == 2, b, np.where(k == 1, a, 0))))
        decoded[d + 2, lo + 1:hi + 1] = (sheared[d, lo:hi] + predictor) & 0xFF
    return decoded[ys + xs + 2, ys + 1].astype(np.uint8).reshape(height, width * bpp)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def test_decode_png_undoes_every_filter():
    image = np.random.default_rng(0).integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    rows = []
    for y, kind in enumerate(range(5)):
        line = image[y].astype(np.int64).ravel()
        up = image[y - 1].astype(np.int64).ravel() if y else np.zeros_like(line)
        left = np.concatenate([np.zeros(3, dtype=np.int64), line[:-3]])
        upleft = np.concatenate([np.zeros(3, dtype=np.int64), up[:-3]])
        p = left + up - upleft
        paeth = np.where((abs(p - left) <= abs(p - up)) & (abs(p - left) <= abs(p - upleft)),
                         left, np.where(abs(p - up) <= abs(p - upleft), up, upleft))
        predictor = [0, left, up, (left + up) // 2, paeth][kind]
        rows.append(bytes([kind]) + ((line - predictor) % 256).astype(np.uint8).tobytes())
    chunk = lambda kind, body: (struct.pack(">I", len(body)) + kind + body  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + body)))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 5, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))
    assert np.array_equal(decode_png(png), image)


def test_report_renders_in_headless_chromium(tiny_model, scored_csv, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed")
    page = write_report(tiny_model, tmp_path / "report.html", scored_path=scored_csv)
    screenshot = tmp_path / "report.png"
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2000",
               f"--screenshot={screenshot}", page.resolve().as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert screenshot.exists(), f"no screenshot (exit {result.returncode}): {result.stderr[-500:]}"
    pixels = decode_png(screenshot.read_bytes())[..., :3]
    assert pixels.shape[:2] == (2000, 1200)
    packed = pixels.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.uint32)
    colours, counts = np.unique(packed, return_counts=True)
    share_not_background = 1 - counts.max() / packed.size
    assert share_not_background > 0.01, f"the page looks blank ({share_not_background:.2%})"
    assert len(colours) > 50, f"only {len(colours)} distinct colours"


def test_flags_are_those_score_made_even_with_its_own_threshold(tiny_dir, tiny_model, tmp_path):
    """`score --threshold -1e9` flags every row; the report says so, not what the
    model's own threshold would have flagged."""
    path = tmp_path / "all.csv"
    score_file(tiny_dir / "new.csv", tiny_model, output=path, threshold=-1e9)
    html = render_report(tiny_model, path, top=5)
    assert "<b>Flagged:</b> 60 (100.0%)" in html
    assert html.count('class="flagged"') == 5
    score_file(tiny_dir / "new.csv", tiny_model, output=tmp_path / "default.csv")
    flagged = int(pd.read_csv(tmp_path / "default.csv")["is_anomaly"].sum())
    assert flagged < 60
    default = render_report(tiny_model, tmp_path / "default.csv", top=5)
    assert f"<b>Flagged:</b> {flagged} ({flagged / 60:.1%})" in default
