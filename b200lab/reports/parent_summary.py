"""A sweep's parent run as its summary, written when the sweep ends:

- the parent named by what the sweep varied (``seq=1k,2k model=tiny``, the preset first), each
  child by what varied and what ran, no two alike (b200lab/records/points.py);
- the description (MLflow's note, ``mlflow.note.content``): the sweep's tables with each point
  linked to its run;
- headline metrics on the parent (``tokens_per_s_max``, ``tokens_per_s_min``, ...), so the chart
  view and the runs table have the sweep's range;
- the report (report.md, report.html, line charts) under the parent's ``report/`` artifacts.
"""

from __future__ import annotations

from pathlib import Path

from b200lab.records.points import shared_params, sweep_name, unique_names
from b200lab.reports import sweep_report

HEADLINE = (
    "tokens_per_s",
    "tflops",
    "mfu",
    "step_ms_p50",
    "peak_mem_allocated_gb",
    "tokens_per_j",
    "gemm_tflops",
    "hbm_gbps",
    "allreduce_busbw_gbps",
    "perplexity",
)
NOTE_LIMIT = 7900  # MLflow keeps tag values up to 8000 characters


def headline_metrics(records: list[dict]) -> dict[str, float]:
    """``{metric}_min`` and ``{metric}_max`` over the sweep's ok points, and how many were ok."""
    ok = [r for r in records if r.get("status") == "ok"]
    out: dict[str, float] = {"n_points_ok": float(len(ok))}
    for metric in HEADLINE:
        values = [
            float(r["metrics"][metric]) for r in ok if isinstance((r.get("metrics") or {}).get(metric), (int, float))
        ]
        if values:
            out[f"{metric}_min"], out[f"{metric}_max"] = min(values), max(values)
    return out


def note(records: list[dict], names: list[str], title: str, status: str) -> str:
    """The sweep's tables in Markdown, each point linked to its run; trimmed to what MLflow keeps."""

    def link(r: dict) -> str:
        m = r.get("mlflow") or {}
        return (
            f"[{m['run_id'][:8]}](#/experiments/{m.get('experiment_id')}/runs/{m['run_id']})"
            if m.get("run_id")
            else "not in MLflow"
        )

    head = (
        f"**{title}**: {len(records)} points, status {status}. Full report with line charts: artifacts "
        "`report/report.html`.\n\n"
    )
    parts = sweep_report.sections(records, link, names=names)
    text = head + sweep_report.markdown(parts)
    if len(text) > NOTE_LIMIT:  # the metrics first: drop the requested-vs-effective table (it is in the report)
        text = head + sweep_report.markdown(
            [p for p in parts if p[0] != "table" or "precision (asked → ran)" not in p[1].header]
        )
    if len(text) > NOTE_LIMIT:
        text = text[: NOTE_LIMIT - 60].rsplit("\n", 1)[0] + "\n\n(cut to fit MLflow's note; see report/report.md)"
    return text


def publish(
    tracker,
    parent_run_id: str,
    records: list[dict],
    sweep_dir: Path,
    preset: str | None,
    typed: str | None,
    status: str,
) -> list[Path]:
    """Names, note and headline metrics on the runs; returns the report folder to log on the parent."""
    names = unique_names(records)
    for r, name in zip(records, names):
        run_id = (r.get("mlflow") or {}).get("run_id")
        if run_id:
            tracker.rename(run_id, name)
    title = sweep_name(records, preset, typed)
    tracker.rename(parent_run_id, title)
    _log_shared_params(tracker, parent_run_id, records)
    tracker.log_metrics(parent_run_id, headline_metrics(records))
    tracker.client.set_tag(parent_run_id, "mlflow.note.content", note(records, names, title, status))
    report_dir = Path(sweep_dir) / "report"
    sweep_report.write(records, report_dir, title, f"sweep {sweep_dir} (parent run {parent_run_id})")
    return [report_dir]


def _log_shared_params(tracker, parent_run_id: str, records: list[dict]) -> None:
    """The settings every point shares, as the parent's parameters (a resumed sweep may share fewer:
    parameters the parent has already are left as they are, MLflow does not change one)."""
    from b200lab.records.tracking import flatten

    shared = shared_params([flatten(r["config"]) for r in records if r.get("config")])
    have = tracker.client.get_run(parent_run_id).data.params
    tracker.log_params(parent_run_id, {k: v for k, v in shared.items() if k not in have})
