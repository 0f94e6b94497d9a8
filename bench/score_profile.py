"""Where `score` spends its time, stage by stage, on one file (docs/benchmarks.md,
"Where score spends its time").

    python bench/score_profile.py DATA.csv MODEL.vae [--samples K] [--out FILE.md]

The stages run one after another on one thread, as the product runs them but with a
clock around each: reading the CSV, encoding, the rows' keys and draws, the encoder,
the decoder passes, the reconstruction NLL, the rest of a pass (KL, IWAE, standard
errors), p-values and flags, and writing the output. The product itself runs the
model passes on every torch thread at once (scoring.py); the whole `score` command is
timed too, for the wall time those shares make up. cProfile cannot do this: it sees
the main thread only, which waits while the passes run on pool threads.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vae_anomaly import scoring  # noqa: E402
from vae_anomaly.api import _with_scores  # noqa: E402
from vae_anomaly.calibration import calibrated_p_values  # noqa: E402
from vae_anomaly.data import table_output  # noqa: E402
from vae_anomaly.defaults import DEFAULT_CHUNK_ROWS, draw_plan  # noqa: E402
from vae_anomaly.health import HealthMonitor  # noqa: E402
from vae_anomaly.loading import load  # noqa: E402
from vae_anomaly.model import reconstruction_nll, reparameterize  # noqa: E402
from vae_anomaly.sql import read_source  # noqa: E402

STAGES = ("read CSV", "encode", "row keys + health", "draws (eps)", "encoder", "decoder",
          "reconstruction NLL", "rest of a pass (KL, IWAE, SEs)", "p-values + flags",
          "write CSV")


class Clock:
    def __init__(self):
        self.seconds = defaultdict(float)

    def timed(self, stage: str, work, *args):
        started = time.perf_counter()
        result = work(*args)
        self.seconds[stage] += time.perf_counter() - started
        return result


@torch.inference_mode()
def model_passes(clock: Clock, detector, encoded, keys, samples: int, seed: int) -> dict:
    """scoring._score_pass's steps, each the product's own function, with a clock
    around each (passes of the product's size; the last one is not padded)."""
    model = detector.model_.eval()
    size = scoring.rows_per_pass(samples)
    points = draw_plan(samples, detector.draws_)[0]
    out = defaultdict(list)
    for start in range(0, len(encoded), size):
        part = slice(start, start + size)
        numeric, indicators, codes = (torch.from_numpy(a[part]) for a in
                                      (encoded.numeric, encoded.indicators, encoded.categories))
        eps = clock.timed("draws (eps)", scoring.pass_draws, detector.draws_, seed,
                          torch.from_numpy(keys[part]), samples, model.config.latent_dim,
                          "cpu")
        mu, logvar = clock.timed("encoder", lambda: model.encode(
            model.inputs(numeric, indicators, codes)))
        z = reparameterize(mu, logvar, eps)
        if detector.draws_ == "iid":  # model files from before the Sobol draws
            decoded = clock.timed("decoder", model.decode, z)
            nll = clock.timed("reconstruction NLL", lambda: reconstruction_nll(
                decoded, numeric, indicators, codes, model.config.category_sizes).total())
        else:
            decoded = clock.timed("decoder", model.decoder_output, z)
            nll = clock.timed("reconstruction NLL", model.output_nll, decoded, numeric,
                              indicators, codes)
        elbo, _, _, se, _, _ = clock.timed(
            "rest of a pass (KL, IWAE, SEs)", lambda: scoring.pass_results(
                nll, mu, logvar, eps, z, points=points,
                offset=encoded.nll_offset[part].sum(-1),
                # Before the Sobol draws the IWAE estimate was worked out every time.
                iwae=detector.score_kind == "iwae" or detector.draws_ == "iid"))
        out["elbo"].append(elbo)
        out["se"].append(se)
    return {k: np.concatenate(v) for k, v in out.items()}


def profile(data: Path, model_path: Path, samples: int, output: Path) -> tuple[Clock, int]:
    torch.set_num_threads(1)
    detector = load(model_path, estimator=False)
    clock = Clock()
    health = HealthMonitor(detector.preprocessor_)
    rows = 0
    batches = read_source(data, None, DEFAULT_CHUNK_ROWS)
    with table_output(output) as writer:
        while (table := clock.timed("read CSV", next, batches, None)) is not None:
            encoded = clock.timed("encode", detector.preprocessor_.transform, table)

            def keyed():
                health.add(encoded)
                return scoring.row_keys(encoded)

            keys = clock.timed("row keys + health", keyed)
            parts = model_passes(clock, detector, encoded, keys, samples, detector.seed)
            score = parts["elbo"]

            def flags():
                kind = detector.score_kind
                return {"anomaly_score": score,
                        "is_anomaly": (score > detector.threshold_for(kind)).astype(np.int64),
                        "p_value": calibrated_p_values(detector.calibration_scores_[kind],
                                                       score, detector.calibration_tail_),
                        "score_std_error": parts["se"]}

            columns = clock.timed("p-values + flags", flags)
            clock.timed("write CSV", lambda: writer.write(_with_scores(table, columns)))
            rows += table.num_rows
    return clock, rows


def whole_score(cli: list[str], data: Path, model_path: Path, samples: int,
                output: Path) -> float:
    started = time.perf_counter()
    subprocess.run([*cli, "score", str(data), "--model", str(model_path), "-o", str(output),
                    "--samples", str(samples)], check=True, capture_output=True)
    return time.perf_counter() - started


def table(clock: Clock, rows: int, whole: float, threads: int) -> str:
    total = sum(clock.seconds.values())
    lines = ["| stage | seconds (one thread) | share | µs a row |", "|---|---:|---:|---:|"]
    for stage in STAGES:
        seconds = clock.seconds[stage]
        lines.append(f"| {stage} | {seconds:.1f} | {seconds / total:.1%} | "
                     f"{1e6 * seconds / rows:.2f} |")
    lines.append(f"| **all stages** | **{total:.1f}** | 100% | {1e6 * total / rows:.2f} |")
    lines.append(f"| `score` itself ({threads} torch threads) | {whole:.1f} | – | "
                 f"{1e6 * whole / rows:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("--samples", type=int, default=None,
                        help="decoder passes a row (default: the model's)")
    parser.add_argument("--out", type=Path, default=None, help="write the table here too")
    parser.add_argument("--cli", default=None,
                        help="the vae-anomaly command the whole `score` is timed with "
                             "(default: this checkout's, python -m vae_anomaly); the stages "
                             "always run this checkout's code")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    samples = args.samples or load(args.model, estimator=False).samples
    with tempfile.TemporaryDirectory() as folder:
        cli = [args.cli] if args.cli else [sys.executable, "-m", "vae_anomaly"]
        whole = whole_score(cli, args.data, args.model, samples, Path(folder) / "whole.csv")
        clock, rows = profile(args.data, args.model, samples, Path(folder) / "staged.csv")
    text = f"{rows:,} rows, K = {samples}\n\n" + table(clock, rows, whole, threads)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
