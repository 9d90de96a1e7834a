"""``b200lab gate``: compare a candidate sweep with a baseline (b200lab/reports/baseline.py) and fail on a
regression.

For each baseline point and gated metric the candidate regresses when even its best case is worse
than the baseline's worst case by more than the metric's threshold (``--threshold
tokens_per_s=0.03``). Best and worst cases come from each run's step-time band (p10 and p90 over
p50) for the numbers that come from step times (rates, step time), so noise that was measured is
not called a regression; memory and perplexity are compared as they are. A point the candidate
lacks or did not measure (oom, error) is a regression too.

A different GPU or GPU count between baseline and candidate is flagged and the gate exits 4
without a verdict (``--allow-hardware-change`` compares anyway); a different driver, CUDA,
torch, Transformer Engine or Python is flagged beside the verdict.

Exit codes: 0 no regression; 1 a regression (the offending rows are printed); 2 bad input;
4 hardware changed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from b200lab.reports.baseline import (
    ENV_KEYS,
    FROM_STEPS,
    GATED,
    HARDWARE_KEYS,
    BaselineError,
    entry,
    load,
)


@dataclass
class Row:
    key: str
    metric: str
    baseline: float | None
    candidate: float | None
    change: float | None  # relative, signed so that < 0 is worse
    allowed: float | None  # the largest worsening that is not a regression
    verdict: str  # ok | REGRESSION | improved | missing | not run (--subset) | not measured | new
    runs: str


def _allowed(metric: str, direction: str, threshold: float, base: dict, cand: dict) -> float:
    """The largest relative worsening of the recorded value that is not a regression: the
    candidate's best case against the baseline's worst, less the threshold."""
    noisy = metric in FROM_STEPS
    b10, b90 = (base.get("band") if noisy else None) or (1.0, 1.0)
    c10, c90 = (cand.get("band") if noisy else None) or (1.0, 1.0)
    if direction == "higher":  # a rate: its best case is value / (p10/p50), the baseline's worst value / (p90/p50)
        return 1.0 - (1.0 - threshold) * c10 / b90
    return (1.0 + threshold) * b90 / c10 - 1.0  # a time: best case value x p10/p50, worst value x p90/p50


def compare(baseline: dict, candidates: list[dict], thresholds: dict[str, float], subset: bool = False) -> list[Row]:
    """One row per baseline point and gated metric. ``subset``: the candidate ran some of the
    baseline's points on purpose (a nightly subset), so a point it lacks is "not run", not "missing"."""
    found = {c["key"]: c for c in candidates}
    rows: list[Row] = []
    for base in baseline["points"]:
        cand = found.get(base["key"])
        runs = f"{_short(base.get('run_id'))}->{_short((cand or {}).get('run_id'))}"
        if cand is None or cand.get("status") != "ok":
            verdict = ("not run" if subset else "missing") if cand is None else f"not measured ({cand.get('status')})"
            rows.append(Row(base["key"], "-", None, None, None, None, verdict, runs))
            continue
        for metric, value in base["metrics"].items():
            direction, default = GATED[metric]
            new = cand["metrics"].get(metric)
            if new is None:
                rows.append(Row(base["key"], metric, value, None, None, None, "missing", runs))
                continue
            change = (new / value - 1.0) if value else 0.0
            change = change if direction == "higher" else -change
            allowed = _allowed(metric, direction, thresholds.get(metric, default), base, cand)
            verdict = "REGRESSION" if change < -allowed else ("improved" if change > allowed else "ok")
            rows.append(Row(base["key"], metric, value, new, change, allowed, verdict, runs))
    known = {b["key"] for b in baseline["points"]}
    rows += [
        Row(c["key"], "-", None, None, None, None, "new", f"->{_short(c.get('run_id'))}")
        for c in candidates
        if c["key"] not in known
    ]
    return rows


def failed(rows: list[Row]) -> list[Row]:
    return [
        r for r in rows if r.verdict == "REGRESSION" or r.verdict == "missing" or r.verdict.startswith("not measured")
    ]


def env_changes(baseline: dict, candidates: list[dict]) -> tuple[list[str], list[str]]:
    """(hardware changes, software changes) as 'key: before -> after' lines."""

    def values(points: list[dict], key: str) -> str:
        return ", ".join(sorted({str((p.get("env") or {}).get(key)) for p in points}))

    hardware, software = [], []
    for key in ENV_KEYS:
        before, after = values(baseline["points"], key), values(candidates, key)
        if before != after:
            (hardware if key in HARDWARE_KEYS else software).append(f"{key}: {before} -> {after}")
    return hardware, software


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


WIDTH = 120  # terminal columns a table fits: points are named by what differs between them


def _short(run_id) -> str:
    """A run id as tables show it (8 characters, as MLflow's UI does); the baseline keeps it whole."""
    return str(run_id)[:8] if run_id else "-"


def point_labels(keys: list[str]) -> dict[str, str]:
    """Each point key (``a=1 b=2 ...``) shortened to the overrides that differ between the points."""
    parsed = {key: dict(part.split("=", 1) if "=" in part else (part, "") for part in key.split()) for key in keys}
    names = {name for items in parsed.values() for name in items}
    varied = [n for n in sorted(names) if len({items.get(n) for items in parsed.values()}) > 1]
    return {key: " ".join(f"{n}={items[n]}" for n in varied if n in items) or key for key, items in parsed.items()}


def table(rows: list[Row], every: list[Row] | None = None) -> str:
    """``rows`` as text; points are named by what differs among ``every`` row (default: ``rows``)."""
    labels = point_labels(sorted({r.key for r in (every or rows)}))
    grid = [["point", "metric", "baseline", "candidate", "change", "allowed", "verdict", "runs (base->cand)"]]
    for r in rows:
        grid.append(
            [
                labels[r.key],
                r.metric,
                _num(r.baseline),
                _num(r.candidate),
                "-" if r.change is None else f"{r.change:+.1%}",
                "-" if r.allowed is None else f"{-r.allowed:+.1%}",
                r.verdict,
                r.runs,
            ]
        )
    widths = [max(len(row[i]) for row in grid) for i in range(len(grid[0]))]
    widths[0] = max(len("point"), min(widths[0], WIDTH - sum(widths[1:]) - 2 * (len(widths) - 1)))
    fit = lambda c, w: (c if len(c) <= w else c[: w - 1] + "…").ljust(w)  # noqa: E731
    lines = ["  ".join(fit(c, w) for c, w in zip(row, widths)).rstrip() for row in grid]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    from b200lab.reports import selection

    parser = argparse.ArgumentParser(prog="b200lab gate", description=__doc__.split("\n\n")[0].replace("``", "`"))
    parser.add_argument("--baseline", type=Path, required=True, help="a file written by `b200lab baseline save`")
    selection.add_arguments(parser)
    parser.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="METRIC=FRACTION",
        help="allowed relative worsening beyond the measured spread (defaults: rates and step time 0.05, "
        "peak memory 0.02, perplexity 0.01)",
    )
    parser.add_argument(
        "--allow-hardware-change", action="store_true", help="compare even when the GPU or GPU count differs"
    )
    parser.add_argument(
        "--subset",
        action="store_true",
        help="the candidate ran some of the baseline's points: the others are listed as 'not run', not failed",
    )
    args = parser.parse_args(argv)
    try:
        thresholds = {}
        for item in args.threshold:
            metric, _, value = item.partition("=")
            if metric not in GATED:
                raise BaselineError(f"--threshold {item!r}: {metric!r} is not gated; gated metrics: {', '.join(GATED)}")
            try:
                thresholds[metric] = float(value)
            except ValueError:
                raise BaselineError(
                    f"--threshold {item!r}: {value!r} is not a number (a fraction, e.g. 0.05)"
                ) from None
        baseline = load(args.baseline)
        records, source, skipped = selection.select(args)
    except (BaselineError, selection.SelectionError) as exc:
        print(f"gate: {exc}", file=sys.stderr)
        return 2
    for problem in skipped:
        print(f"gate: skipped {problem}", file=sys.stderr)
    candidates = [entry(r) for r in records]
    hardware, software = env_changes(baseline, candidates)
    if args.subset and not {c["key"] for c in candidates} & {p["key"] for p in baseline["points"]}:
        print("gate: --subset, but no candidate point is a baseline point: nothing to compare", file=sys.stderr)
        return 2
    rows = compare(baseline, candidates, thresholds, args.subset)
    print(f"gate: baseline {args.baseline} ({len(baseline['points'])} points, {baseline.get('created')}) vs {source}")
    for line in software:
        print(f"gate: SOFTWARE CHANGED {line}")
    print(table(rows))
    if hardware and not args.allow_hardware_change:
        for line in hardware:
            print(f"gate: HARDWARE CHANGED {line}", file=sys.stderr)
        print("gate: not comparable, no verdict (--allow-hardware-change compares anyway)", file=sys.stderr)
        return 4
    bad = failed(rows)
    if bad:
        print(f"\ngate: FAILED, {len(bad)} offending row(s):", file=sys.stderr)
        print(table(bad, rows), file=sys.stderr)
        return 1
    not_run = sum(r.verdict == "not run" for r in rows)
    print(
        f"gate: passed ({sum(r.verdict == 'ok' for r in rows)} ok, {sum(r.verdict == 'improved' for r in rows)} "
        f"improved{f', {not_run} baseline point(s) not run' if not_run else ''})"
    )
    return 0
