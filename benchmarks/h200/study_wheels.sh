#!/usr/bin/env bash
# Gather what the reference study (docs/reference/h200/study) needs on an offline H200 host
# beyond .gpu/whl (Ultralytics, polars, jsonschema) and .gpu/wheels (the flash-attn wheel):
# Snakemake 9.27.1 and its dependencies as wheels in .gpu/smk, taken from .whl/
# (benchmarks/fetch_gpu_wheels.sh) with the versions Snakemake 9.27.1 pins (sqlmodel<0.0.38,
# so SQLAlchemy 2.0; docutils<0.23) in place of the newer ones there. No pygments (Snakemake
# does not import it), no pulp (run with --scheduler greedy). Prints the sizes that travel.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d .whl ] || { echo "run benchmarks/fetch_gpu_wheels.sh first" >&2; exit 1; }
grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >>.git/info/exclude
rm -rf .gpu/smk && mkdir -p .gpu/smk
skip='^(polars|flash_attn|ultralytics|einops|jsonschema|referencing|rpds_py|pygments|sqlmodel|sqlalchemy|docutils)[-_]'
for wheel in .whl/*.whl; do
  name=$(basename "$wheel")
  [[ $name =~ $skip ]] || cp "$wheel" .gpu/smk/
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/smk "sqlmodel==0.0.37" "sqlalchemy==2.0.49" "docutils==0.22.4"
du -sh .gpu/smk .gpu/whl .gpu/wheels .gpu/data 2>/dev/null
du -cb .gpu/smk .gpu/whl .gpu/wheels .gpu/data 2>/dev/null | tail -1
