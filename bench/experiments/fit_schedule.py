import sys, time, torch, pyarrow.csv as pc
import vae_anomaly.training as T
from vae_anomaly.detector import VAEAnomalyDetector
mode = sys.argv[1]
if mode == "constant":
    T._FINAL_LEARNING_RATE_FRACTION = 1.0
elif mode.startswith("floor"):
    T._FINAL_LEARNING_RATE_FRACTION = float(mode[5:])
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
table = pc.read_csv("/tmp/vae-speed/train_200000.csv")
t = time.perf_counter()
d = VAEAnomalyDetector(seed=0, exclude=["id"]).fit(table)
h = d.summary_.history
best = min(x["val_loss"] for x in h)
print(mode, f"epochs={len(h)} best_epoch={d.summary_.best_epoch} best_val={best:.4f} s={time.perf_counter()-t:.0f}", flush=True)
