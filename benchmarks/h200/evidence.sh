#!/usr/bin/env bash
# One device call for issue 12's remaining H200 evidence, in stages with their own time caps:
#   1. the GPU-marked tests of the kernel benchmark (CUDA-graph capture of every backend);
#   2. the kernel benchmark (3 repetitions, direct and CUDA-graph times) at YOLO12n's shapes;
#   3. benchmarks/steady_state.py: train job (eager) against bare Ultralytics, repeats.
# Carried: .gpu (see benchmarks/h200/steady.sh). Everything lands under $OUT.
#   bash benchmarks/h200/evidence.sh STEADY_DEADLINE_S
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
OUTDIR=${OUT:-results/h200}
mkdir -p "$OUTDIR"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
  .gpu/whl/*.whl .gpu/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
export YOLO_OFFLINE=1 YOLO_CONFIG_DIR=/tmp/yolo
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import torch, flash_attn, ultralytics; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'flash_attn', flash_attn.__version__, 'ultralytics', ultralytics.__version__)"
} 2>&1 | tee "$OUTDIR/environment.txt"
echo "== 1. GPU tests"
timeout 90 python3 -m pytest -p no:cacheprovider -q -m gpu tests/test_kernelbench.py 2>&1 | tail -40 > "$OUTDIR/gpu_tests.log"
tail -5 "$OUTDIR/gpu_tests.log"
echo "== 2. kernel benchmark"
timeout 150 python3 benchmarks/h200/kernels.py "$OUTDIR" eager sdpa_cudnn flash_attn > "$OUTDIR/kernels.log" 2>&1
tail -12 "$OUTDIR/kernels.log"
echo "== 3. steady state"
python3 - <<'PY' || exit 1
from attnbench.datasets import validate
validate.summarize(".gpu/data/crop-or-weed", "results/data/crop-or-weed", name="crop-or-weed", source="local")
PY
python3 benchmarks/steady_state.py --data results/data/crop-or-weed/data.yaml --device 0 \
  --backends eager --repeats 4 --bare-repeats 4 --epochs 2 --batch 8 --imgsz 640 --workers 8 \
  --order-seed 1 --deadline-s "${1:-240}" --out "$OUTDIR/steady" 2>&1 | tee "$OUTDIR/steady.log" | grep -v "^|"
cat "$OUTDIR/steady/summary.md"
# At most 8 files come back: logs and per-run folders travel as one archive.
tar czf "$OUTDIR/logs.tar.gz" --exclude='*.pt' --exclude='*.jpg' -C "$OUTDIR" environment.txt \
  gpu_tests.log kernels.log steady.log steady/runs 2>/dev/null
rm -rf "$OUTDIR/steady/runs" "$OUTDIR/steady/.ultralytics" "$OUTDIR"/*.log
ls -la "$OUTDIR" "$OUTDIR/steady"
