"""Render the README's kernel table from one run's kernels CSV, so no kernel number is typed by hand.

    python benchmarks/kernel_table.py docs/reference/h200/steady/kernels.csv
    python benchmarks/kernel_table.py results/tables/kernels.csv --dtype bfloat16 --seq-lens 6400 25600

Prints Markdown: a caption line naming the CSV, the GPU, the dtype and how the times were
taken, then one row per shape and one column per backend. A cell is forward+backward
"direct / graph" ms (one call as training makes it, host dispatch included / the same
call replayed from a CUDA graph) when the CSV has graph times, else the direct time;
sweep rows add TFLOP/s (of the graph time where there is one). Accepts the per-backend
CSVs (results/kernels/<backend>.csv) and the aggregated table alike.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from attnbench.errors import UserError  # noqa: E402
from attnbench.io import read_csv  # noqa: E402

NEEDED = ("backend", "status", "reason", "gpu", "dtype", "kind", "phase", "B", "heads", "N",
          "head_dim", "fwdbwd_ms", "fwdbwd_flops")  # fmt: skip
SHAPE = ["kind", "phase", "B", "heads", "N", "head_dim"]


def _num(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _ms(value: float) -> str:
    """Three significant digits, no exponent: 0.283, 3.21, 42.9, 148."""
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.{max(0, 2 - math.floor(math.log10(value)))}f}"


def cell(row) -> str:
    """One backend at one shape: its time(s), or why there is none."""
    status = str(row["status"])
    if status != "ok":
        reason = str(row.get("reason") or "")
        if status == "skipped" and ("out of memory" in reason or "needs about" in reason):
            return "too big"
        return {"unavailable": "n/a"}.get(status, status)
    direct, graph = _num(row["fwdbwd_ms"]), _num(row.get("graph_fwdbwd_ms"))
    text = f"{_ms(direct)} ms" if graph is None else f"{_ms(direct)} / {_ms(graph)} ms"
    if row["kind"] == "sweep":
        rate = _num(row["fwdbwd_flops"]) / (graph or direct) / 1e9
        text += f" ({rate:.0f} TFLOP/s)" if rate >= 10 else f" ({rate:.2g} TFLOP/s)"
    return text


def render(path: str | Path, dtype: str | None = None, seq_lens: Sequence[int] = ()) -> str:
    """The caption line and the Markdown table of `path`'s kernels CSV."""
    frame = read_csv(path, columns=NEEDED, fix="pass the kernels CSV of a finished run")
    if frame.empty:
        raise UserError(f"{path} has no rows: pass the kernels CSV of a finished run")
    dtypes = list(dict.fromkeys(frame["dtype"]))
    dtype = dtype or ("float16" if "float16" in dtypes else dtypes[0])
    if dtype not in dtypes:
        raise UserError(f"{path} has no {dtype} rows: use --dtype with one of {', '.join(dtypes)}")
    frame = frame[frame["dtype"] == dtype]
    if seq_lens:
        frame = frame[(frame["kind"] != "sweep") | frame["N"].isin(list(seq_lens))]
    backends = list(dict.fromkeys(frame["backend"]))
    shapes = list(dict.fromkeys(tuple(r) for r in frame[SHAPE].itertuples(index=False)))
    cells = {(r["backend"], tuple(r[c] for c in SHAPE)): cell(r) for _, r in frame.iterrows()}
    lines = [
        "| shape (B', h, N, d) | " + " | ".join(backends) + " |",
        "|---|" + "---|" * len(backends),
    ]
    for shape in shapes:
        _, phase, B, heads, N, d = shape
        cols = [cells.get((b, shape), "–") for b in backends]
        lines.append(f"| ({B}, {heads}, {N}, {d}), {phase} | " + " | ".join(cols) + " |")
    return caption(path, frame, dtype) + "\n\n" + "\n".join(lines) + "\n"


def caption(path: str | Path, frame, dtype: str) -> str:
    """Where the numbers come from and how they were taken, in one line."""
    ok = frame[frame["status"] == "ok"]
    gpus = ", ".join(str(g) for g in dict.fromkeys(frame["gpu"].dropna())) or "unknown device"
    graphs = "graph_fwdbwd_ms" in ok and ok["graph_fwdbwd_ms"].notna().any()
    parts = [f"Kernel benchmark from `{path}`: {gpus}, {dtype}, forward+backward"]
    if graphs:
        parts.append(
            "direct / graph: one call as training makes it (host dispatch included) / "
            "the same call replayed from a CUDA graph (kernels only)"
        )
    how = []
    if "repetitions" in ok and ok["repetitions"].notna().any():
        how.append(f"median of {int(ok['repetitions'].max())} repetitions")
    if "repeats" in ok and ok["repeats"].notna().any():
        how.append(f"each the median of {int(ok['repeats'].max())} calls")
    spreads = [c for c in ("fwdbwd_ms_spread_pct", "graph_fwdbwd_ms_spread_pct") if c in ok]
    worst = max((ok[c].max() for c in spreads if ok[c].notna().any()), default=None)
    if worst is not None:
        how.append(f"repetitions spread at most {worst:.1f}%")
    if how:
        parts.append(", ".join(how))
    parts.append("FLOPs = 3.5 x 4·B·h·N²·d")
    if "matmul_peak_tflops" in ok and ok["matmul_peak_tflops"].notna().any():
        parts.append(
            f"bf16 matmul ceiling measured alongside: {ok['matmul_peak_tflops'].median():.0f} TFLOP/s"
        )
    return "; ".join(parts) + "."


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="a kernels CSV of one named run")
    parser.add_argument("--dtype", help="dtype to show (default: float16 when present)")
    parser.add_argument("--seq-lens", type=int, nargs="*", default=(), help="sweep rows to keep")
    args = parser.parse_args(argv)
    try:
        print(render(args.csv, args.dtype, args.seq_lens), end="")
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
