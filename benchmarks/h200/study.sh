#!/usr/bin/env bash
# Issue 15's reference study, one GPU-session call at a time (docs/reference/h200/study).
#   bash benchmarks/h200/study.sh accuracy|timing [DEADLINE_S] [RUN_S]
# Carry: .gpu/whl .gpu/smk .gpu/wheels .gpu/study-data .gpu/resume (benchmarks/h200/study_wheels.sh
# and docs/reference/h200/study/README.md). It installs the wheels into /tmp/site (once per
# warm machine), checks the dataset, unpacks .gpu/resume/<study>.tar.gz (the last call's
# results), runs Snakemake in the background on the next train jobs that fit DEADLINE_S
# (default 480 s, under the 10-minute call limit), then everything else once all train jobs
# are done, and packs results into $OUT/<study>.tar.gz: carry it back as .gpu/resume/.
# RUN_S: seconds one train job takes (default: the median of this study's finished jobs,
# else 240 accuracy / 60 timing).
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
STUDY=${1:-accuracy}
DEADLINE=${2:-480}
export PYTHONUNBUFFERED=1
OUTDIR=${OUT:-$REPO/results/h200-study}
mkdir -p "$OUTDIR"
case $STUDY in
  accuracy) WORK=$REPO; CONFIG=$REPO/docs/reference/h200/study/config.yaml; SLOTS=4; RUN_S=${3:-240} ;;
  timing) WORK=$REPO/timing; CONFIG=$REPO/docs/reference/h200/study/timing.yaml; SLOTS=1; RUN_S=${3:-60} ;;
  *) echo "usage: $0 accuracy|timing [DEADLINE_S] [RUN_S]" >&2; exit 2 ;;
esac

# 1. Wheels: Ultralytics + polars (.gpu/whl), Snakemake (.gpu/smk), flash-attn built on an H200.
if ! PYTHONPATH=/tmp/site python3 -c "import snakemake, ultralytics, flash_attn, polars" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    .gpu/whl/*.whl .gpu/smk/*.whl .gpu/wheels/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$REPO PATH=/tmp/site/bin:$PATH

# 2. The dataset: present, the counts the README states, and mtimes pinned (the workflow's
# fingerprint of a local dataset hashes names, sizes and mtimes: a copy with new mtimes
# would import it again and rerun every train job).
DATA=$REPO/.gpu/study-data/crop-or-weed
for split in train valid; do
  [ -d "$DATA/$split/images" ] || { echo "no $DATA/$split/images: carry .gpu/study-data" >&2; exit 2; }
done
find "$DATA" -exec touch -h -d @1700000000 {} +
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "cores $(nproc)"
  python3 -c "import torch, flash_attn, ultralytics, snakemake; print('torch', torch.__version__, 'flash_attn', flash_attn.__version__, 'ultralytics', ultralytics.__version__, 'snakemake', snakemake.__version__)"
  echo "train $(ls "$DATA/train/images" | wc -l) valid $(ls "$DATA/valid/images" | wc -l) images," \
    "names sha256 $(cd "$DATA" && find . -type f | sort | sha256sum | cut -c1-16)"
  git -C "$REPO" rev-parse HEAD 2>/dev/null || true
} 2>&1 | tee "$OUTDIR/$STUDY-environment.txt"

# 3. Resume: the last call's results and Snakemake's metadata; the images of the imported
# dataset are not carried (they are the dataset's): put them back with their pinned mtimes.
mkdir -p "$WORK"
[ -f "$WORK/config.yaml" ] || cp "$REPO/config.yaml" "$WORK/config.yaml"
if [ -f "$REPO/.gpu/resume/$STUDY.tar.gz" ]; then
  tar xzf "$REPO/.gpu/resume/$STUDY.tar.gz" -C "$WORK" || exit 1
fi
SOURCE=$WORK/results/data/local-crop-or-weed/source
if [ -d "$SOURCE" ]; then
  for split in train valid; do
    mkdir -p "$SOURCE/$split/images" && cp -p -n "$DATA/$split/images/"* "$SOURCE/$split/images/"
  done
fi

# 4. Which jobs: the next train jobs of the planned order that fit the deadline, SLOTS at a
# time; once every train job is done, everything else (kernels, parity, tables, report).
cd "$WORK"
TARGETS=$(python3 - "$CONFIG" "$SLOTS" "$DEADLINE" "${3:-}" "$RUN_S" <<'PY'
import glob, statistics, sys
from pathlib import Path
import yaml
from attnbench import config as cfg, schedule
path, slots, deadline, given, default = sys.argv[1:6]
c = cfg.validate(yaml.safe_load(Path(path).read_text()))
a = c["analysis"]
arms = schedule.arms(c["backends"], a["baseline"], a["replica"])
todo = [j for j in schedule.planned_order(a["order_seed"], arms, c["seeds"])
        if not Path(f"results/train/{j[0]}/seed{j[1]}/metrics.json").exists()]
done = []
for tsv in glob.glob("results/benchmarks/train/*/*.tsv"):
    lines = Path(tsv).read_text().splitlines()
    if len(lines) > 1:
        done.append(float(lines[1].split("\t")[0]))
run_s = float(given) if given else (statistics.median(done) if done else float(default))
fit = max(1, int(slots) * int((float(deadline) - 60) // run_s))
print(f"{len(todo)} train jobs left; {run_s:.0f} s a job ({len(done)} measured); taking {min(fit, len(todo))}", file=sys.stderr)
print(" ".join(f"results/train/{b}/seed{s}/metrics.json" for b, s in todo[:fit]) or "all")
PY
) || exit 1
echo "targets: $TARGETS" | tee -a "$OUTDIR/$STUDY-environment.txt"

# 5. Snakemake in the background, stopped at the deadline (its jobs are then incomplete and
# rerun next time: rerun-incomplete in profiles/default).
# shellcheck disable=SC2086
python3 -m snakemake $TARGETS --snakefile "$REPO/Snakefile" --cores all --resources gpu=1 gpu_slots=$SLOTS \
  --scheduler greedy --keep-going --configfile "$CONFIG" >"$OUTDIR/$STUDY-snakemake.log" 2>&1 &
SMK=$!
start=$SECONDS
while kill -0 "$SMK" 2>/dev/null; do
  if (( SECONDS - start >= DEADLINE )); then
    echo "deadline ${DEADLINE} s: stopping Snakemake"; kill -TERM "$SMK"; sleep 20; break
  fi
  sleep 15
  echo "$(( SECONDS - start )) s: $(ls results/train/*/seed*/metrics.json 2>/dev/null | wc -l) train jobs done"
done
wait "$SMK"; echo "snakemake exit $?"
grep -E "Error|Exception" "$OUTDIR/$STUDY-snakemake.log" | tail -5
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader

# 6. Pack: results (no weights, no dataset images) and Snakemake's metadata, in one file.
tar czf "$OUTDIR/$STUDY.tar.gz" --exclude='*.pt' --exclude='results/data/*/source/*/images' \
  --exclude='results/.gpu-slots' results .snakemake/metadata 2>/dev/null
ls -la "$OUTDIR"
