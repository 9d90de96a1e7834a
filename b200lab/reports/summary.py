"""Human-readable results: one line per job, a table per sweep, a CSV beside it.

The sweep's table names each point by what varied (b200lab/records/points.py), shows what ran
(effective precision and attention kernel), drops the columns no point has and fits 120 columns.
"""

from __future__ import annotations

import csv
from pathlib import Path

from b200lab.records.points import attention_ran, card, label, precision_ran, varied_keys

WIDTH = 120
COLUMNS = [
    ("point", "point", "{}"),
    ("status", "status", "{}"),
    ("precision", "precision_ran", "{}"),
    ("attention", "attention_ran", "{}"),
    ("tokens/s", "tokens_per_s", "{:,.0f}"),
    ("step p50 ms", "step_ms_p50", "{:.2f}"),
    ("p90 ms", "step_ms_p90", "{:.2f}"),
    ("n", "n_steps", "{}"),
    ("TFLOP/s", "tflops", "{:.1f}"),
    ("MFU", "mfu", "{:.3f}"),
    ("GB/s", "gbps", "{:,.0f}"),
    ("peak mem GB", "peak_mem", "{:.2f}"),
    ("reserved GB", "peak_mem_reserved_gb", "{:.2f}"),
]


def _peak_mem(metrics: dict):
    return metrics.get("peak_mem_allocated_gb", metrics.get("peak_rss_gb"))


def _cell(results: dict, key: str, fmt: str) -> str:
    metrics = results.get("metrics", {})
    if key in ("point", "status"):
        value = results.get(key)
    elif key == "precision_ran":
        value = precision_ran(results)
    elif key == "attention_ran":
        value = attention_ran(results)
    elif key == "peak_mem":
        value = _peak_mem(metrics)
    elif key == "gbps":  # the bandwidth microbenchmarks' headline
        value = metrics.get("hbm_gbps", metrics.get("allreduce_busbw_gbps"))
    else:
        value = metrics.get(key)
    return "-" if value is None else fmt.format(value)


def one_line(results: dict) -> str:
    cells = [f"{name}={_cell(results, key, fmt)}" for name, key, fmt in COLUMNS[1:]]
    run = results.get("mlflow", {}).get("run_id") or "not in MLflow"
    line = f"b200lab: [{results.get('point')}] " + "  ".join(cells) + f"  run={run}"
    if results.get("error"):
        line += "\n  error: " + results["error"].splitlines()[0][:300]
    return line


def table(rows: list[dict]) -> str:
    keys = varied_keys(rows)
    cols = [c for c in COLUMNS if c[1] == "point" or any(_cell(r, c[1], c[2]) != "-" for r in rows)]
    grid = [[name for name, _, _ in cols]]
    grid += [[label(r, keys) if key == "point" else _cell(r, key, fmt) for _, key, fmt in cols] for r in rows]
    widths = [max(len(row[i]) for row in grid) for i in range(len(cols))]
    widths[0] = max(len("point"), min(widths[0], WIDTH - sum(widths[1:]) - 2 * (len(cols) - 1)))
    text_cols = {"point", "status", "precision_ran", "attention_ran"}

    def fit(cell: str, i: int) -> str:
        cell = cell if len(cell) <= widths[i] else cell[: widths[i] - 1] + "…"
        return cell.ljust(widths[i]) if cols[i][1] in text_cols else cell.rjust(widths[i])

    lines = ["  ".join(fit(cell, i) for i, cell in enumerate(row)).rstrip() for row in grid]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([name for name, _, _ in COLUMNS] + ["run_id", "gpu"])
        for r in rows:
            writer.writerow(
                [_cell(r, key, fmt).replace(",", "") for _, key, fmt in COLUMNS]
                + [r.get("mlflow", {}).get("run_id"), r.get("env", {}).get("gpu") or card(r)]
            )
    return path
