#!/usr/bin/env bash
# Run the workflow on an offline GPU host in the background, and wait for it.
#   bash benchmarks/h100/session.sh start CONFIG [TARGET...]   # install, launch, wait
#   bash benchmarks/h100/session.sh wait  [SECONDS]             # keep waiting, then collect
# Wheels come from .whl/ (and .whl2/), see benchmarks/fetch_gpu_wheels.sh. Progress
# goes to results/session.log; what to bring back is copied to $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=/tmp/site:$PWD
export PATH=/tmp/site/bin:$PATH
LOG=results/session.log
PIDFILE=results/session.pid

install() {
  for dir in .whl .whl2; do
    [ -f "/tmp/site/.installed$dir" ] && continue
    ls "$dir"/*.whl >/dev/null 2>&1 || continue
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site "$dir"/*.whl || exit 1
    touch "/tmp/site/.installed$dir"
  done
  touch /tmp/site/.installed
  if ls .fw/*.whl >/dev/null 2>&1; then  # a flash-attn wheel built earlier by the workflow
    mkdir -p results/env/wheels && cp -n .fw/*.whl results/env/wheels/
  fi
  mkdir -p results/env/sdist
  cp -n .whl/flash_attn-*.tar.gz results/env/sdist/ 2>/dev/null || true
}

collect() {
  [ -n "${OUT:-}" ] || return 0
  cp $LOG "$OUT/" 2>/dev/null
  tail -5 results/study.log results/scaling-gpu*.log 2>/dev/null
  tar czf "$OUT/results.tar.gz" --exclude='*.pt' --exclude='results/data' \
    --exclude='results/env/site' --exclude='results/env/wheels' --exclude='*/ultralytics/*.jpg' results 2>/dev/null
  for w in results/env/wheels/*.whl; do  # '+' is not allowed in names that come back
    [ -f "$w" ] && cp "$w" "$OUT/$(basename "$w" | tr '+' '_')"
  done
  ls -la "$OUT"
}

wait_for() {
  local deadline=$(( $(date +%s) + ${1:-540} ))
  while kill -0 "$(cat $PIDFILE 2>/dev/null)" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do
    sleep 10
  done
  if kill -0 "$(cat $PIDFILE 2>/dev/null)" 2>/dev/null; then echo "STILL RUNNING"; else echo "FINISHED"; fi
  grep -E "steps \(|Error|error|Finished jobid|Elapsed" $LOG | tail -25
  cat results/walltimes.tsv 2>/dev/null
  collect
}

case "$1" in
  start)
    shift; config=$1; shift
    install
    mkdir -p results
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
    date +%s > results/session.start
    setsid nohup python3 -m snakemake --configfile "$config" --cores all --resources gpu=1 \
      --scheduler greedy --keep-going --rerun-incomplete "$@" > $LOG 2>&1 < /dev/null &
    echo $! > $PIDFILE
    wait_for "${WAIT:-540}"
    ;;
  wait) shift; wait_for "${1:-540}" ;;
  bg)  # run a driver script (e.g. benchmarks/h100/multi_gpu.sh) in the background
    shift; install; mkdir -p results
    nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv
    setsid nohup bash "$1" > $LOG 2>&1 < /dev/null &
    echo $! > $PIDFILE
    wait_for "${WAIT:-540}"
    ;;
  install) install ;;
esac
