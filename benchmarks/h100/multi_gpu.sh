#!/usr/bin/env bash
# On a host with N GPUs: run the scaling study with --resources gpu=1 and gpu=N
# (each in its own folder), then the reference study with gpu=N. Wall times go
# to results/walltimes.tsv. Run in the background by session.sh-like callers.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=/tmp/site:$PWD
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
