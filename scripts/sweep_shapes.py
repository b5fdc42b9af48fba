"""Rule sweep_shapes: the attention shapes of one swept (model, imgsz, batch)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from attnbench.env.scriptutil import rule_logging

smk = snakemake
with rule_logging(smk) as log:
    from attnbench.backends.shapes import attention_shapes
    from attnbench.intermediates import SHAPES
    from attnbench.io import write_json
    from attnbench.train.ultralytics_run import offline_ultralytics

    offline_ultralytics(Path("results/.ultralytics").resolve())
    shape = json.loads(smk.params.shape)
    doc = attention_shapes(shape["model"], int(shape["imgsz"]), int(shape["batch"]))
    write_json(smk.output[0], doc, schema=SHAPES)
    for call in doc["calls"]:
        log.info(
            "%s imgsz %d: %-5s B'=%d heads=%d N=%d d=%d, %d per forward",
            shape["model"], shape["imgsz"], call["phase"], call["B"], call["heads"], call["N"],
            call["head_dim"], call["calls_per_forward"],
        )  # fmt: skip
