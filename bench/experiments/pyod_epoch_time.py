"""Per-epoch time of our fit and PyOD's VAE, interleaved in one run, to see how much
each moves with the machine (docs/benchmarks.md, "Speed"). Not part of the product.

    python bench/experiments/pyod_epoch_time.py TRAIN_CSV [ROUNDS] [OUR_EPOCHS] [PYOD_BUDGET_S]

TRAIN_CSV is bench/speed.py's training file (e.g. /tmp/vae-speed/train_200000.csv).
Each round runs, as separate processes, `vae-anomaly fit --epochs OUR_EPOCHS` (its
training-loop seconds per epoch, from the model's history) and bench/speed.py's PyOD
worker for about PYOD_BUDGET_S seconds of epochs (the mean of its epochs).
"""
import json, subprocess, sys, tempfile
from pathlib import Path

import numpy as np

SPEED = Path(__file__).resolve().parents[1] / "speed.py"


def ours(train: Path, epochs: int, work: Path) -> float:
    model = work / "m.vae"
    subprocess.run(["vae-anomaly", "fit", str(train), "--model", str(model), "--exclude", "id",
                    "--epochs", str(epochs), "--quiet"], check=True)
    info = json.loads(subprocess.run(["vae-anomaly", "info", str(model), "--json"], check=True,
                                     capture_output=True, text=True).stdout)
    return float(np.mean([h["seconds"] for h in info["training"]["history"]]))


def pyod(train: Path, budget: float, work: Path) -> float:
    out = work / "pyod.json"
    subprocess.run([sys.executable, str(SPEED), "--pyod-worker", str(train), "--pyod-epochs",
                    "55", "--pyod-budget", str(budget), "--pyod-result", str(out)], check=True)
    return float(json.loads(out.read_text())["per_epoch_s"])


def main() -> None:
    train = Path(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    budget = float(sys.argv[4]) if len(sys.argv) > 4 else 60
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            a, b = ours(train, epochs, Path(tmp)), pyod(train, budget, Path(tmp))
            print(f"round {r + 1}: ours {a:.2f} s/epoch (loop), PyOD {b:.2f} s/epoch, "
                  f"ratio {b / a:.1f}x", flush=True)


if __name__ == "__main__":
    main()
