"""The accuracy guard: each point's perplexity against the reference precision's, beside its speed.

A sweep whose config sets ``guard.reference`` (a precision name, e.g. ``fp32``) compares, when it
ends, every point that reports a ``perplexity`` with the reference point of the same sweep that
matches it in everything but the precision: the relative change ``ppl / ppl_ref - 1`` and the
speedup ``tokens_per_s / tokens_per_s_ref``. With ``guard.max_ppl_delta`` a point whose change
exceeds it fails the guard; the sweep then exits 1 and its parent run ends FAILED with the tag
``guard=failed``. The table goes to the console, ``guard.csv`` and the parent run.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class GuardRow:
    precision: str
    effective: str  # what ran (fp8 recipe, fallback, de-quantised GEMM...)
    perplexity: float | None
    ppl_delta: float | None  # relative to the reference; None for the reference itself or without a perplexity
    speedup: float | None
    tokens_per_s: float | None
    run_id: str | None
    status: str  # pass | fail | reference | no perplexity | no reference


@dataclass
class GuardReport:
    reference: str
    max_ppl_delta: float | None
    rows: list[GuardRow] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(r.status in ("fail", "no reference") for r in self.rows) or not any(
            r.status == "reference" for r in self.rows
        )


def settings(records: list[dict]) -> tuple[str, float | None] | None:
    """(reference, max_ppl_delta) when the sweep's config asks for a guard, else None."""
    for r in records:
        guard = (r.get("config") or {}).get("guard") or {}
        if guard.get("reference"):
            return guard["reference"], guard.get("max_ppl_delta")
    return None


def _key(record: dict) -> str:
    """What a point and its reference share: the config without the precision and the run's bookkeeping."""
    cfg = {k: v for k, v in (record.get("config") or {}).items() if k not in ("precision", "hydra", "run", "tracking")}
    return repr(sorted(cfg.items(), key=lambda kv: kv[0]))


def _ran(record: dict) -> str:
    eff = (record.get("effective") or {}).get("precision") or {}
    parts = [str(eff.get("compute_dtype") or eff.get("name"))]
    for key in ("recipe", "gemm", "ran"):
        if eff.get(key):
            parts.append(f"{key}={eff[key]}")
    return " ".join(parts)


def evaluate(records: list[dict], reference: str, max_ppl_delta: float | None) -> GuardReport:
    report = GuardReport(reference, max_ppl_delta)
    refs = {
        _key(r): r
        for r in records
        if r["config"]["precision"]["name"] == reference and r.get("metrics", {}).get("perplexity")
    }
    for r in records:
        m, name = r.get("metrics", {}), r["config"]["precision"]["name"]
        ppl, tps = m.get("perplexity"), m.get("tokens_per_s")
        ref = refs.get(_key(r))
        row = GuardRow(name, _ran(r), ppl, None, None, tps, (r.get("mlflow") or {}).get("run_id"), "")
        if ppl is None:
            row.status = "no perplexity"
        elif ref is r:
            row.status, row.speedup, row.ppl_delta = "reference", 1.0, 0.0
        elif ref is None:
            row.status = "no reference"
        else:
            row.ppl_delta = ppl / ref["metrics"]["perplexity"] - 1.0
            ref_tps = ref["metrics"].get("tokens_per_s")
            row.speedup = tps / ref_tps if tps and ref_tps else None
            row.status = "fail" if max_ppl_delta is not None and row.ppl_delta > max_ppl_delta else "pass"
        report.rows.append(row)
    return report


def table(report: GuardReport) -> str:
    limit = "none" if report.max_ppl_delta is None else f"{report.max_ppl_delta:+.2%}"
    lines = [
        f"accuracy guard: perplexity vs precision={report.reference}, limit {limit}",
        f"{'precision':<18} {'perplexity':>11} {'delta':>9} {'speedup':>8} {'tokens/s':>12}  {'status':<13} ran",
    ]
    for r in report.rows:
        ppl = "-" if r.perplexity is None else f"{r.perplexity:.4f}"
        delta = "-" if r.ppl_delta is None else f"{r.ppl_delta:+.3%}"
        speed = "-" if r.speedup is None else f"{r.speedup:.3f}x"
        tps = "-" if r.tokens_per_s is None else f"{r.tokens_per_s:,.0f}"
        lines.append(f"{r.precision:<18} {ppl:>11} {delta:>9} {speed:>8} {tps:>12}  {r.status:<13} {r.effective}")
    if not any(r.status == "reference" for r in report.rows):
        lines.append(
            f"no point ran precision={report.reference} with a perplexity: nothing to compare with (the guard fails)"
        )
    return "\n".join(lines)


def write_csv(report: GuardReport, path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["precision", "perplexity", "ppl_delta", "speedup", "tokens_per_s", "status", "ran", "run_id"])
        for r in report.rows:
            w.writerow(
                [r.precision, r.perplexity, r.ppl_delta, r.speedup, r.tokens_per_s, r.status, r.effective, r.run_id]
            )
    return path
