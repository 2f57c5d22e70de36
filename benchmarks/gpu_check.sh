#!/usr/bin/env bash
# Issue 12's GPU checks, prepared as one run on a lent NVIDIA machine (the device tool; its python3 holds torch,
# transformers, rich, safetensors and pytest). Two steps:
#   here:  bash benchmarks/gpu_check.sh prepare  # tiny official weights + 4 parity cases (~33 MB) -> .gpu-ref/
#   there: bash benchmarks/gpu_check.sh          # carry [".gpu-ref"]; results under $OUT (default gpu-check/)
# There it runs the CUDA parity test on those cases, then benchmarks/glee_speed.py on CUDA at 800x1333
# (GLEE-Lite, random weights) with 80 cached names, 1,203 names (cached and encoded per call) and one
# expression, in float32 and under bf16 autocast (~5 minutes on an H100).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == prepare ]]; then
  source_dir=${GLEEKIT_SHARED:-../shared}/reference/glee
  target=.gpu-ref/reference/glee
  rm -rf .gpu-ref
  mkdir -p "$target/cases"
  cp "$source_dir/weights.safetensors" "$target/"
  for case in a_category_det b_referring e_padding g_batch2; do cp -r "$source_dir/cases/$case" "$target/cases/"; done
  du -sh .gpu-ref
  exit 0
fi
PY=${PY:-python3}
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 GLEEKIT_SHARED="$PWD/.gpu-ref"
"$PY" -m pytest -q -m gpu -p no:cacheprovider tests/glee_core/test_parity.py 2>&1 | tee "$OUT/parity.log" \
  || echo "CUDA parity FAILED (see $OUT/parity.log)"
for autocast in none bf16; do
  "$PY" benchmarks/glee_speed.py --device cuda --autocast "$autocast" --image 800x1333 --threads 8 --repeats 20 \
    --settings 80-cached 1203-cached 1203 ref --json "$OUT/speed_$autocast.json" 2>&1 | tee "$OUT/speed_$autocast.log"
done
