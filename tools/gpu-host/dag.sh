#!/usr/bin/env bash
# Run this workflow's DAG on an offline GPU host, one device call at a time, resuming.
#   bash tools/gpu-host/dag.sh NAME CONFIG DEADLINE_S [--gpu-tests] [TARGET...]
# This is how the repository's reference runs under docs/reference/gpu/ were made: the
# host has Python 3.12 and torch, but neither Snakemake, Ultralytics nor flash-attn, and no
# network. What travels (tools/gpu-host/README.md): .gpu/whl (wheels by package name,
# tools/gpu-host/fetch_wheels.sh), .gpu/wheels (the prebuilt flash-attn wheel), .gpu/data
# (the dataset, benchmarks/subset_dataset.py) and .gpu/resume/NAME.tar.gz (what the last
# call brought back). Steps:
#   1. install the wheels into /tmp/site, once per warm machine;
#   2. record the machine in $OUT/environment.txt;
#   3. pin the dataset's mtimes (the local dataset's fingerprint hashes them) and unpack
#      the last call's results and Snakemake metadata;
#   4. run Snakemake on TARGETs in the background, stopped at DEADLINE_S (a stopped job is
#      incomplete and reruns next time: rerun-incomplete in profiles/default);
#   5. with --gpu-tests, once the DAG finished, `pytest -m gpu` into $OUT/gpu_tests.log;
#   6. pack results (no weights, no images) into $OUT/NAME.tar.gz: carry it back next time.
# Environment: GPU_SLOTS (default 2) is --resources gpu_slots (train.jobs_per_gpu jobs share
# a GPU); GPU_DATA (default .gpu/data) is the folder of carried datasets, as the config's
# dataset.local names it (the H200 study's configs use .gpu/study-data).
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
NAME=${1:?usage: dag.sh NAME CONFIG DEADLINE_S [--gpu-tests] [TARGET...]}
CONFIG=${2:?config file}
DEADLINE=${3:?deadline in seconds}
shift 3
GPU_TESTS=0
if [ "${1:-}" = --gpu-tests ]; then GPU_TESTS=1; shift; fi
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(all)
export PYTHONUNBUFFERED=1 YOLO_OFFLINE=1 YOLO_CONFIG_DIR=/tmp/yolo
OUTDIR=${OUT:-$REPO/results/gpu-host}
mkdir -p "$OUTDIR"
start=$SECONDS

# 1. Wheels.
if ! PYTHONPATH=/tmp/site python3 -c "import snakemake, ultralytics, flash_attn, polars" 2>/dev/null; then
  ls .gpu/whl/*.whl .gpu/wheels/*.whl >/dev/null || { echo "no wheels here: carry .gpu/whl .gpu/wheels" >&2; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu/whl/*.whl .gpu/wheels/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$REPO PATH=/tmp/site/bin:$PATH

# 2. The machine.
DATA=$REPO/${GPU_DATA:-.gpu/data}
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "cores $(nproc)"
  python3 - <<'PY'
import contextlib, io
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    import flash_attn, snakemake, torch, ultralytics  # quiet: Ultralytics' settings banner
print(f"python {__import__('sys').version.split()[0]}")
print(f"torch {torch.__version__} cuda {torch.version.cuda} cudnn {torch.backends.cudnn.version()}")
print(f"flash_attn {flash_attn.__version__} ultralytics {ultralytics.__version__} snakemake {snakemake.__version__}")
PY
  for d in "$DATA"/*/; do
    [ -d "$d/train/images" ] || continue
    echo "dataset $(basename "$d"): train $(ls "$d/train/images" | wc -l) valid $(ls "$d/valid/images" | wc -l) images," \
      "files sha256 $(cd "$d" && find . -type f | sort | xargs sha256sum | sha256sum | cut -c1-16)"
  done
  # The device's copy of .git may lag the working tree: .gpu/COMMIT, written before the
  # call (tools/gpu-host/README.md), names the commit that was carried.
  echo "commit $(cat "$REPO/.gpu/COMMIT" 2>/dev/null || echo "unknown (no .gpu/COMMIT)")"
} 2>&1 | tee "$OUTDIR/environment.txt"

# 3. Data and resume.
[ -d "$DATA" ] && find "$DATA" -exec touch -h -d @1700000000 {} +
if [ -f "$REPO/.gpu/resume/$NAME.tar.gz" ]; then
  tar xzf "$REPO/.gpu/resume/$NAME.tar.gz" -C "$REPO" || exit 1
  echo "resumed from .gpu/resume/$NAME.tar.gz"
fi
for source in "$REPO"/results/data/local-*/source; do  # the images were left out of the archive
  [ -d "$source" ] || continue
  name=${source%/source}; name=${name##*/local-}
  for split in train valid; do
    [ -d "$DATA/$name/$split/images" ] || continue
    mkdir -p "$source/$split/images" && cp -p -n "$DATA/$name/$split/images/"* "$source/$split/images/"
  done
done

# 4. Snakemake, stopped at the deadline.
echo "targets: ${TARGETS[*]}"
python3 -m snakemake "${TARGETS[@]}" --cores all --resources gpu=1 gpu_slots="${GPU_SLOTS:-2}" \
  --scheduler greedy --keep-going --configfile "$CONFIG" >"$OUTDIR/snakemake.log" 2>&1 &
SMK=$!
while kill -0 "$SMK" 2>/dev/null; do
  if (( SECONDS - start >= DEADLINE )); then
    echo "deadline ${DEADLINE} s: stopping Snakemake"; kill -TERM "$SMK"; sleep 20; break
  fi
  sleep 10
  echo "$(( SECONDS - start )) s: $(grep -c '^Finished job\|^Finished jobid' "$OUTDIR/snakemake.log") jobs finished; $(tail -n 1 "$OUTDIR/snakemake.log" | cut -c1-120)"
done
wait "$SMK"; rc=$?
echo "snakemake exit $rc after $(( SECONDS - start )) s"
grep -E "^Error in rule|Exception|Traceback" "$OUTDIR/snakemake.log" | head -10
tail -n 3 "$OUTDIR/snakemake.log"

# 5. The GPU-marked tests, once the DAG is through.
if (( GPU_TESTS )) && (( rc == 0 )); then
  budget=$(( DEADLINE + 30 - (SECONDS - start) )); (( budget > 60 )) || budget=60
  timeout "$budget" python3 -m pytest -p no:cacheprovider -m gpu -q tests >"$OUTDIR/gpu_tests.log" 2>&1
  echo "pytest -m gpu exit $?"; tail -n 15 "$OUTDIR/gpu_tests.log"
fi

# 6. Pack.
tar czf "$OUTDIR/$NAME.tar.gz" --exclude='*.pt' --exclude='results/data/*/source/*/images' \
  --exclude='results/.gpu-slots' --exclude='results/env/site' --exclude='results/gpu-host' \
  results .snakemake/metadata .snakemake/incomplete 2>/dev/null
ls -la "$OUTDIR"
exit $rc
