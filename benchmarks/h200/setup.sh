# Sourced by the benchmarks/h200 scripts on the GPU host: install the carried wheels
# (.gpu/whl: Ultralytics, polars, jsonschema; .gpu/wheels: the flash-attn wheel that rule
# build_flash_attn built on an H200) into /tmp/site, put them and the repo on PYTHONPATH,
# and record the machine in $OUTDIR/environment.txt.
export PYTHONUNBUFFERED=1
OUTDIR=${OUT:-results/h200}
mkdir -p "$OUTDIR"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
  .gpu/whl/*.whl .gpu/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  nproc
  python3 -c "import torch, flash_attn, ultralytics; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'flash_attn', flash_attn.__version__, 'ultralytics', ultralytics.__version__)"
} 2>&1 | tee "$OUTDIR/environment.txt"
# The seeded crop-or-weed subset (benchmarks/subset_dataset.py --train 256 --valid 32).
validate_subset() {
  python3 -c 'from attnbench.data import validate; validate.summarize(".gpu/data/crop-or-weed", "results/data/crop-or-weed", name="crop-or-weed", source="local")'
}
