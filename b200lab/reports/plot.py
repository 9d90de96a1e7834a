"""A sweep's headline rate per point, as a bar chart a user can read at a glance.

The bar is the recorded value and the whisker its step-time band (b200lab/reports/spread.py: value x
p50 / p90 to value x p50 / p10). Failed points are drawn as empty rows labelled with their
status, so a missing bar is explained. Line charts against a swept value are b200lab/reports/charts.py.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from b200lab.records.points import card
from b200lab.reports.spread import band

# first one present in the ok rows is plotted unless a metric is named
RATES = [
    ("tokens_per_s", "tokens/s"),
    ("gemm_tflops", "GEMM TFLOP/s"),
    ("hbm_gbps", "HBM GB/s (read + write)"),
    ("allreduce_busbw_gbps", "all-reduce bus GB/s"),
    ("allgather_busbw_gbps", "all-gather bus GB/s"),
    ("reducescatter_busbw_gbps", "reduce-scatter bus GB/s"),
    ("tflops", "model TFLOP/s per GPU"),
]
LABELS = dict(RATES)


@dataclass
class Bar:
    label: str
    status: str
    value: float | None = None
    low: float | None = None
    high: float | None = None
    run_id: str | None = None


def readable(value: float) -> str:
    """A value as a reader writes it: three significant digits, thousands grouped, never in
    scientific notation (25,317, 12.3 and 0.000412, not 2.532e+04 or 4.12e-04)."""
    if not value or not math.isfinite(value):
        return f"{value:g}"
    magnitude = math.floor(math.log10(abs(value)))
    text = f"{value:,.{max(0, 2 - magnitude)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def headline(rows: list[dict]) -> str | None:
    present = {k for r in rows if r["status"] == "ok" for k in r.get("metrics", {})}
    return next((key for key, _ in RATES if key in present), None)


def bars(rows: list[dict], metric: str) -> list[Bar]:
    several_gpus = len({card(r) for r in rows}) > 1
    out = []
    for r in rows:
        run_id = r.get("mlflow", {}).get("run_id")
        value = r.get("metrics", {}).get(metric)
        label = (r.get("point") or "?") + (f" [{card(r)}]" if several_gpus else "")
        if r["status"] != "ok" or value is None:
            out.append(Bar(label, r["status"], run_id=run_id))
            continue
        low, high = band(r, metric) or (value, value)
        out.append(Bar(label, "ok", float(value), float(low), float(high), run_id))
    return out


def plot(rows: list[dict], path: Path, metric: str | None = None) -> list[Bar]:
    """Write the chart to ``path`` (PNG) and return what was drawn. Raises ValueError when no
    row has the metric."""
    metric = metric or headline(rows)
    if metric is None or not any(r["status"] == "ok" and metric in r.get("metrics", {}) for r in rows):
        known = sorted({k for r in rows for k, v in r.get("metrics", {}).items() if isinstance(v, (int, float))})
        raise ValueError(f"no ok result has metric {metric!r}; these do: {', '.join(known) or 'none'}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    drawn = bars(rows, metric)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(drawn) + 1.6))
    ys = np.arange(len(drawn))[::-1]
    for y, b in zip(ys, drawn):
        if b.value is None:
            ax.text(0, y, f"  {b.status}", va="center", color="firebrick")
            continue
        ax.barh(y, b.value, color="steelblue")
        ax.errorbar(b.value, y, xerr=[[b.value - b.low], [b.high - b.value]], color="black", capsize=3)
        ax.text(b.high, y, f"  {readable(b.value)}", va="center")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: readable(v)))
    ax.set_yticks(ys, [textwrap.fill(b.label, 60) for b in drawn], fontsize=8)
    ax.set_xlabel(f"{LABELS.get(metric, metric)}  (whisker: step-time p10-p90)")
    gpus = sorted({card(r) for r in rows})
    ax.set_title(f"{LABELS.get(metric, metric)} per point on {', '.join(gpus)}", fontsize=10)
    ax.margins(x=0.15)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return drawn
