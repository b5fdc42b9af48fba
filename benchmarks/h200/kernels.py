"""The kernel benchmark at YOLO12n's training shapes on a GPU host, outside Snakemake.

Runs attnbench.measure.kernelbench.run (what rule kernel_bench runs) for each backend with the
config's kernels settings (fp16 only: the dtype training sees under AMP) and writes all
rows to OUT/kernels.csv.

    python benchmarks/h200/kernels.py OUT [BACKEND ...]
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from attnbench import config as cfg  # noqa: E402
from attnbench import host  # noqa: E402
from attnbench.backends.shapes import attention_shapes  # noqa: E402
from attnbench.measure import kernelbench  # noqa: E402


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(argv[0])
    names = argv[1:] or ["eager", "sdpa_cudnn", "flash_attn"]
    config = cfg.load_file(REPO / "config.yaml")
    settings = {**config["kernels"], "dtypes": ["float16"]}
    train = config["train"]
    shapes = attention_shapes(train["model"], train["imgsz"], train["batch"])
    device = host.select_device(os.environ.get("BENCH_DEVICE", "0"))
    rows = []
    for name in names:
        rows += kernelbench.run(name, shapes, settings, device)
        kernelbench.write_csv(out / "kernels.csv", rows)  # after each backend: a cut run keeps it
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
