"""The kernel benchmark's log lines: one per problem as it finishes, and one per row as
written (medians over the repetitions, their spreads, the rates)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from attnbench.backends.shapes import AttentionProblem
from attnbench.measure.kerneltiming import finite


def _shape(dtype_name: str, p: AttentionProblem) -> str:
    return f"{p.B}x{p.heads}x{p.N}x{p.head_dim} {dtype_name} ({p.phase})"


def _ms(value: float | None) -> str:
    return f"{value:.4f} ms" if finite(value) else "n/a"


def log_progress(
    log: logging.Logger,
    index: int,
    total: int,
    rep: int,
    repetitions: int,
    start: float,
    dtype_name: str,
    p: AttentionProblem,
    result: Mapping[str, Any],
) -> None:
    """One line per problem as it finishes: where the job is, and what it measured."""
    elapsed = time.monotonic() - start
    where = f"shape {index}/{total}, repetition {rep}/{repetitions}, {elapsed:.0f} s"
    if result["status"] != "ok":
        log.info("[%s] %s %s: %s", where, _shape(dtype_name, p), result["status"], result["reason"])
        return
    log.info(
        "[%s] %s fwd %s, fwd+bwd %s; graph fwd %s, fwd+bwd %s%s",
        where, _shape(dtype_name, p), _ms(result["fwd_ms"]), _ms(result["fwdbwd_ms"]),
        _ms(result.get("graph_fwd_ms")), _ms(result.get("graph_fwdbwd_ms")),
        f" ({result['graph_note']})" if result.get("graph_note") else "",
    )  # fmt: skip


def log_row(log: logging.Logger, row: Mapping[str, Any]) -> None:
    """The row as written: medians over the repetitions, their spreads, the rates."""
    p = AttentionProblem(
        row["kind"], row["phase"], row["B"], row["heads"], row["N"], row["head_dim"]
    )
    shape = _shape(row["dtype"], p)
    if row["status"] != "ok":
        log.info("%-40s %s: %s", shape, row["status"], row["reason"])
        return

    def spread(column: str) -> str:
        value = row.get(f"{column}_spread_pct")
        return f" ±{value:.1f}%" if finite(value) else ""

    mem = f", {row['peak_mem_mb']:.0f} MiB" if row["peak_mem_mb"] is not None else ""
    graph = (
        f"; graph fwd+bwd {_ms(row['graph_fwdbwd_ms'])}{spread('graph_fwdbwd_ms')} "
        f"({row['graph_fwdbwd_tflops']:.2f} TFLOP/s)"
        if finite(row.get("graph_fwdbwd_ms"))
        else f"; no graph time ({row.get('graph_note')})"
    )
    log.info(
        "%-40s median of %d: fwd %s%s, fwd+bwd %s%s (%.2f TFLOP/s, %.2f%% of matmul)%s%s",
        shape, row["repetitions"], _ms(row["fwd_ms"]), spread("fwd_ms"), _ms(row["fwdbwd_ms"]),
        spread("fwdbwd_ms"), row["fwdbwd_tflops"], row["pct_of_matmul_peak"] or float("nan"),
        graph, mem,
    )  # fmt: skip
