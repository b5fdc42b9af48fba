#!/usr/bin/env bash
# Issue 12's H200 run in one device call: steady-state step time and per-step breakdown of
# train jobs (eager, sdpa_cudnn, flash_attn) against bare Ultralytics, in fresh processes, in
# a seeded interleaved order. Carried: .gpu/whl (Ultralytics, polars, jsonschema wheels),
# .gpu/wheels (the flash-attn wheel rule build_flash_attn built on an H200), .gpu/data (a
# seeded subset of crop-or-weed: benchmarks/subset_dataset.py --train 256 --valid 32).
#   bash benchmarks/h200/steady.sh [DEADLINE_S]     # writes under $OUT (or results/h200)
set -uo pipefail
cd "$(dirname "$0")/../.."
source benchmarks/h200/setup.sh
validate_subset || exit 1
python3 benchmarks/steady_state.py --data results/data/crop-or-weed/data.yaml --device 0 \
  --backends eager sdpa_cudnn flash_attn --repeats 5 2 2 --bare-repeats 5 --epochs 2 \
  --batch 8 --imgsz 640 --workers 8 --deadline-s "${1:-480}" --out "$OUTDIR/steady" \
  2>&1 | tee "$OUTDIR/steady.log"
tar czf "$OUTDIR/steady_runs.tar.gz" --exclude='*.pt' --exclude='*.jpg' "$OUTDIR/steady/runs" 2>/dev/null
rm -rf "$OUTDIR/steady/runs"
ls -la "$OUTDIR" "$OUTDIR/steady"
