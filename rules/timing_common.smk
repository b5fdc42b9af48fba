# The paired timing's plan and helper functions (attnbench.timing.plan); its rule is in
# timing.smk.

import sys

from attnbench.timing import plan as timing_plan
from attnbench.errors import ConfigError

try:
    TIMING = timing_plan.settings(config, TRAIN)
except ConfigError as _error:
    sys.exit(f"Config error: {_error}")
TIMING_DIR = timing_plan.target_dir(TIMING)
# The train settings the step uses (not epochs or seeds: changing those reruns nothing here).
TIMING_TRAIN = timing_plan.step_train(TRAIN)


wildcard_constraints:
    tmodel=grid.wildcard_pattern([TIMING["model_name"]]),
    timgsz=str(TIMING["imgsz"]),
    tbatch=str(TIMING["batch"]),


def timing_targets():
    """The paired timing's tables when it is enabled (rules all, timing, report), else none."""
    if not TIMING["enabled"]:
        return []
    return [
        f"{TIMING_DIR}/{name}" for name in ("blocks.csv", "summary.csv", "timing.json")
    ]


def timing_report_input():
    """The summary the report's speed statement comes from, when paired timing is on."""
    return [f"{TIMING_DIR}/summary.csv"] if TIMING["enabled"] else []
