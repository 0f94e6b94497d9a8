"""Best validation loss and seconds of a default fit under a learning-rate schedule:
    python bench/experiments/fit_schedule.py TRAIN_CSV constant|cosine|floorF [THREADS]
(cosine: today's schedule; constant: no decay; floorF: decay to the fraction F)."""
import sys, time, torch, pyarrow.csv as pc
import vae_anomaly.training as T
from vae_anomaly import VAEAnomalyDetector
path, mode = sys.argv[1], sys.argv[2]
if mode == "constant":
    T._FINAL_LEARNING_RATE_FRACTION = 1.0
elif mode.startswith("floor"):
    T._FINAL_LEARNING_RATE_FRACTION = float(mode[5:])
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
table = pc.read_csv(path)
t = time.perf_counter()
d = VAEAnomalyDetector(seed=0, exclude=["id"]).fit(table)
h = d.summary_.history
best = min(x["val_loss"] for x in h)
print(mode, f"epochs={len(h)} best_epoch={d.summary_.best_epoch} best_val={best:.4f} s={time.perf_counter()-t:.0f}", flush=True)
