"""Line charts against a swept value: tokens/s, MFU, peak memory and tokens/J (and a serve sweep's
itl p50, ttft p99 and goodput) against seq (or whatever the points varied), one line per value of
the other varied keys (precision, attention, model ...), whiskers from the step-time spread
(b200lab/reports/spread.py) where a metric has one (rates; not latency percentiles).

The x axis is a numeric config value the points varied (``seq.len`` first; a swept group such as
``seq=1k,2k`` is drawn at its numeric field), else the first varied key as categories.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from b200lab.records.points import card, label, overrides, varied_keys
from b200lab.reports.spread import band

METRICS = [
    ("tokens_per_s", "tokens/s"),
    ("mfu", "MFU (fraction of the dense peak)"),
    ("peak_mem_allocated_gb", "peak memory allocated (GB)"),
    ("tokens_per_j", "tokens/J"),
    ("itl_ms_p50", "inter-token latency p50 (ms)"),
    ("ttft_ms_p99", "time to first token p99 (ms)"),
    ("goodput_fraction", "goodput (fraction of requests within the SLO)"),
]
PREFERRED_X = ("seq.len", "seq.batch", "model.n_experts", "workload.options.size_mb")


def config_value(record: dict, path: str) -> Any:
    node: Any = record.get("config") or {}
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _numeric(value: Any) -> bool:
    """A value a numeric axis can place (``qps=inf`` cannot: such a sweep is drawn as categories)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numeric_paths(records: list[dict], key: str) -> list[str]:
    """Numeric config values that vary with the override ``key``: the key itself, or the
    fields of the group it selects (``seq`` -> ``seq.len``, ``seq.batch``)."""
    first = config_value(records[0], key)
    paths = [f"{key}.{f}" for f in first] if isinstance(first, dict) else [key]
    return [
        p
        for p in paths
        if all(_numeric(config_value(r, p)) for r in records) and len({config_value(r, p) for r in records}) > 1
    ]


@dataclass
class Axis:
    x: str  # a config path (numeric) or an override key (categories)
    numeric: bool
    lines: list[str]  # override keys that tell the lines apart
    categories: list[str] = field(default_factory=list)


def choose_axis(records: list[dict], x: str | None = None) -> Axis | None:
    """The swept value to draw against, or None when the points varied nothing."""
    keys = varied_keys(records)
    if x is not None:
        owner = next((k for k in keys if x == k or x.startswith(k + ".")), None)
        if all(_numeric(config_value(r, x)) for r in records):
            return Axis(x, True, [k for k in keys if k != owner])
        return Axis(x, False, [k for k in keys if k != x], _categories(records, x))
    candidates = [(p, k) for k in keys for p in _numeric_paths(records, k)]
    if candidates:
        path, owner = min(
            candidates, key=lambda c: PREFERRED_X.index(c[0]) if c[0] in PREFERRED_X else len(PREFERRED_X)
        )
        return Axis(path, True, [k for k in keys if k != owner])
    if keys:
        return Axis(keys[0], False, keys[1:], _categories(records, keys[0]))
    return None


def _categories(records: list[dict], key: str) -> list[str]:
    seen: list[str] = []
    for r in records:
        value = overrides(r.get("point")).get(key, "-")
        if value not in seen:
            seen.append(value)
    return seen


@dataclass
class Line:
    label: str
    points: list[tuple[float, float, float, float, str]] = field(default_factory=list)  # x, value, low, high, run id
    missing: list[str] = field(default_factory=list)  # "x: status" of points with no value


def lines(records: list[dict], metric: str, axis: Axis) -> list[Line]:
    """One line per label of the other varied keys; a label that would put two points at one x
    (sweeps repeated with the same overrides) is split by card and git sha."""

    def x_of(r: dict) -> float:
        if axis.numeric:
            return float(config_value(r, axis.x))
        return float(axis.categories.index(overrides(r.get("point")).get(axis.x, "-")))

    def name(r: dict) -> str:
        return label(r, axis.lines) if axis.lines else card(r)

    xs_by_name: dict[str, list[float]] = {}
    for r in records:
        xs_by_name.setdefault(name(r), []).append(x_of(r))
    crowded = {n for n, xs in xs_by_name.items() if len(xs) != len(set(xs))}
    out: dict[str, Line] = {}
    for r in records:
        n = name(r)
        if n in crowded:
            n += f" [{card(r)} {(r.get('env') or {}).get('git_sha', '?')[:8]} {(r.get('sweep_id') or '')[:6]}]".replace(
                "  ", " "
            )
        line = out.setdefault(n, Line(n))
        value = (r.get("metrics") or {}).get(metric)
        if r.get("status") != "ok" or value is None:
            line.missing.append(f"{_x_text(axis, x_of(r))}: {r.get('status')}")
            continue
        low, high = band(r, metric) or (value, value)
        line.points.append(
            (x_of(r), float(value), float(low), float(high), (r.get("mlflow") or {}).get("run_id") or "")
        )
    for line in out.values():
        line.points.sort()
    return list(out.values())


def _x_text(axis: Axis, x: float) -> str:
    return f"{x:g}" if axis.numeric else axis.categories[int(x)]


def draw(records: list[dict], metric: str, title: str, axis: Axis, path: Path) -> Path | None:
    """One chart; None when no point has the metric."""
    drawn = lines(records, metric, axis)
    if not any(line.points for line in drawn):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for line in drawn:
        if not line.points:
            continue
        xs, ys, lows, highs, _ = zip(*line.points)
        ax.errorbar(
            xs,
            ys,
            yerr=[[max(y - lo, 0.0) for y, lo in zip(ys, lows)], [max(hi - y, 0.0) for y, hi in zip(ys, highs)]],
            marker="o",
            capsize=3,
            label=line.label + (f" (no value at {', '.join(line.missing)})" if line.missing else ""),
        )
    if axis.numeric:
        values = sorted({p[0] for line in drawn for p in line.points})
        ax.set_xticks(values, [f"{v:g}" for v in values])
        if len(values) > 2 and values[-1] / max(values[0], 1e-9) >= 8:
            ax.set_xscale("log", base=2)
            ax.set_xticks(values, [f"{v:g}" for v in values])
            ax.minorticks_off()
    else:
        ax.set_xticks(range(len(axis.categories)), axis.categories)
    ax.set_xlabel(axis.x)
    ax.set_ylabel(title)
    ys = [p[1] for line in drawn for p in line.points]
    if (
        min(ys) > 0 and max(ys) / min(ys) > 20
    ):  # a model-size ladder spans decades: a linear axis flattens the small end
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    cards = sorted({card(r) for r in records})
    spread = (
        "whiskers: step-time p10-p90"
        if any(band(r, metric) for r in records)
        else "no whiskers: this metric has no step-time band"
    )
    ax.set_title(
        f"{title} against {axis.x} on {', '.join(cards)}\n({spread}; every point is a run in the table)", fontsize=9
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def line_charts(records: list[dict], out_dir: Path, x: str | None = None) -> list[tuple[str, Path]]:
    """Every chart of METRICS the records have, as (title, path) pairs; none when nothing varied."""
    axis = choose_axis(records, x)
    if axis is None:
        return []
    drawn = []
    for metric, title in METRICS:
        path = draw(records, metric, title, axis, Path(out_dir) / f"{metric}_vs_{axis.x.replace('.', '_')}.png")
        if path is not None:
            drawn.append((title, path))
    return drawn
