"""Every intermediate file of the study that one rule writes and another reads, declared
once: the keys or columns its readers rely on, and whether it may be empty.

The writer checks its output against the declaration before writing it (`io.write_json`,
`io.write_csv`, `io.write_frame` with `schema=`), and every reader checks what it reads
(`io.read_json`, `io.read_csv` with `schema=`). A file that is missing, empty, cut short or
without a declared key or column stops the reading job with one line naming the file,
what is wrong and the `--forcerun` command that rebuilds it, instead of silently
shrinking a mean, a table or a figure.

Light on purpose (no pandas, no torch): training, the GPU rules and the aggregate all
import it.
"""

from __future__ import annotations

import dataclasses

from attnbench.io import Schema

#: Ultralytics' per-epoch accuracy columns of results.csv, by the metrics.json key that
#: holds the final value (attnbench.train.training writes one from the other).
ACCURACY_COLUMNS = {
    "precision": "metrics/precision(B)",
    "recall": "metrics/recall(B)",
    "mAP50": "metrics/mAP50(B)",
    "mAP50_95": "metrics/mAP50-95(B)",
}
#: The per-epoch losses the training curves draw (attnbench.report.plots.CURVES).
LOSS_COLUMNS = ("train/box_loss", "val/box_loss", "train/cls_loss", "val/cls_loss")
#: What every epoch row of a run that trained holds.
EPOCH_COLUMNS = ("epoch", *ACCURACY_COLUMNS.values(), *LOSS_COLUMNS)

# --------------------------------------------------------------------------- #
# Data and environment

#: results/data/{dataset}/summary.json (rule validate_dataset; read by the report).
DATASET_SUMMARY = Schema(
    keys=("name", "source", "policy", "problems", "dropped"), filled=("classes", "splits")
)
#: results/env/flash_attn.json (rule build_flash_attn; read by every job that may use it).
FLASH_ATTN_STATUS = Schema(keys=("status",))
#: results/env/backends.json (rule probe_backends; read by the report).
BACKENDS = Schema(keys=("environment",), filled=("backends",))
#: results/attention/shapes.json (rule attention_shapes; read by parity and kernel_bench),
#: and each of the sweep's shapes files (rule sweep_shapes; read by its parity and kernels).
SHAPES = Schema(keys=("model", "imgsz", "batch"), filled=("calls",))

# --------------------------------------------------------------------------- #
# Training

#: results/train/{arm}/seed{seed}/metrics.json (rule train; read by aggregate). A finished
#: run (status ok) holds its accuracy: without it the run would drop out of the means.
METRICS = Schema(
    keys=("backend", "seed", "status"), when=(("status", "ok", tuple(ACCURACY_COLUMNS)),)
)
#: results/train/{arm}/seed{seed}/results.csv (rule train, Ultralytics' per-epoch table;
#: read by aggregate). Empty for a run that never trained (unavailable, an early OOM).
RUN_RESULTS = Schema()
#: ... and for a run whose metrics.json says status ok: its epochs, with their metrics.
RUN_RESULTS_OK = Schema(columns=EPOCH_COLUMNS, rows=True, note="its metrics.json says status ok")


def run_results(status: object) -> Schema:
    """The schema of a run's results.csv, given its metrics.json status."""
    return RUN_RESULTS_OK if status == "ok" else RUN_RESULTS


# --------------------------------------------------------------------------- #
# Attention: one row per (shape, dtype), an unavailable one included (it says why).

#: results/parity/{backend}.csv (rule parity; read by aggregate).
PARITY = Schema(columns=("backend", "status", "dtype", "passed"), rows=True)
#: results/kernels/{backend}.csv (rule kernel_bench; read by aggregate).
KERNELS = Schema(columns=("backend", "status", "dtype"), rows=True)

# --------------------------------------------------------------------------- #
# The aggregate tables, results/tables/{name}.csv (rule aggregate; read by plots and report).

TABLES = {
    # One row per (arm, seed): every train job writes a metrics.json, failed runs included.
    "runs": Schema(columns=("backend", "seed", "status"), rows=True),
    "summary": Schema(columns=("backend", "metric", "n", "mean")),
    "comparisons": Schema(columns=("backend", "baseline", "metric", "n", "diff")),
    "drift": Schema(columns=("metric", "n")),
    "replica": Schema(columns=("baseline", "replica", "seed")),
    # No rows when no run trained; once one did, its epochs with their metrics.
    "epochs": Schema(columns=("backend", "seed", "epoch"), row_columns=EPOCH_COLUMNS),
    # Every backend's rows, gathered.
    "kernels": KERNELS,
    "parity": PARITY,
}
#: The epochs table when the runs table has a finished run: it must hold that run's epochs.
EPOCHS_TRAINED = dataclasses.replace(
    TABLES["epochs"], rows=True, note="runs.csv has a run with status ok"
)


def table(name: str, trained: bool = False) -> Schema | None:
    """The schema of results/tables/{name}.csv (None for a table declared elsewhere);
    `trained`: the runs table holds a finished run."""
    if name == "epochs" and trained:
        return EPOCHS_TRAINED
    return TABLES.get(name)
