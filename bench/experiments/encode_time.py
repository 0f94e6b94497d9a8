"""Time the preprocessing alone: Preprocessor.transform of a CSV with a fitted model's
preprocessor, best of 3 (the cost of the numeric map in `score`):
    python bench/experiments/encode_time.py MODEL.vae DATA.csv [LABEL]
Run it with another commit's package first on PYTHONPATH to compare (results in
docs/benchmarks.md, "Speed: what the numbers mean")."""
import sys
import time

import pyarrow.csv as pa_csv

from vae_anomaly import load

model, data = sys.argv[1], sys.argv[2]
label = sys.argv[3] if len(sys.argv) > 3 else model
table = pa_csv.read_csv(data)
preprocessor = load(model).preprocessor_
times = []
for _ in range(3):
    started = time.perf_counter()
    preprocessor.transform(table)
    times.append(time.perf_counter() - started)
print(f"{label}: transform of {table.num_rows:,} rows, best of 3: {min(times):.2f} s")
