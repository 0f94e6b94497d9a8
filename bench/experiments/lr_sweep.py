"""Best validation loss of default fits with some training knobs changed:
    python bench/experiments/lr_sweep.py TRAIN_CSV DEVICE SPEC [SPEC ...]
SPEC: "base" or comma-separated lr=X, batch=N, epochs=N, clip=X, final=F (the
schedule's final fraction), hold=F (fraction of the bound held before the decay)."""
import math, sys, time
import pyarrow.csv as pc
import vae_anomaly.training as T
from vae_anomaly.detector import VAEAnomalyDetector

path, device, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
table = pc.read_csv(path)
defaults = (T._FINAL_LEARNING_RATE_FRACTION, T.TrainingConfig.grad_clip_norm, T.HoldThenCosine.factor)
for spec in specs:
    knobs = dict(kv.split("=") for kv in spec.split(",") if "=" in kv)
    T._FINAL_LEARNING_RATE_FRACTION = float(knobs.get("final", defaults[0]))
    T.TrainingConfig.grad_clip_norm = float(knobs.get("clip", defaults[1]))
    hold = float(knobs.get("hold", 0.5))

    def factor(self, step, hold=hold):
        start = 2 * self.half * hold
        floor = T._FINAL_LEARNING_RATE_FRACTION
        progress = min(1.0, max(0.0, step - start) / max(1.0, 2 * self.half - start))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    T.HoldThenCosine.factor = factor
    started = time.perf_counter()
    d = VAEAnomalyDetector(seed=0, exclude=["id"], device=device,
                           learning_rate=float(knobs["lr"]) if "lr" in knobs else None,
                           batch_size=int(knobs["batch"]) if "batch" in knobs else None,
                           epochs=int(knobs["epochs"]) if "epochs" in knobs else None).fit(table)
    history = d.summary_.history
    print(f"{spec:>32}: epochs={len(history)} best_epoch={d.summary_.best_epoch} "
          f"best_val={min(h['val_loss'] for h in history):.4f} "
          f"loop_s={sum(h['seconds'] for h in history):.1f} s={time.perf_counter() - started:.0f}",
          flush=True)
