#!/usr/bin/env bash
# One device call for issue 12's remaining H200 evidence, in stages with their own time caps:
#   1. the GPU-marked tests of the kernel benchmark (CUDA-graph capture of every backend);
#   2. the kernel benchmark (3 repetitions, direct and CUDA-graph times) at YOLO12n's shapes;
#   3. benchmarks/steady_state.py: train job (eager) against bare Ultralytics, repeats.
# Carried: .gpu (see benchmarks/h200/steady.sh). Everything lands under $OUT.
#   bash benchmarks/h200/evidence.sh STEADY_DEADLINE_S
set -uo pipefail
cd "$(dirname "$0")/../.."
source benchmarks/h200/setup.sh
export YOLO_OFFLINE=1 YOLO_CONFIG_DIR=/tmp/yolo
echo "== 1. GPU tests"
timeout 90 python3 -m pytest -p no:cacheprovider -q -m gpu tests/test_kernelbench.py 2>&1 | tail -40 > "$OUTDIR/gpu_tests.log"
tail -5 "$OUTDIR/gpu_tests.log"
echo "== 2. kernel benchmark"
timeout 150 python3 benchmarks/h200/kernels.py "$OUTDIR" eager sdpa_cudnn flash_attn > "$OUTDIR/kernels.log" 2>&1
tail -12 "$OUTDIR/kernels.log"
echo "== 3. steady state"
validate_subset || exit 1
python3 benchmarks/steady_state.py --data results/data/crop-or-weed/data.yaml --device 0 \
  --backends eager --repeats 4 --bare-repeats 4 --epochs 2 --batch 8 --imgsz 640 --workers 8 \
  --order-seed 1 --deadline-s "${1:-240}" --out "$OUTDIR/steady" 2>&1 | tee "$OUTDIR/steady.log" | grep -v "^|"
cat "$OUTDIR/steady/summary.md"
# At most 8 files come back: logs and per-run folders travel as one archive.
tar czf "$OUTDIR/logs.tar.gz" --exclude='*.pt' --exclude='*.jpg' -C "$OUTDIR" environment.txt \
  gpu_tests.log kernels.log steady.log steady/runs 2>/dev/null
rm -rf "$OUTDIR/steady/runs" "$OUTDIR/steady/.ultralytics" "$OUTDIR"/*.log
ls -la "$OUTDIR" "$OUTDIR/steady"
