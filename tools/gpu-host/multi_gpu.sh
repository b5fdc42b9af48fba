#!/usr/bin/env bash
# On a host with N GPUs: run the scaling study with --resources gpu=1 and gpu=N
# (each in its own folder), then the reference study with gpu=N. Wall times go
# to results/walltimes.tsv. This made docs/reference/h100 (and docs/SCALING.md's
# figures) at commit 44e09bc, as benchmarks/h100/multi_gpu.sh, started in the background
# by benchmarks/h100/session.sh (`git show 44e09bc:benchmarks/h100/session.sh`); it runs
# longer than one device call, so start it in the background on a warm machine:
#   setsid nohup bash tools/gpu-host/multi_gpu.sh > results/session.log 2>&1 < /dev/null &
# Carried: .gpu/whl and .gpu/wheels (installed into /tmp/site as tools/gpu-host/dag.sh
# does) and .data/crop-or-weed (docs/reference/h100/*.yaml's dataset.local).
set -uo pipefail
cd "$(dirname "$0")/../.."
if ! PYTHONPATH=/tmp/site python3 -c "import snakemake, ultralytics, flash_attn, polars" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu/whl/*.whl .gpu/wheels/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
root=$PWD
n=$(nvidia-smi -L | wc -l)
sm() { python3 -m snakemake --snakefile "$root/Snakefile" --cores all --scheduler greedy --keep-going "$@"; }
mkdir -p results
printf 'study\tgpus\twall_s\n' > results/walltimes.tsv
for g in 1 "$n"; do
  d=/tmp/scaling-gpu$g; rm -rf "$d"; mkdir -p "$d/.data"; cp config.yaml "$d/"
  ln -s "$root/.data/crop-or-weed" "$d/.data/crop-or-weed"
  mkdir -p "$d/results/env"; cp -r results/env/wheels "$d/results/env/" 2>/dev/null
  t0=$(date +%s)
  sm --directory "$d" --configfile docs/reference/h100/scaling.yaml --resources gpu=$g --until train \
    > "results/scaling-gpu$g.log" 2>&1
  printf 'scaling\t%s\t%s\n' "$g" "$(( $(date +%s) - t0 ))" >> results/walltimes.tsv
  mkdir -p "results/scaling/gpu$g"; cp -r "$d/results/train" "results/scaling/gpu$g/"
done
t0=$(date +%s)
sm --configfile docs/reference/h100/config.yaml --resources gpu=$n > results/study.log 2>&1
printf 'reference\t%s\t%s\n' "$n" "$(( $(date +%s) - t0 ))" >> results/walltimes.tsv
