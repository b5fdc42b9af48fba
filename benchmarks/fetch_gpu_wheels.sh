#!/usr/bin/env bash
# Fetch what an offline GPU host (Python 3.12, torch preinstalled) needs to run
# this workflow, as wheels in .whl/ (and .whl2/ for the analysis extras), plus the
# pinned flash-attn sdist. Sizes are kept under a 64 MiB transfer limit per folder:
# polars 0.20.31 (29 MB, satisfies Ultralytics' polars>=0.20) instead of 2.x (53 MB),
# and no pulp (Snakemake's ILP scheduler; run with --scheduler greedy there).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl .whl2
plat=(--python-version 3.12 --implementation cp --only-binary=:all: --no-deps
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64)
core=(ultralytics-opencv-headless==8.4.190 ultralytics-thop==2.2.3 ultralytics-platform==0.1.99
      polars==0.20.31 einops snakemake==9.27.1 pygments jsonschema jsonschema-specifications
      referencing rpds-py attrs conda-inject configargparse connection-pool docutils dpath
      fastjsonschema gitdb gitpython humanfriendly immutables jupyter-core nbformat platformdirs
      smart-open smmap snakemake-interface-common snakemake-interface-executor-plugins
      snakemake-interface-logger-plugins snakemake-interface-report-plugins
      snakemake-interface-scheduler-plugins snakemake-interface-storage-plugins sqlmodel
      sqlalchemy greenlet pydantic pydantic-core annotated-types typing-inspection tabulate
      tenacity throttler traitlets wrapt yte argparse-dataclass anyio h11 httpcore httpx)
for req in "${core[@]}"; do
  pip download -q "${plat[@]}" -d .whl "$req" || pip wheel -q --no-deps -w .whl "$req"
done
pip download -q "${plat[@]}" -d .whl2 statsmodels patsy formulaic interface-meta narwhals
# The sdist itself (pip download would run its setup.py, which needs CUDA).
url=https://files.pythonhosted.org/packages/6c/b1/b77625e3d11260d2bd6a4fc249a4be9a3da97ff848e2222e810c4f0e0211/flash_attn-2.8.3.post2.tar.gz
[ -f .whl/flash_attn-2.8.3.post2.tar.gz ] || curl -fsSL -o .whl/flash_attn-2.8.3.post2.tar.gz "$url"
echo "d0f9f0b08a986cdeadbffcf5ec8b3a8f514366c68ad1853d3ab061bc83cc340b  .whl/flash_attn-2.8.3.post2.tar.gz" | sha256sum -c -
du -sh .whl .whl2
