#!/usr/bin/env bash
# GPU measurements of issue 4, for a machine with a CUDA GPU (run from the repository root):
#
#     OUT=/tmp/gpu-out bash bench/gpu.sh
#
# 1. bench/speed.py with --device cuda: fit on 200,000 rows and the slower reference
#    fit, floor and score K=16 on 1,000,000 rows, PyOD's VAE on its default device
#    (the GPU);
# 2. train on the GPU, score on CPU: the GPU-fitted model scores the first 40,000 rows
#    of the 1M file with --device cuda and with --device cpu (bench/compare_scores.py
#    compares them); the model, those rows and the GPU scores are left in $OUT, to be
#    scored again on a CPU-only machine;
# 3. bench/speed.py with --device cpu on the same machine (no reference, no PyOD),
#    for the GPU/CPU ratio.
# SPEED_ARGS adds options to the first (e.g. --skip-pyod); SKIP_CPU=1 skips the third.
# Needs the product importable (it is put on PYTHONPATH) and, for PyOD, `pip install pyod`.
set -euo pipefail
OUT=${OUT:?set OUT to a folder for the results}
WORK=${WORK:-/tmp/vae-gpu}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$WORK/bin" "$OUT"
# The CLI as a user runs it, without needing an install of the package.
printf '#!/bin/sh\nexec %s -m vae_anomaly "$@"\n' "$(command -v python3)" > "$WORK/bin/vae-anomaly"
chmod +x "$WORK/bin/vae-anomaly"
export PATH="$WORK/bin:$PATH"
nvidia-smi -L || true
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'

python3 bench/speed.py --rows 1000000 --fit-rows 200000 --device cuda \
    --cli "$WORK/bin/vae-anomaly" \
    --pyod-budget "${PYOD_BUDGET:-60}" --workdir "$WORK" --section "## Speed on a GPU" \
    --out "$OUT/speed_gpu.md" ${SPEED_ARGS:-}

head -n 40001 "$WORK/data_1000000.csv" > "$OUT/head_40000.csv"
cp "$WORK/default.vae" "$OUT/gpu_fitted.vae"
vae-anomaly score "$OUT/head_40000.csv" --model "$OUT/gpu_fitted.vae" --device cuda \
    -o "$OUT/scored_gpu.csv" --quiet
vae-anomaly score "$OUT/head_40000.csv" --model "$OUT/gpu_fitted.vae" --device cpu \
    -o "$WORK/scored_cpu.csv" --quiet
python3 bench/compare_scores.py "$OUT/scored_gpu.csv" "$WORK/scored_cpu.csv" \
    | tee "$OUT/compare_same_machine.txt" || true

if [ -z "${SKIP_CPU:-}" ]; then
  python3 bench/speed.py --rows 1000000 --fit-rows 200000 --device cpu --skip-reference \
      --cli "$WORK/bin/vae-anomaly" \
      --skip-pyod --workdir "$WORK" --section "## Speed on the GPU machine's CPU" \
      --out "$OUT/speed_cpu.md"
fi
