#!/usr/bin/env bash
# Fetch, by package name, the wheels an offline GPU host (Python 3.12, torch preinstalled)
# needs to run this workflow through tools/gpu-host/dag.sh, into .gpu/whl:
# Ultralytics (headless OpenCV build) and its own packages, polars 0.20.31 (29 MB, meets
# Ultralytics' polars>=0.20; 2.x is 53 MB), Snakemake 9.27.1 with the versions it pins
# (sqlmodel<0.0.38, so SQLAlchemy 2.0; docutils<0.23) and jsonschema. No pulp (Snakemake's
# ILP scheduler: dag.sh runs --scheduler greedy). The flash-attn wheel is not fetched: rule
# build_flash_attn builds it (see ../shared/wheels/README.md for the prebuilt sm90 one).
# Prints the sizes: one device call carries 64 MiB at most.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
mkdir -p .gpu/whl
plat=(--python-version 3.12 --implementation cp --only-binary=:all: --no-deps
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64)
wheels=(ultralytics-opencv-headless==8.4.190 ultralytics-thop==2.2.3 ultralytics-platform==0.1.99
        polars==0.20.31 snakemake==9.27.1 jsonschema jsonschema-specifications referencing rpds-py
        conda-inject configargparse connection-pool docutils==0.22.4 dpath fastjsonschema gitdb
        gitpython humanfriendly immutables jupyter-core nbformat platformdirs smart-open smmap
        snakemake-interface-common snakemake-interface-executor-plugins
        snakemake-interface-logger-plugins snakemake-interface-report-plugins
        snakemake-interface-scheduler-plugins snakemake-interface-storage-plugins
        sqlmodel==0.0.37 sqlalchemy==2.0.49 greenlet pydantic pydantic-core annotated-types
        typing-inspection tenacity throttler traitlets yte argparse-dataclass)
for req in "${wheels[@]}"; do
  # A pure-Python package published only as an sdist is built into a wheel here.
  python3 -m pip download -q "${plat[@]}" -d .gpu/whl "$req" || python3 -m pip wheel -q --no-deps -w .gpu/whl "$req"
done
du -sh .gpu/whl
