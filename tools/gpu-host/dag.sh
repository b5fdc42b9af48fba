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
#   4. run Snakemake on TARGETs in the background; at DEADLINE_S it gets SIGTERM, which
#      Snakemake 9 takes as "start no new job, finish the running ones" (graceful); at
#      HARD_LIMIT_S (default 570) what still runs is killed (incomplete: rerun next time,
#      rerun-incomplete in profiles/default), so that step 6 runs before the call's 600 s;
#   5. with --gpu-tests, once the DAG finished, `pytest -m gpu` into $OUT/gpu_tests.log;
#   6. pack results (no weights, no images) and each script's mtime and digest (step 3
#      restores them) into $OUT/NAME.tar.gz: carry it back next time.
# So DEADLINE_S is the last moment a job may START: choose it as HARD_LIMIT_S minus the
# longest job the DAG may start (a 20-epoch train job: minutes).
# Environment: GPU_SLOTS (default 2) is --resources gpu_slots (train.jobs_per_gpu jobs share
# a GPU); GPU_DATA (default .gpu/data) is the folder of carried datasets, as the config's
# dataset.local names it (the study uses .gpu/study-data); GPU_MANIFEST names a committed
# manifest of tools/gpu-host/stage_parts.py: the dataset comes in parts (GPU_DATA/partN, one
# a call), assembled into GPU_DATA/<dataset> and checked against the manifest's digest
# before Snakemake runs (a missing part: one line naming it, exit 3); GPU_STAGE_ONLY=1 makes
# a staging call: wheels and the parts carried so far, no Snakemake, no archive;
# SMK_ARGS: more Snakemake options, e.g. "--until train"; POLL_S (default 10): how often
# the deadlines are checked (tests/test_gpu_host.py runs it with a stand-in Snakemake).
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

# 1. Wheels (GPU_SITE: another folder, for tests/test_gpu_host.py's stand-in packages).
SITE=${GPU_SITE:-/tmp/site}
if ! PYTHONPATH=$SITE python3 -c "import snakemake, ultralytics, flash_attn, polars" 2>/dev/null; then
  ls .gpu/whl/*.whl .gpu/wheels/*.whl >/dev/null || { echo "no wheels here: carry .gpu/whl .gpu/wheels" >&2; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .gpu/whl/*.whl .gpu/wheels/*.whl || exit 1
fi
export PYTHONPATH=$SITE:$REPO PATH=$SITE/bin:$PATH

# 1b. A dataset carried in parts (tools/gpu-host/stage_parts.py): assemble and check it.
DATA=$REPO/${GPU_DATA:-.gpu/data}
if [ -n "${GPU_MANIFEST:-}" ]; then
  if [ "${GPU_STAGE_ONLY:-0}" = 1 ]; then
    python3 tools/gpu-host/stage_parts.py assemble "${GPU_DATA:-.gpu/data}" "$GPU_MANIFEST" --partial
    staged=$?; echo "staging call: no Snakemake, no archive ($(( SECONDS - start )) s)"; exit $staged
  fi
  python3 tools/gpu-host/stage_parts.py assemble "${GPU_DATA:-.gpu/data}" "$GPU_MANIFEST" || exit 3
elif [ "${GPU_STAGE_ONLY:-0}" = 1 ]; then
  echo "staging call: wheels in $SITE ($(( SECONDS - start )) s)"; exit 0
fi

# 2. The machine.
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
MTIMES=.snakemake/script-mtimes.tsv
[ -d "$DATA" ] && find "$DATA" -exec touch -h -d @1700000000 {} +
rm -rf "$REPO/.snakemake/locks"  # left by a run killed at the hard limit on this warm host
if [ -f "$REPO/.gpu/resume/$NAME.tar.gz" ]; then
  tar xzf "$REPO/.gpu/resume/$NAME.tar.gz" -C "$REPO" || exit 1
  echo "resumed from .gpu/resume/$NAME.tar.gz"
fi
# Every call gets a fresh copy of the tree, so every script is newer than the outputs it
# made, and Snakemake reruns a job whose output is older than its script. Step 6 records
# each script's mtime with its digest: a script whose content is unchanged gets its
# recorded mtime back; a changed one keeps the copy's, and its jobs rerun.
if [ -f "$REPO/$MTIMES" ]; then
  kept=0 changed=0
  while read -r mtime digest path; do
    [ -f "$path" ] || continue
    if [ "$(sha256sum "$path" | cut -d' ' -f1)" = "$digest" ]; then
      touch -h -d "@$mtime" "$path" && kept=$(( kept + 1 ))
    else
      changed=$(( changed + 1 ))
    fi
  done <"$REPO/$MTIMES"
  echo "scripts: $kept unchanged keep their recorded mtime, $changed changed (their jobs rerun)"
fi
for source in "$REPO"/results/data/local-*/source; do  # the images were left out of the archive
  [ -d "$source" ] || continue
  name=${source%/source}; name=${name##*/local-}
  for split in train valid; do
    [ -d "$DATA/$name/$split/images" ] || continue
    mkdir -p "$source/$split/images" && cp -p -u "$DATA/$name/$split/images/"* "$source/$split/images/"
  done
done

# 4. Snakemake: no new job after the deadline, nothing running after the hard limit.
HARD=${HARD_LIMIT_S:-570}
read -r -a SMK_EXTRA <<<"${SMK_ARGS:-}"
echo "targets: ${TARGETS[*]} ${SMK_EXTRA[*]}; deadline ${DEADLINE} s, hard limit ${HARD} s"
# Its own process group (setsid does not fork here: same pid), so the hard limit can end
# the jobs too.
SETSID=(); command -v setsid >/dev/null && SETSID=(setsid)
"${SETSID[@]}" python3 -m snakemake "${TARGETS[@]}" "${SMK_EXTRA[@]}" --cores all \
  --resources gpu=1 gpu_slots="${GPU_SLOTS:-2}" --scheduler greedy --keep-going \
  --configfile "$CONFIG" >"$OUTDIR/snakemake.log" 2>&1 &
SMK=$!
stopping=0
while kill -0 "$SMK" 2>/dev/null; do
  if (( SECONDS - start >= HARD )); then
    echo "hard limit ${HARD} s: killing Snakemake and its running jobs (incomplete: rerun next call)"
    kill -INT "$SMK"; sleep "${POLL_S:-8}"
    if (( ${#SETSID[@]} )); then kill -KILL -- "-$SMK" 2>/dev/null; else kill -KILL "$SMK" 2>/dev/null; fi
    break
  fi
  if (( !stopping && SECONDS - start >= DEADLINE )); then
    echo "deadline ${DEADLINE} s: Snakemake starts no new job and finishes the running ones"
    kill -TERM "$SMK"; stopping=1
  fi
  sleep "${POLL_S:-10}"
  echo "$(( SECONDS - start )) s: $(grep -c '^Finished job\|^Finished jobid' "$OUTDIR/snakemake.log") jobs finished; $(tail -n 1 "$OUTDIR/snakemake.log" | cut -c1-120)"
done
wait "$SMK"; rc=$?
echo "snakemake exit $rc after $(( SECONDS - start )) s"
grep -E "^Error in rule|Exception|Traceback" "$OUTDIR/snakemake.log" | head -10
tail -n 3 "$OUTDIR/snakemake.log"

# 5. The GPU-marked tests, once the DAG is through.
if (( GPU_TESTS )) && (( rc == 0 )); then
  # Within the hard limit, so that step 6 still packs before the call's 600 s.
  budget=$(( HARD - (SECONDS - start) ))
  if (( budget >= 30 )); then
    timeout "$budget" python3 -m pytest -p no:cacheprovider -m gpu -q tests >"$OUTDIR/gpu_tests.log" 2>&1
    echo "pytest -m gpu exit $? (at most ${budget} s)"; tail -n 15 "$OUTDIR/gpu_tests.log"
  else
    echo "pytest -m gpu not run: ${budget} s left before the hard limit; run it next call"
  fi
fi

# 6. Pack, with the scripts' mtimes and digests for step 3 of the next call.
mkdir -p .snakemake
find scripts -type f -exec sh -c 'for f; do
  printf "%s %s %s\n" "$(stat -c %Y "$f")" "$(sha256sum "$f" | cut -d" " -f1)" "$f"
done' sh {} + 2>/dev/null | sort -k3 >"$MTIMES.tmp" && mv "$MTIMES.tmp" "$MTIMES"
tar czf "$OUTDIR/$NAME.tar.gz" --exclude='*.pt' --exclude='results/data/*/source/*/images' \
  --exclude='results/.gpu-slots' --exclude='results/env/site' --exclude='results/gpu-host' \
  results .snakemake/metadata .snakemake/incomplete "$MTIMES" 2>/dev/null
ls -la "$OUTDIR"
exit $rc
