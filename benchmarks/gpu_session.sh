#!/usr/bin/env bash
# One GPU session on an offline host: build flash-attn from the carried sdist, probe the
# backends, check parity and run the kernel benchmark; copy CSV/JSON/logs to $OUT and
# print a compact table.
#
#   OUT=/somewhere bash benchmarks/gpu_session.sh
#
# Expects: the carried wheels (.whl/: ultralytics, snakemake, ...; plus wheel, ninja,
# setuptools, packaging for the flash-attn build) already installed, e.g. by
# `bash benchmarks/h100/session.sh install` (into /tmp/site, used here when present), and
# the sdist flash_attn-<version>.tar.gz in .whl/ or results/env/sdist/ (or
# $ATTNBENCH_FLASH_ATTN_SDIST). Idempotent: the wheel is cached in results/env/wheels/
# (about 5 min to build slim on 16 cores, seconds when cached); the benchmarks rerun
# every time (about 2 min on an H100).
#
# Settings (environment):
#   CONFIG        workflow config to read            (config.yaml; its train/kernels/parity/flash_attn)
#   BACKENDS      backends to measure                (the seven below)
#   SWEEP_DTYPES  dtypes of the sequence-length sweep (float16 bfloat16; fp32 adds about a minute)
#   USE_SNAKEMAKE build through the workflow's rule: auto | 1 | 0   (auto: when snakemake imports)
#   PYTHON        interpreter                         (python3)
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -d /tmp/site ]; then
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  export PATH=/tmp/site/bin:$PATH
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export YOLO_OFFLINE=1 YOLO_CONFIG_DIR=$PWD/results/.ultralytics
PY=${PYTHON:-python3}
CONFIG=${CONFIG:-config.yaml}
read -r -a BACKENDS <<<"${BACKENDS:-eager sdpa sdpa_math sdpa_efficient sdpa_flash sdpa_cudnn flash_attn}"
read -r -a SWEEP_DTYPES <<<"${SWEEP_DTYPES:-float16 bfloat16}"
USE_SNAKEMAKE=${USE_SNAKEMAKE:-auto}
LOGS=results/logs/session
mkdir -p "$LOGS" results/env
failed=()
start=$(date +%s)

step() { printf '\n== %s (%ss)\n' "$1" "$(($(date +%s) - start))"; }
run() { # run NAME CMD...: keep going on failure, remember it
  local name=$1; shift
  "$@" || { echo "!! $name failed (exit $?)"; failed+=("$name"); }
}

step "host"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null ||
  echo "nvidia-smi: not available"
"$PY" - <<'EOF'
import importlib.util, shutil, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
      "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
missing = [m for m in ("wheel", "setuptools", "packaging") if importlib.util.find_spec(m) is None]
missing += [] if shutil.which("ninja") or importlib.util.find_spec("ninja") else ["ninja"]
if missing:
    print("flash-attn build will fail, missing:", ", ".join(missing), "(carry their wheels in .whl/)")
EOF

step "flash-attn wheel (cached in results/env/wheels/)"
if [ "$USE_SNAKEMAKE" = auto ]; then
  "$PY" -c "import snakemake" 2>/dev/null && USE_SNAKEMAKE=1 || USE_SNAKEMAKE=0
fi
build_cli() {
  "$PY" -m attnbench.flashbuild --out results/env --config "$CONFIG" \
    --log results/logs/env/build_flash_attn.log
}
if [ "$USE_SNAKEMAKE" = 1 ]; then
  # The workflow's rule itself (log and benchmark in their usual places); forced so the
  # status reflects this host, cheap when the wheel is cached.
  "$PY" -m snakemake --configfile "$CONFIG" --cores all --scheduler greedy \
    --forcerun build_flash_attn --rerun-incomplete results/env/flash_attn.json ||
    { echo "!! the workflow's rule failed; building without Snakemake"; run build build_cli; }
else
  run build build_cli
fi
"$PY" -c "import json; s = json.load(open('results/env/flash_attn.json')); print({k: s.get(k) for k in ('status', 'reason', 'version', 'cuda_archs', 'slim', 'build_seconds', 'wheel_bytes', 'nvcc', 'cached')})" 2>/dev/null

step "attention shapes (config train: model, imgsz, batch)"
run shapes "$PY" -m attnbench.kernelbench shapes --config "$CONFIG" --log "$LOGS/shapes.log"

step "backend probe"
run probe "$PY" -m attnbench.kernelbench probe --config "$CONFIG" --backends "${BACKENDS[@]}" \
  --log "$LOGS/probe.log"

step "parity against float64"
run parity "$PY" -m attnbench.kernelbench parity --config "$CONFIG" --backends "${BACKENDS[@]}" \
  --log "$LOGS/parity.log"

step "kernel benchmark"
run bench "$PY" -m attnbench.kernelbench bench --config "$CONFIG" --backends "${BACKENDS[@]}" \
  --sweep-dtypes "${SWEEP_DTYPES[@]}" --log "$LOGS/kernels.log"

if [ -n "${OUT:-}" ]; then
  step "copy to $OUT"
  mkdir -p "$OUT"
  for path in results/env/flash_attn.json results/env/backends.json results/attention \
    results/parity results/kernels results/logs results/benchmarks; do
    [ -e "$path" ] && cp -r --parents "$path" "$OUT/"
  done
  cp results/env/wheels/*.whl.json "$OUT/" 2>/dev/null || true
fi

step "summary"
"$PY" -m attnbench.kernelbench table --backends "${BACKENDS[@]}"
echo
echo "session took $(($(date +%s) - start)) s${failed[*]:+; failed: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ]
