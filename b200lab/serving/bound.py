"""How far a server's decode steps are from the card: each step's bandwidth bound.

A decode step over rows at positions p_1..p_B must read every weight this rank holds once
(b200lab/serving/bandwidth.py: the embedding tables one row per sequence) and each row's keys and
values up to its position (the last ``window`` of them under a sliding window), and write the new
position's. At the copy bandwidth measured in the same job that takes ``bytes / copy_bandwidth``
seconds: the bound. The fraction reached is bound / the step's measured time (its wall time, the
tokens copied to the host included, as the engine times every token), per batch size and over all
timed steps, so a reader sees whether a server is at the memory limit or held by its host.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from b200lab.serving.bandwidth import kv_bytes, weight_bytes


def step_bytes(decoder, rows: int, positions: tuple[int, ...], cache_element_size: int, weights: dict) -> int:
    """Bytes one decode step must move; ``weights`` caches :func:`weight_bytes` by row count."""
    if rows not in weights:
        weights[rows] = weight_bytes(decoder.model, rows)
    d = decoder
    return weights[rows] + sum(
        kv_bytes(d.n_layers, 1, d.kv_heads, d.head_dim, cache_element_size, p, d.window) for p in positions
    )


def bound_table(
    decode_log: list[tuple[int, tuple[int, ...], float]], decoder, cache_element_size: int, copy_gbps: float
) -> list[dict]:
    """One row per batch size seen: steps, mean bytes, mean step and bound ms, the fraction reached
    (bound time / step time, summed over its steps)."""
    weights: dict[int, int] = {}
    by_rows: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for rows, positions, seconds in decode_log:
        by_rows[rows].append((step_bytes(decoder, rows, positions, cache_element_size, weights), seconds))
    table = []
    for rows in sorted(by_rows):
        steps = by_rows[rows]
        moved, spent = sum(b for b, _ in steps), sum(s for _, s in steps)
        bound = moved / (copy_gbps * 1e9)
        table.append(
            {
                "rows": rows,
                "steps": len(steps),
                "bytes_per_step": moved / len(steps),
                "step_ms": spent / len(steps) * 1e3,
                "bound_ms": bound / len(steps) * 1e3,
                "fraction_of_bound": bound / spent if spent > 0 else float("nan"),
            }
        )
    return table


def bound_metrics(table: list[dict]) -> dict:
    """``decode_bw_util``: all timed decode steps' bound over their time; ``decode_bw_util_max_batch``
    the same at the largest batch seen; the mean step and bound there."""
    if not table:
        return {}
    spent = sum(r["step_ms"] * r["steps"] for r in table)
    bound = sum(r["bound_ms"] * r["steps"] for r in table)
    full = table[-1]
    return {
        "decode_bw_util": bound / spent,
        "decode_bw_util_max_batch": full["fraction_of_bound"],
        "decode_step_ms_max_batch": full["step_ms"],
        "decode_bound_ms_max_batch": full["bound_ms"],
    }


def write_csv(table: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        for row in table:
            w.writerow({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()})
    return path
